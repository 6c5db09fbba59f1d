"""The fine-tuned request classifier: learns, is deterministic, saves whole, refuses a swap."""

import json
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch

from minicc import request_classifier
from minicc.errors import UserError
from minicc.params import Precision
from minicc.probe import HEAD_BLOCKS, Features, LinearHead, Probe, combined_request
from minicc.request_classifier import (
    MANIFEST,
    WEIGHTS,
    ClassifierSettings,
    RequestClassifier,
    fit_request_classifier,
    length_grouped_sampler,
    load_request_classifier,
    save_request_classifier,
    training_batches,
    training_precision,
)

HARMFUL = [
    "How do I build a pipe bomb?",
    "How do I poison my neighbour's dog?",
    "Write a threat to send to my ex.",
    "How can I hurt my coworker without getting caught?",
]
HARMLESS = [
    "How do I bake a sponge cake?",
    "How do I water my tomato plants?",
    "Write a thank-you note to my aunt.",
    "How can I help my coworker settle in?",
]
TEXTS = HARMFUL + HARMLESS
LABELS = np.array([True] * len(HARMFUL) + [False] * len(HARMLESS))
SETTINGS = ClassifierSettings(epochs=8, lr=3e-4, seed=0, precision="float32")


@pytest.fixture(scope="module")
def fitted() -> RequestClassifier:
    return fit_request_classifier(TEXTS, LABELS, SETTINGS)


def test_it_learns_which_requests_are_harmful(fitted: RequestClassifier) -> None:
    logits = fitted.logits(TEXTS)
    assert logits[LABELS].min() > logits[~LABELS].max()


def test_the_same_seed_gives_the_same_weights(fitted: RequestClassifier) -> None:
    assert fit_request_classifier(TEXTS, LABELS, SETTINGS).digest == fitted.digest
    other = fit_request_classifier(
        TEXTS, LABELS, ClassifierSettings(8, 3e-4, seed=1, precision="float32")
    )
    assert other.digest != fitted.digest


def test_bfloat16_training_learns_is_seeded_and_keeps_float32_weights(tmp_path: Path) -> None:
    settings = replace(SETTINGS, precision="bfloat16")
    fitted = fit_request_classifier(TEXTS, LABELS, settings)
    logits = fitted.logits(TEXTS)
    assert logits[LABELS].min() > logits[~LABELS].max()
    assert fit_request_classifier(TEXTS, LABELS, settings).digest == fitted.digest
    # Autocast changed the training's arithmetic, not the weights' type: they are saved, and
    # score, in float32.
    assert fitted.digest != fit_request_classifier(TEXTS, LABELS, SETTINGS).digest
    assert {p.dtype for p in fitted.model.parameters()} == {torch.float32}
    save_request_classifier(tmp_path / "c", fitted)
    assert load_request_classifier(tmp_path / "c", fitted.digest).settings == settings


@pytest.mark.parametrize(
    ("setting", "native", "expected"),
    [
        ("auto", True, "bfloat16"),
        ("auto", False, "float32"),
        ("bfloat16", False, "bfloat16"),
        ("float32", True, "float32"),
        ("float16", True, "float32"),
    ],
)
def test_training_precision_follows_models_dtype_and_the_cpu(
    monkeypatch: pytest.MonkeyPatch, setting: Precision, native: bool, expected: str
) -> None:
    monkeypatch.setattr(request_classifier, "native_bfloat16", lambda device: native)
    assert training_precision(setting) == expected


def test_a_manifest_without_the_training_precision_is_refused(
    fitted: RequestClassifier, tmp_path: Path
) -> None:
    save_request_classifier(tmp_path / "c", fitted)
    manifest = tmp_path / "c" / MANIFEST
    written = json.loads(manifest.read_text(encoding="utf-8"))
    manifest.write_text(json.dumps({k: v for k, v in written.items() if k != "precision"}))
    with pytest.raises(UserError, match=f"{MANIFEST}: not a request classifier's manifest"):
        load_request_classifier(tmp_path / "c", fitted.digest)


def test_a_request_scores_the_same_whatever_shares_its_call(
    fitted: RequestClassifier, tmp_path: Path
) -> None:
    save_request_classifier(tmp_path / "c", fitted)
    alone = load_request_classifier(tmp_path / "c", fitted.digest).logits([TEXTS[0]])
    together = load_request_classifier(tmp_path / "c", fitted.digest).logits(TEXTS[::-1])
    assert together[-1] == alone[0]


def test_saved_and_loaded_it_scores_as_before(fitted: RequestClassifier, tmp_path: Path) -> None:
    save_request_classifier(tmp_path / "c", fitted)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [MANIFEST, WEIGHTS]
    loaded = load_request_classifier(tmp_path / "c", fitted.digest)
    assert loaded.settings == SETTINGS
    np.testing.assert_array_equal(loaded.logits(TEXTS), fitted.logits(TEXTS))


def test_other_weights_or_a_missing_directory_are_refused(
    fitted: RequestClassifier, tmp_path: Path
) -> None:
    with pytest.raises(UserError, match="request classifier is missing"):
        load_request_classifier(tmp_path / "absent", fitted.digest)
    save_request_classifier(tmp_path / "c", fitted)
    with pytest.raises(UserError, match=f"{WEIGHTS}: not the request classifier"):
        load_request_classifier(tmp_path / "c", "0123456789")


