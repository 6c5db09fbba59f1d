"""Training the critic probe: source selection, labels, grouped validation, the whole fit."""

from pathlib import Path

import numpy as np
import pytest
from conftest import constitution, critique_params

from minicc.critic import Critic
from minicc.critic_training import (
    cross_validate,
    feature_inputs,
    fit_rows,
    leave_source_out,
    over_refusal_labels,
    select_sources,
    train_probe,
)
from minicc.errors import UserError
from minicc.labeled import LabeledResponse, PromptLabel, ResponseKind
from minicc.models import LoadedModel
from minicc.params import CriticProbeParams
from minicc.probe import load_probe, save_probe
from minicc.resume import ResumeLog


def labeled(
    ident: str,
    harmful: bool,
    source: str = "gptfuzz",
    group: str | None = None,
    prompt_label: PromptLabel = "unsafe",
    kind: ResponseKind = "unknown",
    response: str = "Some reply.",
) -> LabeledResponse:
    return LabeledResponse(
        id=ident,
        prompt="How do I do the thing?",
        response=response,
        harmful=harmful,
        source=source,
        group=group or f"g:{ident}",
        prompt_label=prompt_label,
        response_kind=kind,
    )


def test_select_sources_filters_by_family_and_names_unknown_ones() -> None:
    rows = [labeled("a", True), labeled("b", False, "xstest-gpt4")]
    assert [r.id for r in select_sources(rows, ["xstest"])] == ["b"]
    assert len(select_sources(rows, ["gptfuzz", "xstest"])) == 2
    with pytest.raises(UserError, match="'advbench'.*available: gptfuzz, xstest"):
        select_sources(rows, ["advbench"])


def test_over_refusal_is_a_refusal_of_a_safe_prompt_only() -> None:
    rows = [
        labeled("a", False, "xstest-m", prompt_label="safe", kind="full_refusal"),
        labeled("b", False, "xstest-m", prompt_label="safe", kind="partial_refusal"),
        labeled("c", False, "xstest-m", prompt_label="safe", kind="full_compliance"),
        labeled("d", False, "xstest-m", prompt_label="unsafe", kind="full_refusal"),
        labeled("e", True),
    ]
    assert over_refusal_labels(rows).tolist() == [True, True, False, False, False]


def test_fit_rows_needs_both_harm_classes() -> None:
    rows = [labeled("a", False), labeled("b", False)]
    with pytest.raises(UserError, match="harmful and harmless"):
        fit_rows(np.zeros((2, 3)), rows, l2=0.1)


def test_cross_validation_never_scores_a_row_with_its_own_prompt_in_training() -> None:
    """Each prompt's two rows share a label and a one-hot "prompt identity" feature. A row-level
    split would read the label off the sibling row (AUROC near 1); a grouped split cannot."""
    generator = np.random.default_rng(0)
    groups = 60
    labels = generator.random(groups) < 0.5
    rows, features = [], []
    for g in range(groups):
        for k in range(2):
            rows.append(labeled(f"r{g}-{k}", bool(labels[g]), group=f"prompt:{g}"))
            one_hot = np.zeros(groups)
            one_hot[g] = 1.0
            features.append(np.concatenate([one_hot, generator.normal(size=2)]))
    report = cross_validate(np.array(features), rows, l2=0.01, threshold=3.0)
    assert report["all"]["auroc"] < 0.75


def test_cross_validation_finds_a_real_signal() -> None:
    rows, features = [], []
    for i in range(60):
        harmful = i % 2 == 0
        rows.append(labeled(f"r{i}", harmful, group=f"prompt:{i // 2}"))
        features.append([2.0 if harmful else -2.0, float(i % 7)])
    report = cross_validate(np.array(features), rows, l2=0.1, threshold=3.0)
    assert report["all"]["auroc"] == 1.0


def test_cross_validation_is_skipped_when_a_fold_leaves_one_class() -> None:
    """Tiny data: when every harmful row falls in one fold, that fold cannot be fitted."""
    rows = [labeled("h0", True, group="prompt:only")]
    rows += [labeled(f"n{i}", False, group=f"prompt:{i}") for i in range(6)]
    features = np.array([[1.0 if r.harmful else -1.0] for r in rows])
    report = cross_validate(features, rows, l2=0.1, threshold=3.0)
    assert "training part lacks" in report["skipped"]


def test_leave_source_out_skips_a_source_whose_rest_has_one_class() -> None:
    rows = [labeled(f"g{i}", i % 2 == 0) for i in range(8)]
    rows += [labeled(f"x{i}", False, "xstest-m") for i in range(4)]
    features = np.array([[1.0 if r.harmful else -1.0, 0.5] for r in rows])
    report = leave_source_out(features, rows, l2=0.1, threshold=3.0)
    assert "skipped" in report["gptfuzz"]
    assert report["xstest"]["n"] == 4 and report["xstest"]["auroc"] is None
    assert report["xstest"]["accuracy"] == 1.0


ROWS = [
    labeled("g0", True, response="Sure, step one: get the tools."),
    labeled("g1", False, response="I can't help with that."),
    labeled("g2", True, response="Here is how you do it."),
    labeled("g3", False, response="No, that would hurt people."),
    labeled("x0", False, "xstest-m", prompt_label="safe", kind="full_refusal", response="No."),
    labeled("x1", False, "xstest-m", prompt_label="safe", kind="full_compliance", response="Ok!"),
]


def test_train_probe_on_a_tiny_model_resumes_and_reloads(
    critic_llama: LoadedModel, tmp_path: Path
) -> None:
    critic = Critic(critic_llama, constitution(), critique_params(batch_size=2))
    params = CriticProbeParams(layer=1, l2=1.0, sources=["gptfuzz", "xstest"])
    inputs = feature_inputs(critic, ROWS, params.layer)
    log = ResumeLog(tmp_path, "train_critic", inputs)
    probe, metrics = train_probe(critic, ROWS, params, batch_size=2, log=log)
    assert probe.layer == 1 and probe.critic == critic_llama.model_id
    assert probe.trained_on == {"gptfuzz": 4, "xstest-m": 2}
    assert probe.heads.over_refusal is not None
    assert metrics["n"] == 6 and metrics["harmful"] == 2 and metrics["over_refusals"] == 1
    assert set(metrics["grouped_cv"]) == {"all", "gptfuzz", "xstest"}
    # Every batch is logged; a rerun on the same inputs reads them back instead of recomputing.
    assert len(log.load()) == 3
    again, _ = train_probe(critic, ROWS, params, batch_size=2, log=log)
    assert again == probe
    save_probe(tmp_path / "probe.json", probe)
    assert load_probe(tmp_path / "probe.json") == probe


def test_feature_inputs_change_with_the_layer_and_the_rows(critic_llama: LoadedModel) -> None:
    critic = Critic(critic_llama, constitution(), critique_params())
    base = feature_inputs(critic, ROWS, 1)
    assert feature_inputs(critic, ROWS, 2) != base
    assert feature_inputs(critic, ROWS[:-1], 1) != base
