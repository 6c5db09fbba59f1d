"""evaluate.critic: which critic judges compare (minicc/eval_critic.py), without loading models."""

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import trained_probe_dir
from test_probe import gated_probe, small_probe

from minicc import critic, eval_critic
from minicc.critic import CriticFiles
from minicc.errors import UserError
from minicc.params import CriticMethod, Params, load_params
from minicc.probe import probe_text
from minicc.trained_critic import LORA_DIR, write_trained_critic

ROOT = Path(__file__).resolve().parents[1]


def files(trained: Path) -> CriticFiles:
    constitution = ROOT / "constitution"
    return CriticFiles(
        constitution / "principles.yaml",
        constitution / "critic_instruct.yaml",
        constitution / "critic_base.yaml",
        trained,
    )


def params(critic: str, method: CriticMethod = "judge") -> Params:
    loaded = load_params(ROOT / "params.yaml")
    return replace(
        loaded,
        evaluate=replace(loaded.evaluate, critic=critic),
        critique=replace(loaded.critique, method=method, per_principle=False),
    )


def test_the_default_is_the_critic_that_selected() -> None:
    assert load_params(ROOT / "params.yaml").evaluate.critic == eval_critic.SAME


def test_same_reads_the_selecting_probe_with_models_critic(tmp_path: Path) -> None:
    # The params' design: all four heads, the harm head gated.
    trained = trained_probe_dir(tmp_path / "critic", gated_probe())
    chosen = eval_critic.eval_critic_setup(params("same", "probe"), files(trained))
    assert chosen.model == params("same").models.critic
    assert chosen.setup.probe == gated_probe()
    # With critique.method judge, `same` is the judge: no probe is read (none exists here).
    judge = eval_critic.eval_critic_setup(params("same"), files(tmp_path / "missing.json"))
    assert judge.setup.probe is None


def test_a_model_spec_is_a_zero_shot_judge_even_when_the_selector_is_a_probe(
    tmp_path: Path,
) -> None:
    chosen = eval_critic.eval_critic_setup(
        params("org/bigger-judge", "probe"), files(tmp_path / "never-read.json")
    )
    assert chosen.model == "org/bigger-judge"
    assert chosen.setup.probe is None


def test_a_probe_file_is_read_instead_of_the_selecting_one(tmp_path: Path) -> None:
    other = tmp_path / "other_probe.json"
    other.write_text(probe_text(replace(small_probe(), layer=7)), encoding="utf-8")
    chosen = eval_critic.eval_critic_setup(
        params(str(other), "judge"), files(tmp_path / "selecting.json")
    )
    assert chosen.setup.probe is not None and chosen.setup.probe.layer == 7
    assert chosen.model == params("same").models.critic


def test_a_trained_critic_directory_is_read_with_the_method_its_marker_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A probe directory while the selecting critic is the zero-shot judge.
    other = trained_probe_dir(tmp_path / "other", replace(gated_probe(), layer=7))
    chosen = eval_critic.eval_critic_setup(params(str(other)), files(tmp_path / "selecting"))
    assert chosen.setup.probe is not None and chosen.setup.probe.layer == 7
    assert chosen.model == params("same").models.critic and chosen.opens_as_critique
    # A LoRA critic directory while the selecting critic is a probe: its manifest is checked
    # against this constitution and heads, and the critique stage's path opens it.
    checked: list[Path] = []
    monkeypatch.setattr(critic, "check_manifest", lambda path, *rest: checked.append(path))
    lora = tmp_path / "lora_critic"
    write_trained_critic(lora, "lora", lambda staging: (staging / LORA_DIR).mkdir())
    chosen = eval_critic.eval_critic_setup(params(str(lora), "probe"), files(other))
    assert checked == [lora / LORA_DIR] and chosen.setup.lora == lora / LORA_DIR
    assert chosen.setup.probe is None
    opened: list[Any] = []
    monkeypatch.setattr(eval_critic, "open_critic", lambda p, setup: opened.append(setup))
    eval_critic.open_eval_critic(params(str(lora), "probe"), chosen)
    assert opened == [chosen.setup]


def test_a_directory_without_a_trained_critic_is_a_model_spec(tmp_path: Path) -> None:
    # A local model directory (no critic.json) stays a zero-shot judge's model.
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    chosen = eval_critic.eval_critic_setup(params(str(model_dir)), files(tmp_path / "none"))
    assert chosen.model == str(model_dir) and not chosen.opens_as_critique
    assert chosen.setup.probe is None and chosen.setup.lora is None


def test_a_missing_probe_file_is_one_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(UserError, match=rf"evaluate.critic: probe file {missing} not found"):
        eval_critic.eval_critic_setup(params(str(missing)), files(missing))


def test_open_loads_the_chosen_model_with_the_chosen_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[str] = []
    built: list[tuple[Any, ...]] = []
    monkeypatch.setattr(eval_critic, "load_model", lambda spec, models: loaded.append(spec))
    monkeypatch.setattr(eval_critic, "setup_critic", lambda *args: built.append(args))
    probe = tmp_path / "p.json"
    probe.write_text(probe_text(small_probe()), encoding="utf-8")
    for setting, model, has_probe in (
        ("org/judge", "org/judge", False),
        (str(probe), params("same").models.critic, True),
    ):
        chosen_params = params(setting)
        eval_critic.open_eval_critic(
            chosen_params, eval_critic.eval_critic_setup(chosen_params, files(probe))
        )
        assert loaded[-1] == model
        assert (built[-1][2].probe is not None) is has_probe
        assert built[-1][1] == chosen_params.critique


@pytest.mark.parametrize("bad", ["", " same", "models/x.json "])
def test_evaluate_critic_rejects_empty_or_padded_values(bad: str) -> None:
    loaded = load_params(ROOT / "params.yaml")
    with pytest.raises(ValueError, match="evaluate.critic must be"):
        replace(loaded.evaluate, critic=bad)


def test_open_same_is_the_critique_stages_own_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Any] = []
    monkeypatch.setattr(eval_critic, "open_critic", lambda p, setup: opened.append(setup))
    chosen_params = params("same")
    chosen = eval_critic.eval_critic_setup(chosen_params, files(tmp_path / "p.json"))
    eval_critic.open_eval_critic(chosen_params, chosen)
    assert opened == [chosen.setup]
