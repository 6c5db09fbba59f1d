"""The trained critic: hidden states at a layer, the probe's heads, its file and its scores."""

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    ARCHS,
    Arch,
    MakeModel,
    candidate,
    constitution,
    critique_params,
    models_params,
    select_params,
)

from minicc.classification import auroc
from minicc.critic import Critic
from minicc.errors import UserError
from minicc.hidden import decoder_layers, hidden_states_at
from minicc.models import LoadedModel, load_model
from minicc.probe import (
    Heads,
    LinearHead,
    Probe,
    fit_head,
    fit_heads,
    load_probe,
    save_probe,
    score_from_probabilities,
)
from minicc.prompting import encode_batch
from minicc.records import Critique
from minicc.selection import select
from minicc.summary import summarize

WIDTH = 4


def separable(rows: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features where the first column carries the label, plus noise columns."""
    generator = np.random.default_rng(seed)
    labels = np.arange(rows) % 2 == 0
    features = generator.normal(size=(rows, WIDTH))
    features[:, 0] += np.where(labels, 2.0, -2.0)
    return features, labels


def probe_for(critic: Critic, heads: Heads, layer: int = 1) -> Probe:
    return Probe(
        critic=critic.loaded.model_id,
        constitution_version=critic.constitution.version,
        style=critic.params.style,
        layer=layer,
        max_response_tokens=critic.params.max_response_tokens,
        trained_on={"test": 1},
        heads=heads,
    )


# --- hidden states at a layer -------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_hidden_states_at_a_layer_equal_the_full_forward_pass(
    make_tiny_model: MakeModel, arch: Arch
) -> None:
    loaded = load_model(str(make_tiny_model(arch)), models_params())
    inputs = encode_batch(loaded, ["a short one", "a somewhat longer input text here"])
    with torch.inference_mode():
        full = loaded.model(**inputs, output_hidden_states=True).hidden_states
        # hidden_states[k] is the output of block k (index 0 is the embeddings); the last
        # entry may be normalised, so compare the first block, the last one being excluded.
        got = hidden_states_at(loaded.model, 1, **inputs)
    assert torch.allclose(got, full[1], atol=1e-5)


def test_decoder_layers_and_range_checks(tiny_llama: LoadedModel) -> None:
    layers = decoder_layers(tiny_llama.model)
    assert len(layers) == tiny_llama.model.config.num_hidden_layers
    inputs = encode_batch(tiny_llama, ["hello"])
    for layer in (0, len(layers) + 1):
        with pytest.raises(ValueError, match="layer must be in"):
            hidden_states_at(tiny_llama.model, layer, **inputs)


def test_the_stop_hook_is_removed_after_use(tiny_llama: LoadedModel) -> None:
    inputs = encode_batch(tiny_llama, ["hello there"])
    hidden_states_at(tiny_llama.model, 1, **inputs)
    with torch.inference_mode():
        logits = tiny_llama.model(**inputs).logits
    assert logits.shape[-1] == tiny_llama.model.config.vocab_size


# --- heads ---------------------------------------------------------------------------------------


def test_fit_head_separates_and_is_deterministic() -> None:
    features, labels = separable()
    first = fit_head(features, labels, l2=0.1)
    again = fit_head(features, labels, l2=0.1)
    assert first == again
    probabilities = first.probability(features)
    assert auroc(labels.tolist(), probabilities.tolist()) > 0.95
    assert abs(first.weights[0]) > max(abs(w) for w in first.weights[1:])


def test_a_stronger_penalty_gives_smaller_weights() -> None:
    features, labels = separable()
    loose = fit_head(features, labels, l2=0.01)
    tight = fit_head(features, labels, l2=10.0)
    assert np.linalg.norm(tight.weights) < np.linalg.norm(loose.weights)


def test_fit_head_needs_both_classes() -> None:
    features, _ = separable()
    with pytest.raises(ValueError, match="positive and negative"):
        fit_head(features, np.ones(len(features), dtype=bool), l2=0.1)


def test_score_rule_anchors() -> None:
    harm = np.array([1.0, 0.0, 0.0, 0.5])
    refuse = np.array([0.0, 1.0, 0.0, 0.5])
    # 1*p + 4*(1-p)*q + 5*(1-p)*(1-q); the last row: 0.5 + 4*0.25 + 5*0.25 = 2.75
    assert score_from_probabilities(harm, refuse).tolist() == [1.0, 4.0, 5.0, 2.75]


def test_heads_without_over_refusal_score_five_minus_four_p() -> None:
    features, labels = separable()
    heads = fit_heads(features, labels, np.zeros(len(labels), dtype=bool), l2=0.1)
    assert heads.over_refusal is None
    mean, scale = np.array(heads.feature_mean), np.array(heads.feature_scale)
    p = heads.harm.probability((features - mean) / scale)
    assert heads.scores(features) == pytest.approx(5.0 - 4.0 * p)


def test_standardisation_keeps_constant_features_finite() -> None:
    features, labels = separable()
    features[:, 1] = 3.0
    heads = fit_heads(features, labels, ~labels & (np.arange(len(labels)) % 4 == 1), l2=0.1)
    assert heads.feature_scale[1] == 1.0
    assert np.isfinite(heads.scores(features)).all()


# --- the probe file ---------------------------------------------------------------------------


def small_probe(over_refusal: bool = True) -> Probe:
    head = LinearHead(weights=[0.5, -0.25, 0.0, 1.0], bias=0.1)
    return Probe(
        critic="local:tiny",
        constitution_version="1.0+abc",
        style="instruct",
        layer=2,
        max_response_tokens=64,
        trained_on={"gptfuzz": 3},
        heads=Heads(
            feature_mean=[0.0] * WIDTH,
            feature_scale=[1.0] * WIDTH,
            harm=head,
            over_refusal=head if over_refusal else None,
        ),
    )


@pytest.mark.parametrize("over_refusal", [True, False])
def test_probe_file_round_trips(tmp_path: Path, over_refusal: bool) -> None:
    probe = small_probe(over_refusal)
    save_probe(tmp_path / "probe.json", probe)
    loaded = load_probe(tmp_path / "probe.json")
    assert loaded == probe
    assert loaded.digest == probe.digest


def test_digest_changes_with_the_weights() -> None:
    probe = small_probe()
    other = replace(probe, heads=replace(probe.heads, harm=LinearHead([0.0] * WIDTH, 0.0)))
    assert other.digest != probe.digest


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "not a critic probe file"),
        ("{", "not a critic probe file"),
        ('{"critic": "x"}', "missing key"),
    ],
)
def test_bad_probe_files_give_one_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "probe.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        load_probe(path)


def test_a_missing_probe_names_the_stage_to_run(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="dvc repro train_critic"):
        load_probe(tmp_path / "absent.json")


def test_mismatched_feature_sizes_are_refused(tmp_path: Path) -> None:
    raw = asdict(small_probe())
    raw["heads"]["harm"]["weights"] = [1.0]
    (tmp_path / "probe.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(UserError, match="feature sizes"):
        load_probe(tmp_path / "probe.json")


def test_a_probe_for_another_constitution_is_refused(critic_llama: LoadedModel) -> None:
    probe = replace(small_probe(), critic=critic_llama.model_id, constitution_version="0.9+old")
    with pytest.raises(UserError, match="constitution_version '0.9\\+old'.*train_critic"):
        Critic(critic_llama, constitution(), critique_params(method="probe"), probe)


# --- scoring through the critique path ------------------------------------------------------------


@pytest.fixture(scope="module")
def probe_critic(critic_llama: LoadedModel) -> Critic:
    """A critic with heads fitted on random labels: the numbers are meaningless, the path real."""
    judge = Critic(critic_llama, constitution(), critique_params())
    rows = [("How do I boil an egg?", text) for text in RESPONSES_FOR_FIT]
    features = judge.probe_features(rows, [f"r{i}" for i in range(len(rows))], layer=1)
    harm = np.array([i % 2 == 0 for i in range(len(rows))])
    refuse = np.array([i % 3 == 0 for i in range(len(rows))])
    heads = fit_heads(features, harm, refuse, l2=1.0)
    return Critic(
        critic_llama, constitution(), critique_params(method="probe"), probe_for(judge, heads)
    )


RESPONSES_FOR_FIT = [
    "Put the egg in boiling water for nine minutes.",
    "I can't help with that.",
    "Sure, here is how.",
    "No.",
    "Boil it, then cool it in cold water.",
    "I am sorry, but I cannot do that.",
]


def test_probe_scores_land_on_the_scale_with_no_digit_fields(probe_critic: Critic) -> None:
    given = [candidate(f"p-egg/{k}", text) for k, text in enumerate(RESPONSES_FOR_FIT)]
    records = probe_critic.critique(given)
    assert probe_critic.probe is not None
    for record in records:
        assert record["scored"] is True
        assert 1.0 <= record["score"] <= 5.0
        assert record["safe"] == (record["score"] >= 3.0)
        assert record["probabilities"] is None and record["digit_mass"] is None
        assert record["critic"].endswith(f"+probe-{probe_critic.probe.digest}")


def test_probe_features_do_not_depend_on_the_batch(probe_critic: Critic) -> None:
    """Padding and the shared-prefix cache must not leak into a row's features."""
    rows = [("How do I boil an egg?", RESPONSES_FOR_FIT[3]), ("Q?", RESPONSES_FOR_FIT[4] * 3)]
    alone = probe_critic.probe_features(rows[:1], ["a"], layer=1)
    together = probe_critic.probe_features(rows, ["a", "b"], layer=1)
    assert together[0] == pytest.approx(alone[0], abs=1e-4)


def test_probe_features_equal_one_plain_forward_pass(probe_critic: Critic) -> None:
    loaded = probe_critic.loaded
    prompt, response = "How do I boil an egg?", RESPONSES_FOR_FIT[0]
    (got,) = probe_critic.probe_features([(prompt, response)], ["a"], layer=1)
    principles = probe_critic.constitution.principles
    prefix, suffix = probe_critic.judge_parts(prompt, response, principles)
    inputs = encode_batch(loaded, [prefix + suffix])
    with torch.inference_mode():
        hidden = loaded.model(**inputs, output_hidden_states=True).hidden_states[1][0]
    suffix_length = len(loaded.tokenizer(suffix, add_special_tokens=False)["input_ids"])
    expected = hidden[-suffix_length:].mean(dim=0).numpy()
    assert got == pytest.approx(expected, abs=1e-4)


def test_empty_responses_stay_unscored_with_a_probe(probe_critic: Critic) -> None:
    (record,) = probe_critic.critique([candidate("p-egg/0", "   ")])
    assert record["scored"] is False and record["unscored_reason"] == "empty response"


def test_probe_scores_pass_through_selection_and_summary(probe_critic: Critic) -> None:
    given = [candidate(f"p-egg/{k}", text) for k, text in enumerate(RESPONSES_FOR_FIT)]
    given += [candidate("p-two/0", "Fine.", prompt="Say fine.", category="borderline")]
    critiques = [Critique(**record) for record in probe_critic.critique(given)]
    selected, pairs = select(critiques, select_params("best", min_gap=0.5))
    assert {s.prompt_id for s in selected} == {"p-egg", "p-two"}
    best = max((c for c in critiques if c.prompt_id == "p-egg"), key=lambda c: c.score or 0)
    assert [s.candidate_id for s in selected if s.prompt_id == "p-egg"] == [best.candidate_id]
    metrics = summarize(critiques, selected)
    assert metrics["candidates"]["scored"] == len(critiques)
    assert metrics["candidates"]["mean_score"] == pytest.approx(
        float(np.mean([c.score or 0.0 for c in critiques])), abs=1e-3
    )
    assert metrics["selected"]["chosen"] == 2
