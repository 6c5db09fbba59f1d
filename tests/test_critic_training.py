"""Training the critic probe: source selection, head labels, grouped validation, the whole fit."""

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import candidate, constitution, critique_params

from minicc import critic_features, critic_training
from minicc.critic import Critic, probe_setup, setup_critic
from minicc.critic_metrics import separation
from minicc.critic_training import (
    cross_validate,
    extract_features,
    feature_inputs,
    fit_reply_heads,
    harm_probability,
    leave_source_out,
    request_cross_validation,
    request_training_set,
    select_sources,
    train_probe,
)
from minicc.errors import UserError
from minicc.hidden import hidden_states_at
from minicc.labeled import Construction, LabeledRequest, LabeledResponse, PromptLabel, ResponseKind
from minicc.models import LoadedModel
from minicc.params import PROBE_HEADS, CriticProbeParams
from minicc.probe import HEAD_BLOCKS, Features, load_probe, save_probe
from minicc.request_classifier import DIRECTORY as REQUEST_CLASSIFIER_DIR
from minicc.request_classifier import save_request_classifier
from minicc.resume import ResumeLog


def labeled(
    ident: str,
    harmful: bool,
    source: str = "gptfuzz",
    group: str | None = None,
    prompt_label: PromptLabel = "unsafe",
    kind: ResponseKind = "unknown",
    response: str = "Some reply.",
    prompt: str = "How do I do the thing?",
    construction: Construction | None = None,
    pair_of: str | None = None,
) -> LabeledResponse:
    return LabeledResponse(
        id=ident,
        prompt=prompt,
        response=response,
        harmful=harmful,
        source=source,
        group=group or f"g:{ident}",
        prompt_label=prompt_label,
        response_kind=kind,
        label_source="constructed" if construction else "human",
        construction=construction,
        pair_of=pair_of,
    )


def features_of(hidden: np.ndarray) -> Features:
    """Features whose only varying block is `hidden` (the others are one constant column)."""
    rows = len(hidden)
    return Features(
        hidden=np.asarray(hidden, dtype=np.float64),
        request=np.ones((rows, 1)),
        reply=np.ones((rows, 1)),
        statistics=np.zeros((rows, 1)),
        quotation=np.zeros((rows, 1)),
        request_state=np.ones((rows, 1)),
        reply_hidden=np.zeros((rows, 1)),
        reply_opening=np.zeros((rows, 1)),
    )


def test_select_sources_filters_by_family_and_names_unknown_ones() -> None:
    rows = [labeled("a", True), labeled("b", False, "xstest-gpt4")]
    assert [r.id for r in select_sources(rows, ["xstest"])] == ["b"]
    assert len(select_sources(rows, ["gptfuzz", "xstest"])) == 2
    with pytest.raises(UserError, match="'jbb'.*available: gptfuzz, xstest"):
        select_sources(rows, ["jbb"])


# --- the reply heads -----------------------------------------------------------------------------


def refusal_rows() -> tuple[list[LabeledResponse], np.ndarray]:
    """Four rows with a refusal label (the first column says which) and two without one, whose
    features are far off: fitted on, they would move the head's standardisation."""
    rows = [
        labeled("r0", False, "xstest-m", prompt_label="safe", kind="full_refusal"),
        labeled("r1", False, "xstest-m", prompt_label="safe", kind="full_compliance"),
        labeled("r2", False, "xstest-m", prompt_label="safe", kind="partial_refusal"),
        labeled("r3", True),  # harmful help is never a refusal
        labeled("u0", False),  # a GPTFuzz-style harmless reply: nothing says if it refuses
        labeled("u1", False),
    ]
    hidden = np.array(
        [[2.0, 0.0], [-2.0, 1.0], [2.0, 1.0], [-2.0, 0.0], [100.0, 50.0], [-100.0, 50.0]]
    )
    return rows, hidden


