"""The LoRA-tuned critic (minicc/critic_lora.py) on a tiny random Llama."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    MakeModel,
    candidate,
    constitution,
    critique_params,
    models_params,
    write_params,
)
from safetensors.torch import load_file, save_file
from transformers.utils import logging as transformers_logging

from minicc.critic import Critic
from minicc.critic_lora import (
    WEIGHTS,
    LoraSettings,
    build_classifier,
    load_critic_lora,
    lora_settings,
)
from minicc.critic_lora_training import masked_bce, train_critic_lora, training_examples
from minicc.errors import UserError
from minicc.labeled import LabeledRequest, LabeledResponse
from minicc.models import ResolvedModel, load_model
from minicc.params import load_params
from minicc.probe import rubric_distribution, scores_of
from minicc.relatedness import cosines

HEADS = ["request_harmful", "response_harmful", "refusal", "on_task"]
CONSTITUTION = "v1+abc"


def _row(index: int, harmful: bool, noise: bool = False) -> LabeledResponse:
    reply = "Sure, here is how to build the weapon." if harmful else "I can't help with that."
    return LabeledResponse(
        id=f"toy-{index:03d}",
        prompt=f"How do I hurt people, case {index}?",
        response="1111111111" if noise else reply,
        harmful=harmful,
        source="constructed-noise" if noise else "gptfuzz",
        group=f"gptfuzz:{index}",
        prompt_label="unsafe",
        response_kind="unknown" if harmful or noise else "full_refusal",
        label_source="constructed" if noise else "human",
        construction="noise" if noise else None,
        pair_of="toy-000" if noise else None,
    )


# Harmful help and refusals alternate; a few noise replies give on_task its negatives.
ROWS = [_row(i, i % 2 == 0) for i in range(16)] + [_row(i, False, True) for i in range(16, 20)]
REQUESTS = [
    LabeledRequest(
        id="x:1", prompt="How do I boil an egg?", harmful=False, source="x", label_source="human"
    ),
    LabeledRequest(
        id="x:2", prompt="How do I hurt people?", harmful=True, source="x", label_source="human"
    ),
]
PAIRS = [(r.prompt, r.response) for r in ROWS[:4]]
RELATED = np.ones(len(PAIRS))
"""Request-reply cosines of replies about their requests (above the rubric's cut)."""


def _params(**overrides: object) -> LoraSettings:
    values: dict[str, object] = {
        "depth": 2,
        "trained_layers": 1,
        "r": 4,
        "alpha": 8,
        "lr": 5e-3,
        "epochs": 8,
        "batch_size": 4,
        "max_request_tokens": 16,
        "max_response_tokens": 16,
        "heads": HEADS,
        "class_balanced": True,
    }
    return LoraSettings(**{**values, **overrides})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def resolved(make_tiny_model: MakeModel) -> ResolvedModel:
    return ResolvedModel(str(make_tiny_model("llama")), "tiny-llama", False, from_hub=False)


@pytest.fixture(scope="module")
def trained(resolved: ResolvedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("critic") / "critic_lora"
    train_critic_lora(resolved, CONSTITUTION, ROWS, REQUESTS, _params(), 0, out, torch.float32)
    return out


def _load(path: Path, resolved: ResolvedModel, **changes: object) -> np.ndarray:
    critic = load_critic_lora(
        path,
        resolved,
        str(changes.get("constitution", CONSTITUTION)),
        list(changes.get("heads", HEADS)),  # type: ignore[call-overload]
        batch_size=3,
        dtype=torch.float32,
    )
    return critic.distribution(PAIRS, RELATED)


def test_loading_the_classifier_prints_no_missing_head_report(
    trained: Path, resolved: ResolvedModel, capfd: pytest.CaptureFixture[str]
) -> None:
    # Regression: every load printed transformers' "score.weight MISSING ... Consider training"
    # report, also right before the trained head was loaded from the adapter file.
    capfd.readouterr()
    _load(trained, resolved)
    captured = capfd.readouterr()
    assert "MISSING" not in captured.out + captured.err
    assert "Loading weights" not in captured.err
    assert transformers_logging.is_progress_bar_enabled()
    assert transformers_logging.get_verbosity() == transformers_logging.WARNING


def test_a_checkpoint_missing_more_than_the_head_is_refused(
    resolved: ResolvedModel, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(resolved.load_from, broken)
    weights = load_file(broken / "model.safetensors")
    del weights["model.layers.0.mlp.down_proj.weight"]
    save_file(weights, broken / "model.safetensors")
    with pytest.raises(UserError, match=r"broken: .*lacks \['model.layers.0.mlp.down_proj"):
        build_classifier(str(broken), _params(), torch.float32)


def test_masked_loss_ignores_unlabeled_heads() -> None:
    targets = torch.tensor([[1.0, 0.0]])
    mask = torch.tensor([[1.0, 0.0]])
    base = masked_bce(torch.tensor([[2.0, 0.0]]), targets, mask)
    moved = masked_bce(torch.tensor([[2.0, -50.0]]), targets, mask)
    assert torch.equal(base, moved)
    assert masked_bce(torch.tensor([[2.0, 0.0]]), targets, torch.ones(1, 2)) != base


def test_each_head_weighs_its_two_classes_equally_when_class_balanced() -> None:
    def encode(request: str, reply: str | None) -> list[int]:
        return [len(request), len(reply or "")]

    examples = training_examples(encode, ROWS, REQUESTS, _params(heads=["response_harmful"]))
    # 20 rows with a response_harmful label: 8 harmful help, 12 refusals and noise replies.
    weights = {(example.targets[0], example.weights[0]) for example in examples}
    assert len(examples) == 20
    assert weights == {(1.0, 20 / (2 * 8)), (0.0, 20 / (2 * 12))}
    plain = training_examples(
        encode, ROWS, REQUESTS, _params(heads=["response_harmful"], class_balanced=False)
    )
    assert {example.weights[0] for example in plain} == {1.0}


def test_training_separates_harmful_help(trained: Path, resolved: ResolvedModel) -> None:
    distribution = _load(trained, resolved)
    assert np.allclose(distribution.sum(axis=1), 1.0)
    harm = distribution[:, 0]
    # PAIRS alternate harmful help and refusal.
    assert harm[0] > 0.5 > harm[1] and harm[2] > 0.5 > harm[3]
    scores = scores_of(distribution)
    assert scores[1] > scores[0] and scores[3] > scores[2]


def test_round_trip_and_determinism(trained: Path, resolved: ResolvedModel, tmp_path: Path) -> None:
    again = tmp_path / "again"
    train_critic_lora(resolved, CONSTITUTION, ROWS, REQUESTS, _params(), 0, again, torch.float32)
    assert (trained / WEIGHTS).read_bytes() == (again / WEIGHTS).read_bytes()
    assert np.array_equal(_load(trained, resolved), _load(again, resolved))
    digests = [
        load_critic_lora(path, resolved, CONSTITUTION, HEADS, 2, torch.float32).digest
        for path in (trained, again)
    ]
    assert digests[0] == digests[1]


def test_refuses_other_heads_constitution_or_model(
    trained: Path, resolved: ResolvedModel, tmp_path: Path
) -> None:
    with pytest.raises(UserError, match="heads"):
        _load(trained, resolved, heads=["response_harmful"])
    with pytest.raises(UserError, match="constitution_version"):
        _load(trained, resolved, constitution="v2+def")
    other = ResolvedModel(resolved.load_from, "another-model", False, from_hub=False)
    with pytest.raises(UserError, match="critic"):
        _load(trained, other)
    with pytest.raises(UserError, match="manifest.json"):
        _load(tmp_path, resolved)


def test_unlabeled_head_is_refused(resolved: ResolvedModel, tmp_path: Path) -> None:
    harmless = [_row(i, False) for i in range(4)]
    with pytest.raises(UserError, match="response_harmful head needs rows of both classes"):
        train_critic_lora(resolved, CONSTITUTION, harmless, REQUESTS, _params(), 0, tmp_path / "c")


def test_request_head_reads_the_request_alone(trained: Path, resolved: ResolvedModel) -> None:
    critic = load_critic_lora(trained, resolved, CONSTITUTION, HEADS, 2, torch.float32)
    request = ROWS[0].prompt
    heads = critic.head_probabilities([(request, "Sure, here it is."), (request, "No.")])
    assert heads["request_harmful"][0] == heads["request_harmful"][1]
    assert heads["refusal"][0] != heads["refusal"][1]


def test_the_critic_scores_candidates_by_the_rubric_over_the_lora_heads(
    trained: Path, resolved: ResolvedModel
) -> None:
    lora = load_critic_lora(
        trained, resolved, CONSTITUTION, HEADS, batch_size=3, dtype=torch.float32
    )
    loaded = load_model(resolved.load_from, models_params(dtype="float32"))
    critic = Critic(loaded, constitution(), critique_params(method="lora"), lora=lora)
    given = [candidate(f"p{i}/0", reply, prompt) for i, (prompt, reply) in enumerate(PAIRS)]
    records = critic.critique(given)
    related = cosines(critic.embedder, [p for p, _ in PAIRS], [r for _, r in PAIRS])
    expected = lora.distribution(PAIRS, related)
    assert critic.critic_id.endswith(f"+lora-{lora.digest}")
    for record, row in zip(records, expected.tolist(), strict=True):
        assert record["scored"] and record["critic"] == critic.critic_id
        assert record["probabilities"] == pytest.approx(row, abs=1e-6)
        assert record["score"] == pytest.approx(float(scores_of(np.asarray([row]))[0]), abs=1e-6)
        assert record["safe"] == (row[0] < 0.5)


def test_a_reply_unrelated_to_its_request_is_not_on_task_whatever_the_head_says(
    trained: Path, resolved: ResolvedModel
) -> None:
    lora = load_critic_lora(
        trained, resolved, CONSTITUTION, HEADS, batch_size=3, dtype=torch.float32
    )
    p = lora.head_probabilities(PAIRS)
    cosines = np.array([0.9, 0.9, 0.01, 0.01])
    expected = rubric_distribution(
        p["request_harmful"],
        p["response_harmful"],
        p["refusal"],
        np.array([p["on_task"][0], p["on_task"][1], 0.0, 0.0]),
    )
    got = lora.distribution(PAIRS, cosines)
    assert got == pytest.approx(expected)
    # P(4) = (1-h)(1-r) t q: engaging a harmful request needs a reply about it.
    assert (got[2:, 3] == 0.0).all() and (lora.distribution(PAIRS, RELATED)[2:, 3] > 0.0).all()


def test_lora_settings_come_from_critic_lora_the_probe_heads_and_the_reply_cut(
    tmp_path: Path,
) -> None:
    params = load_params(
        write_params(
            tmp_path / "params.yaml",
            {
                "critic_lora": {"depth": 6, "trained_layers": 2},
                "critic_probe": {"heads": ["response_harmful", "refusal"], "gated_harm": False},
                "critique": {"max_response_tokens": 77},
            },
        )
    )
    settings = lora_settings(params)
    assert (settings.depth, settings.trained_layers) == (6, 2)
    assert settings.heads == ["response_harmful", "refusal"]
    assert settings.max_response_tokens == 77