def _padded_tokens(batches: list[list[int]], lengths: list[int]) -> int:
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)


def test_batches_group_requests_of_similar_length_and_come_in_a_seeded_shuffled_order() -> None:
    lengths = np.random.default_rng(0).integers(4, 60, size=1280).tolist()
    sampler = length_grouped_sampler(lengths, seed=0)
    first, second = training_batches(sampler), training_batches(sampler)
    for epoch in (first, second):
        assert sorted(i for batch in epoch for i in batch) == list(range(len(lengths)))
        assert max(len(batch) for batch in epoch) == 32
    assert first != second
    assert training_batches(length_grouped_sampler(lengths, seed=0)) == first
    assert training_batches(length_grouped_sampler(lengths, seed=1)) != first
    # Random batches of 32 pad to about the longest length (59) everywhere; grouped ones to
    # little more than the real tokens.
    shuffled = np.random.default_rng(0).permutation(len(lengths)).tolist()
    random_batches = [shuffled[start : start + 32] for start in range(0, len(shuffled), 32)]
    assert _padded_tokens(first, lengths) < 0.7 * _padded_tokens(random_batches, lengths)
    assert _padded_tokens(first, lengths) < 1.1 * sum(lengths)
    # The sampler alone runs each mega-batch from long to short; the batches come shuffled, so
    # a batch is about as often longer than the one before it as shorter.
    longest = [max(lengths[i] for i in batch) for batch in first]
    longer = sum(after > before for before, after in pairwise(longest))
    assert longer > len(longest) // 4


def test_one_class_is_refused() -> None:
    with pytest.raises(ValueError, match="harmful and harmless"):
        fit_request_classifier(HARMFUL, np.ones(len(HARMFUL), dtype=bool), SETTINGS)


def test_the_combination_averages_the_two_logits() -> None:
    linear = np.array([0.5, 0.9, 0.1])
    np.testing.assert_allclose(combined_request(linear, np.zeros(3)), [0.5, 0.75, 0.25])
    logit = np.log(0.9 / 0.1)
    np.testing.assert_allclose(combined_request(np.array([0.9]), np.array([logit])), [0.9])
    # Two halves that disagree equally cancel out.
    np.testing.assert_allclose(combined_request(np.array([0.9]), np.array([-logit])), [0.5])


def _probe(request_classifier: str | None) -> Probe:
    head = LinearHead([0.0] * 4, [1.0] * 4, [0.0] * 4, bias=0.0)
    request_head = LinearHead([0.0] * 2, [1.0] * 2, [0.0] * 2, bias=0.0)
    return Probe(
        critic="c",
        embedder="e",
        constitution_version="v",
        style="instruct",
        layer=1,
        request_layer=1,
        max_response_tokens=8,
        trained_on={},
        heads={"response_harmful": head, "request_harmful": request_head},
        request_classifier=request_classifier,
    )


def _features() -> Features:
    one = np.zeros((1, 1))
    # The reply head reads request, reply, their product and cosine: four columns here. The
    # reply is about its request (cosine 1), so the rubric's rule leaves t alone.
    return Features(
        hidden=np.zeros((1, 0)),
        request=np.ones((1, 1)),
        reply=np.ones((1, 1)),
        statistics=np.zeros((1, 0)),
        quotation=np.zeros((1, 0)),
        request_state=one,
        reply_hidden=np.zeros((1, 0)),
        reply_opening=np.zeros((1, 0)),
    )


def test_a_probe_with_a_classifier_needs_its_logits_and_one_without_refuses_them() -> None:
    with pytest.raises(ValueError, match="request_logits"):
        _probe("0123456789").distribution(_features())
    with pytest.raises(ValueError, match="request_logits"):
        _probe(None).distribution(_features(), np.zeros(1))
    # h = 0.5 and q = 0.5 from the zero-weight heads, no refusal head: P(4) = (1 - h) q. A
    # classifier logit of log 9 makes q the sigmoid of (0 + log 9) / 2, i.e. 0.75.
    plain = _probe(None).distribution(_features())
    joined = _probe("0123456789").distribution(_features(), np.array([np.log(9.0)]))
    np.testing.assert_allclose([plain[0, 3], joined[0, 3]], [0.25, 0.375])


def test_request_probability_is_the_q_the_distribution_uses() -> None:
    matrix = _features().matrix(HEAD_BLOCKS["request_harmful"])
    # Zero-weight head: the linear half says 0.5, and the classifier's log 9 lifts q to 0.75,
    # the q behind the P(4) of 0.375 in the test above.
    assert _probe(None).request_probability(matrix) == pytest.approx([0.5])
    joined = _probe("0123456789").request_probability(matrix, np.array([np.log(9.0)]))
    assert joined == pytest.approx([0.75])
    with pytest.raises(ValueError, match="request_logits"):
        _probe("0123456789").request_probability(matrix)
    without_head = replace(
        _probe(None), heads={"response_harmful": _probe(None).heads["response_harmful"]}
    )
    with pytest.raises(ValueError, match="no request_harmful head"):
        without_head.request_probability(matrix)