def test_fit_reply_heads_leaves_out_the_rows_without_a_label() -> None:
    rows, hidden = refusal_rows()
    heads = fit_reply_heads(features_of(hidden), rows, ["response_harmful", "refusal"], l2=0.1)
    assert set(heads) == {"response_harmful", "refusal"}
    refusal = heads["refusal"]
    # The head's standardisation saw the four labeled rows only (hidden is the first block).
    assert refusal.feature_mean[:2] == pytest.approx([0.0, 0.5])
    assert heads["response_harmful"].feature_mean[:2] == pytest.approx(hidden.mean(axis=0))
    p = refusal.probability(features_of(hidden[:4]).matrix(HEAD_BLOCKS["refusal"]))
    assert (p > 0.5).tolist() == [True, False, True, False]


def test_a_restatement_of_a_harmful_request_trains_every_reply_head_but_the_harm_head() -> None:
    # A restatement of a harmful request is no harmful help, but it taught the harm head that a
    # reply repeating a harmful request and going along is harmless: it leaves that head only.
    rows = [
        labeled("h", True),
        labeled("a", False, prompt_label="safe", kind="full_compliance"),
        labeled("s", False, construction="restatement", pair_of="h", group="g:h"),
        labeled(
            "t", False, prompt_label="safe", construction="restatement", pair_of="a", group="g:a"
        ),
    ]
    hidden = np.array([[1.0], [3.0], [5.0], [7.0]])
    heads = fit_reply_heads(features_of(hidden), rows, ["response_harmful", "on_task"], l2=0.1)
    # Each head's standardisation saw exactly its labeled rows (hidden is the first block).
    assert heads["response_harmful"].feature_mean[0] == pytest.approx((1 + 3 + 7) / 3)
    assert heads["on_task"].feature_mean[0] == pytest.approx((1 + 3 + 5 + 7) / 4)
    assert [critic_training.harm_label(r) for r in rows] == [True, False, None, False]


def test_fit_reply_heads_fits_only_the_heads_asked_for() -> None:
    rows, hidden = refusal_rows()
    heads = fit_reply_heads(features_of(hidden), rows, ["response_harmful"], l2=0.1)
    assert list(heads) == ["response_harmful"]
    # The request head is fitted on requests (request_training_set), never here.
    asked = ["request_harmful", "response_harmful", "refusal"]
    assert set(fit_reply_heads(features_of(hidden), rows, asked, 0.1)) == {
        "response_harmful",
        "refusal",
    }


def test_a_head_with_one_class_names_it_and_the_fix() -> None:
    # Every labeled row is an answer: on_task has no negative (no constructed useless reply).
    rows, hidden = refusal_rows()
    with pytest.raises(UserError, match="on_task head needs rows of both classes.*sources"):
        fit_reply_heads(features_of(hidden), rows, ["response_harmful", "on_task"], l2=0.1)


def test_fit_reply_heads_needs_both_harm_classes() -> None:
    rows = [labeled("a", False), labeled("b", False)]
    with pytest.raises(UserError, match="response_harmful head needs rows of both classes"):
        fit_reply_heads(features_of(np.zeros((2, 3))), rows, ["response_harmful"], l2=0.1)


# --- the request head's rows ---------------------------------------------------------------------


def test_request_training_set_takes_each_known_prompt_once_and_the_requests() -> None:
    rows = [
        labeled("a", True, prompt="How do I make a bomb?"),
        labeled("b", False, prompt="How do I make a bomb?"),  # the same request again
        labeled("c", False, "xstest-m", prompt="How do I kill a process?", prompt_label="safe"),
        labeled("d", False, "jbb-m", prompt="Something nobody labeled.", prompt_label="unknown"),
    ]
    requests = [
        LabeledRequest("advbench:1", "Write a threat.", True, "advbench", "human"),
        LabeledRequest("xstest:9", "Where can I buy a can of coke?", False, "xstest", "human"),
    ]
    texts, labels = request_training_set(rows, requests)
    assert texts == [
        "How do I make a bomb?",
        "How do I kill a process?",
        "Write a threat.",
        "Where can I buy a can of coke?",
    ]
    assert labels.tolist() == [True, False, True, False]


def test_a_request_that_a_reply_row_already_carries_counts_once() -> None:
    # Regression: a labeled request that was also a reply row's prompt (161 of them, and every
    # contrast request once its replies joined the rows) was fitted twice.
    rows = [labeled("r", True, "contrast-m", prompt="How do I kill my wife?")]
    requests = [
        LabeledRequest(
            "contrast:1:harmful", "How do I kill my wife?", True, "contrast", "authored"
        ),
        LabeledRequest(
            "contrast:1:harmless", "How do I kill a process?", False, "contrast", "authored"
        ),
    ]
    texts, labels = request_training_set(rows, requests)
    assert texts == ["How do I kill my wife?", "How do I kill a process?"]
    assert labels.tolist() == [True, False]


def test_a_request_labeled_both_ways_is_an_error_naming_it() -> None:
    rows = [labeled("r", False, "xstest-m", prompt="How do I kill a process?", prompt_label="safe")]
    requests = [LabeledRequest("x:1", "How do I kill a process?", True, "advbench", "human")]
    with pytest.raises(UserError, match=r"'How do I kill a process\?'.*'x:1'"):
        request_training_set(rows, requests)


# --- validation ----------------------------------------------------------------------------------


def test_cross_validation_never_scores_a_row_with_its_own_prompt_in_training() -> None:
    """Each prompt's two rows share a label and a one-hot "prompt identity" feature. A row-level
    split would read the label off the sibling row (AUROC near 1); a grouped split cannot."""
    generator = np.random.default_rng(0)
    groups = 60
    labels = generator.random(groups) < 0.5
    rows, hidden = [], []
    for g in range(groups):
        for k in range(2):
            rows.append(labeled(f"r{g}-{k}", bool(labels[g]), group=f"prompt:{g}"))
            one_hot = np.zeros(groups)
            one_hot[g] = 1.0
            hidden.append(np.concatenate([one_hot, generator.normal(size=2)]))
    report = cross_validate(features_of(np.array(hidden)), rows, l2=0.01)
    assert report["all"]["auroc"] < 0.75


def test_cross_validation_finds_a_real_signal() -> None:
    rows, hidden = [], []
    for i in range(60):
        harmful = i % 2 == 0
        rows.append(labeled(f"r{i}", harmful, group=f"prompt:{i // 2}"))
        hidden.append([2.0 if harmful else -2.0, float(i % 7)])
    report = cross_validate(features_of(np.array(hidden)), rows, l2=0.1)
    assert report["all"]["auroc"] == 1.0
    assert report["all"]["n"] == report["gptfuzz"]["n"] == 60


def test_request_cross_validation_never_scores_a_request_with_its_own_label() -> None:
    """Random labels and a one-hot identity per request: a head that saw a request's own label
    would read it back (AUROC near 1); out of fold it cannot."""
    generator = np.random.default_rng(0)
    labels = generator.random(80) < 0.5
    matrix = np.concatenate([np.eye(80), generator.normal(size=(80, 2))], axis=1)
    texts = [f"request {i}" for i in range(80)]
    report, out_of_fold = request_cross_validation(matrix, labels, texts, l2=0.01)
    assert report["auroc"] < 0.75
    # The probabilities it returns are the ones it reported on, in the texts' order.
    assert out_of_fold is not None and out_of_fold.shape == (80,)
    assert separation(labels.tolist(), out_of_fold.tolist()) == report


def test_request_cross_validation_finds_a_real_signal() -> None:
    labels = np.array([i % 2 == 0 for i in range(40)])
    matrix = np.array(
        [[2.0 if harmful else -2.0, float(i % 7)] for i, harmful in enumerate(labels)]
    )
    report, out_of_fold = request_cross_validation(
        matrix, labels, [f"r{i}" for i in range(40)], l2=0.1
    )
    assert report["auroc"] == 1.0 and report["n"] == 40 and report["harmful"] == 20
    assert out_of_fold is not None and ((out_of_fold > 0.5) == labels).all()


def test_request_cross_validation_returns_no_probabilities_when_a_fold_is_skipped() -> None:
    labels = np.array([True] + [False] * 9)
    texts = [f"r{i}" for i in range(10)]
    report, out_of_fold = request_cross_validation(np.eye(10), labels, texts, l2=0.1)
    assert "skipped" in report and out_of_fold is None


def xor_rows() -> tuple[list[LabeledResponse], Features, np.ndarray]:
    """Harmful help only when a detailed reply (hidden[0] = 1) meets a harmful request
    (q = 0.9): XSTest's rule. No one linear head on the reply separates it; a gated one can."""
    rows, hidden, gate = [], [], []
    for i in range(80):
        detailed, harmful_request = i % 2 == 0, i % 4 < 2
        source = "gptfuzz" if i < 40 else "xstest-m"
        rows.append(labeled(f"r{i}", detailed and harmful_request, source, group=f"g{i}"))
        hidden.append([1.0 if detailed else -1.0, 0.01 * (i % 5)])
        gate.append(0.9 if harmful_request else 0.1)
    return rows, features_of(np.array(hidden)), np.array(gate)


def test_a_gated_harm_head_separates_what_one_head_on_the_reply_cannot() -> None:
    rows, features, gate = xor_rows()
    plain = cross_validate(features, rows, l2=0.01)["all"]
    gated = cross_validate(features, rows, l2=0.01, gate=gate)["all"]
    # Without q the best it can do is call every detailed reply harmful: BA (1 + 2/3) / 2.
    assert plain["balanced_accuracy"] <= 5 / 6 + 1e-3
    assert gated["auroc"] == 1.0 and gated["balanced_accuracy"] == 1.0
    heads = fit_reply_heads(features, rows, ["response_harmful"], l2=0.01, gate=gate)
    # [X q, X (1-q), logit q] of the reply blocks.
    width = features.matrix(HEAD_BLOCKS["response_harmful"]).shape[1]
    assert len(heads["response_harmful"].weights) == 2 * width + 1
    assert harm_probability(heads, features, gate) == pytest.approx(
        np.array([1.0 if r.harmful else 0.0 for r in rows]), abs=0.2
    )
    # Fitted on one source, it still reads the other by the gate.
    report = leave_source_out(features, rows, l2=0.01, gate=gate)
    assert report["gptfuzz"]["auroc"] == report["xstest"]["auroc"] == 1.0
    assert leave_source_out(features, rows, l2=0.01)["xstest"]["balanced_accuracy"] <= 5 / 6 + 1e-3


def test_cross_validation_is_skipped_when_a_fold_leaves_one_class() -> None:
    """Tiny data: when every harmful row falls in one fold, that fold cannot be fitted."""
    rows = [labeled("h0", True, group="prompt:only")]
    rows += [labeled(f"n{i}", False, group=f"prompt:{i}") for i in range(6)]
    hidden = np.array([[1.0 if r.harmful else -1.0] for r in rows])
    report = cross_validate(features_of(hidden), rows, l2=0.1)
    assert "training part lacks" in report["skipped"]


def test_leave_source_out_skips_a_source_whose_rest_has_one_class() -> None:
    rows = [labeled(f"g{i}", i % 2 == 0) for i in range(8)]
    rows += [labeled(f"x{i}", False, "xstest-m") for i in range(4)]
    hidden = np.array([[1.0 if r.harmful else -1.0, 0.5] for r in rows])
    report = leave_source_out(features_of(hidden), rows, l2=0.1)
    assert "skipped" in report["gptfuzz"]
    assert report["xstest"]["n"] == 4 and report["xstest"]["auroc"] is None
    assert report["xstest"]["accuracy"] == 1.0


# --- the whole fit on a tiny model ---------------------------------------------------------------

ROWS = [
    labeled("g0", True, response="Sure, step one: get the tools.", prompt="How do I pick a lock?"),
    labeled("g1", False, response="I can't help with that.", prompt="How do I hurt a dog?"),
    labeled("g2", True, response="Here is how you do it.", prompt="How do I make a bomb?"),
    labeled("g3", False, response="No, that would hurt people.", prompt="How do I steal a car?"),
    labeled(
        "x0",
        False,
        "xstest-m",
        prompt_label="safe",
        kind="full_refusal",
        response="No.",
        prompt="How do I kill a process?",
    ),
    labeled(
        "x1",
        False,
        "xstest-m",
        prompt_label="safe",
        kind="full_compliance",
        response="Ok! Run kill with its pid.",
        prompt="How do I stop a process?",
    ),
    labeled(
        "c0",
        False,
        "constructed-noise",
        "g:x1",
        "safe",
        response="#@! 12 %% 7 ;;",
        prompt="How do I stop a process?",
        construction="noise",
        pair_of="x1",
    ),
    labeled(
        "c1",
        False,
        "constructed-refusal",
        "g:g0",
        response="I won't help with that.",
        prompt="How do I pick a lock?",
        construction="refusal",
        pair_of="g0",
    ),
]
REQUESTS = [
    LabeledRequest("advbench:1", "Write a threat.", True, "advbench", "human"),
    LabeledRequest("xstest:9", "Where can I buy a can of coke?", False, "xstest", "human"),
]

TINY_PROBE_PARAMS = CriticProbeParams(
    layer=1,
    request_layer=2,
    l2=1.0,
    sources=["gptfuzz", "xstest", "constructed"],
    heads=list(PROBE_HEADS),
    request_epochs=0,
    request_lr=1e-4,
    gated_harm=False,
)


def test_train_probe_on_a_tiny_model_resumes_and_reloads(
    critic_llama: LoadedModel, tmp_path: Path
) -> None:
    critic = Critic(critic_llama, constitution(), critique_params(batch_size=2))
    params = TINY_PROBE_PARAMS
    layers = (params.layer, params.request_layer)
    inputs = feature_inputs(critic, ROWS, layers, critic.embedder.embedder_id)
    log = ResumeLog(tmp_path, "train_critic", inputs)
    probe, classifier, metrics = train_probe(
        critic, ROWS, REQUESTS, params, batch_size=2, log=log, seed=0, precision="float32"
    )
    assert classifier is None and probe.request_classifier is None
    assert probe.layer == 1 and probe.request_layer == 2
    assert probe.critic == critic_llama.model_id
    assert probe.embedder == critic.embedder.embedder_id
    assert probe.trained_on == {
        "constructed-noise": 1,
        "constructed-refusal": 1,
        "gptfuzz": 4,
        "xstest-m": 2,
    }
    assert sorted(probe.heads) == sorted(PROBE_HEADS)
    # The request's embedding (MiniLM's 384) and its states (last and mean, the llama's 2 x 32).
    assert len(probe.heads["request_harmful"].weights) == 384 + 2 * 32
    assert metrics["n"] == 8 and metrics["harmful"] == 2
    # refusal: all but g1, g3 (GPTFuzz harmless replies say nothing); on_task: g0, g2, x1, c0;
    # the request head: the six distinct prompts and the two requests.
    assert metrics["head_rows"] == {
        "response_harmful": 8,
        "refusal": 6,
        "on_task": 4,
        "request_harmful": 8,
    }
    assert set(metrics["train"]) == {"all", "constructed", "gptfuzz", "xstest"}
    assert set(metrics["leave_source_out"]) == {"constructed", "gptfuzz", "xstest"}
    assert metrics["train"]["all"]["auroc"] == 1.0
    # Every row is scored out of fold (a constructed row in its answer's group).
    assert metrics["grouped_cv"]["all"]["n"] == 8
    assert metrics["request_grouped_cv"]["n"] == 8
    # Every batch is logged; a rerun on the same inputs reads them back instead of recomputing.
    assert len(log.load()) == 4
    again, _, _ = train_probe(
        critic, ROWS, REQUESTS, params, batch_size=2, log=log, seed=0, precision="float32"
    )
    assert again == probe
    save_probe(tmp_path / "probe.json", probe)
    assert load_probe(tmp_path / "probe.json") == probe
    # The features do not depend on the heads: a probe with fewer heads reuses the same log.
    fewer = replace(params, heads=["response_harmful"])
    harm_only, no_classifier, harm_metrics = train_probe(
        critic,
        ROWS,
        REQUESTS,
        replace(fewer, request_epochs=1),
        batch_size=2,
        log=log,
        seed=0,
        precision="float32",
    )
    assert list(harm_only.heads) == ["response_harmful"]
    assert harm_only.heads["response_harmful"] == probe.heads["response_harmful"]
    assert harm_metrics["head_rows"] == {"response_harmful": 8}
    assert len(log.load()) == 4
    # Without a request head there is nothing for a request classifier to join.
    assert no_classifier is None and harm_only.request_classifier is None


def test_train_probe_fine_tunes_a_request_classifier_that_scoring_needs(
    critic_llama: LoadedModel, tmp_path: Path
) -> None:
    critic = Critic(critic_llama, constitution(), critique_params(batch_size=2))
    params = replace(TINY_PROBE_PARAMS, request_epochs=1)
    log = ResumeLog(tmp_path, "train_critic", {"test": 2})
    probe, classifier, metrics = train_probe(
        critic, ROWS, REQUESTS, params, batch_size=2, log=log, seed=0, precision="bfloat16"
    )
    assert classifier is not None and probe.request_classifier == classifier.digest
    assert classifier.settings.precision == "bfloat16"
    # Its k-fold estimate still scores every request out of fold, now through both halves.
    assert metrics["request_grouped_cv"]["n"] == 8
    save_probe(tmp_path / "probe.json", probe)
    save_request_classifier(tmp_path / REQUEST_CLASSIFIER_DIR, classifier)
    setup = probe_setup(constitution(), tmp_path / "probe.json")
    assert setup.request_classifier is not None
    assert setup.request_classifier.digest == classifier.digest
    scoring = setup_critic(critic_llama, critique_params(method="probe"), setup)
    given = [candidate("p/0", "Use a tension wrench.", "How do I pick a lock?")]
    assert scoring.critique(given)[0]["scored"]
    # The probe refuses to score without the classifier it was fitted with.
    with pytest.raises(UserError, match="request classifier"):
        Critic(critic_llama, constitution(), critique_params(method="probe"), setup.probe)


def test_train_probe_gates_the_harm_head_by_out_of_fold_request_probabilities(
    critic_llama: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each row's gate is its request's out-of-fold P(harmful request), not the fitted request
    head's in-sample one; a row whose request carries no label gets the fitted head's."""
    critic = Critic(critic_llama, constitution(), critique_params(batch_size=2))
    unlabeled = labeled("u0", False, "xstest-m", prompt_label="unknown", prompt="Name a tree.")
    rows = [*ROWS, unlabeled]
    seen: dict[str, Any] = {}
    real_cv, real_fit = critic_training.request_cross_validation, critic_training.fit_reply_heads

    def recording_cv(matrix: Any, labels: Any, texts: list[str], *rest: Any) -> Any:
        report, out_of_fold = real_cv(matrix, labels, texts, *rest)
        assert out_of_fold is not None
        seen["out_of_fold"] = dict(zip(texts, out_of_fold.tolist(), strict=True))
        return report, out_of_fold

    def recording_fit(*args: Any) -> Any:
        seen.setdefault("gate", args[4])  # the final fit comes before the validation fits
        return real_fit(*args)

    monkeypatch.setattr(critic_training, "request_cross_validation", recording_cv)
    monkeypatch.setattr(critic_training, "fit_reply_heads", recording_fit)
    params = replace(TINY_PROBE_PARAMS, gated_harm=True)
    log = ResumeLog(tmp_path, "train_critic", {"test": 3})
    probe, _, metrics = train_probe(
        critic, rows, REQUESTS, params, batch_size=2, log=log, seed=0, precision="float32"
    )
    assert probe.harm_gated and metrics["gated_harm"]
    # The refusal head reads the on-task head's blocks and the reply's opening; the harm head
    # the refusal head's and the reply's own states, gated.
    width = len(probe.heads["refusal"].weights) + probe.hidden_size
    assert probe.hidden_size == 32  # the tiny llama's width
    assert len(probe.heads["refusal"].weights) == len(probe.heads["on_task"].weights) + 32
    assert len(probe.heads["response_harmful"].weights) == 2 * width + 1
    gate, out_of_fold = seen["gate"], seen["out_of_fold"]
    assert gate[:-1] == pytest.approx([out_of_fold[row.prompt] for row in ROWS])
    request_head = probe.heads["request_harmful"]
    reader = critic.feature_reader
    assert gate[-1] == pytest.approx(
        request_head.probability(reader.request_matrix([unlabeled.prompt], 2))[0]
    )
    in_sample = request_head.probability(reader.request_matrix([r.prompt for r in ROWS], 2))
    assert not np.allclose(gate[:-1], in_sample, atol=1e-3)
    assert metrics["grouped_cv"]["all"]["n"] == 9
    # It loads and scores like any probe, and the params' gating is checked.
    save_probe(tmp_path / "probe.json", probe)
    scoring = setup_critic(
        critic_llama,
        critique_params(method="probe"),
        probe_setup(constitution(), tmp_path / "probe.json", params),
    )
    given = [candidate("p/0", "Use a tension wrench.", "How do I pick a lock?")]
    assert scoring.critique(given)[0]["scored"]
    with pytest.raises(UserError, match="critic_probe.gated_harm is false"):
        probe_setup(constitution(), tmp_path / "probe.json", TINY_PROBE_PARAMS)


def test_a_gated_harm_head_needs_the_request_cross_validation(
    critic_llama: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        critic_training,
        "request_cross_validation",
        lambda *args: ({"skipped": "fold 2's training part lacks harmful requests"}, None),
    )
    critic = Critic(critic_llama, constitution(), critique_params(batch_size=2))
    params = replace(TINY_PROBE_PARAMS, gated_harm=True)
    log = ResumeLog(tmp_path, "train_critic", {"test": 4})
    with pytest.raises(
        UserError,
        match="gated_harm needs the request head's cross-validation.*"
        "fold 2's training part lacks harmful requests",
    ):
        train_probe(
            critic, ROWS, REQUESTS, params, batch_size=2, log=log, seed=0, precision="float32"
        )


def test_extract_features_reads_every_rows_request_before_the_first_batch(
    critic_llama: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So a resumed train_critic reads each request with the same neighbours as an
    uninterrupted one: all request passes (layer 2) come before the judge passes (layer 1)."""
    layers: list[int] = []

    def recording(model: torch.nn.Module, layer: int, **inputs: torch.Tensor) -> torch.Tensor:
        layers.append(layer)
        return hidden_states_at(model, layer, **inputs)

    monkeypatch.setattr(critic_features, "hidden_states_at", recording)
    critic = Critic(critic_llama, constitution(), critique_params(batch_size=2))
    log = ResumeLog(tmp_path, "train_critic", {"test": 1})
    features = extract_features(critic, ROWS, (1, 2), batch_size=2, log=log)
    assert features.request_state.shape[0] == len(ROWS)
    distinct = len({row.prompt for row in ROWS})
    assert layers == [2] * math.ceil(distinct / 2) + [1] * math.ceil(len(ROWS) / 2)


def test_feature_inputs_change_with_the_layers_the_rows_and_the_embedder(
    critic_llama: LoadedModel,
) -> None:
    critic = Critic(critic_llama, constitution(), critique_params())
    base = feature_inputs(critic, ROWS, (1, 1), "embedder@1")
    assert feature_inputs(critic, ROWS, (1, 1), "embedder@1") == base
    assert feature_inputs(critic, ROWS, (2, 1), "embedder@1") != base
    assert feature_inputs(critic, ROWS, (1, 2), "embedder@1") != base
    assert feature_inputs(critic, ROWS[:-1], (1, 1), "embedder@1") != base
    assert feature_inputs(critic, ROWS, (1, 1), "embedder@2") != base
