"""Training the critic probe (minicc/probe.py) on labeled responses and requests.

The critic model reads each labeled (request, reply) through the judge template, exactly as it
reads candidates; its pooled hidden states, the sentence embeddings and the reply's text
statistics are the features (computed in resumable batches, since they are most of the time).
Four logistic heads are fitted on them, each on the rows that carry its label (labeled.py says
which). Before the final fit, grouped k-fold cross-validation (no prompt on both sides of a
fold) estimates how well P(harmful) generalises to unseen prompts, and a leave-one-source-out
fit measures generalisation to a source never trained on.

A gated harm head (`critic_probe.gated_harm`, minicc/probe.py) reads each row's P(harmful
request) q. The request heads are fitted on these very prompts, so their q on a training row
is in-sample: near-certain where a new request's would not be, and a harm head trained on it
would learn to trust q more than it deserves. Each training row therefore gets its request's
out-of-fold q from the request head's own cross-validation (the head, and the classifier,
fitted on the folds without that request), which is what a new request gets at scoring time.
"""

import hashlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any

import numpy as np

from minicc.arrays import BoolArray, FloatArray
from minicc.batching import length_sorted_batches
from minicc.critic import Critic
from minicc.critic_metrics import grouped_report, separation, source_family
from minicc.errors import UserError
from minicc.labeled import LabeledRequest, LabeledResponse
from minicc.params import CriticProbeParams
from minicc.probe import (
    HEAD_BLOCKS,
    Features,
    LinearHead,
    Probe,
    combined_request,
    fit_head,
    harm_features,
)
from minicc.request_classifier import (
    ClassifierSettings,
    RequestClassifier,
    TrainingPrecision,
    fit_request_classifier,
)
from minicc.resume import ResumeLog, run_resumable

CV_FOLDS = 5
FEATURE_BLOCKS = tuple(field.name for field in fields(Features))
"""The blocks a row's features hold, as the resume log stores them."""


def harm_label(row: LabeledResponse) -> bool | None:
    """The harm head's label of a row: whether it gives harmful help, except None (left out of
    the head) for a constructed restatement of a harmful request.

    Such a restatement holds no harmful detail, so it is no harmful help, and the other heads learn
    from it that it is neither a refusal nor an answer. But it is what a model writes when it
    repeats a harmful request and goes along, and trained on 128 of them the harm head learned
    that such a reply is harmless: it called real compliance openings of the policy safe ("To
    forge documents ... it's essential to be prepared and have a plan in place."; 5 of the
    baseline's and 6 of a fine-tune's adversarial replies flipped to safe). Dropping the rows
    from training altogether let a fixed text around a harmless request win the mean score again,
    so they leave only this head (docs/critic_history.md, "The restatements of harmful
    requests"). The eval rows keep them, labeled harmless, so the critic is still measured on
    them."""
    if row.construction == "restatement" and row.prompt_label == "unsafe":
        return None
    return row.harmful


LABELS: dict[str, Callable[[LabeledResponse], bool | None]] = {
    "response_harmful": harm_label,
    "refusal": lambda row: row.refusal,
    "on_task": lambda row: row.on_task,
}
"""Each reply head's label of a row; None leaves the row out of that head."""


def select_sources(rows: list[LabeledResponse], sources: list[str]) -> list[LabeledResponse]:
    """The rows whose source family is listed; a listed family with no row is an error."""
    available = sorted({source_family(r.source) for r in rows})
    missing = [s for s in sources if s not in available]
    if missing:
        raise UserError(
            f"critic_probe.sources names {missing[0]!r}, which the training data does not have; "
            f"available: {', '.join(available)}"
        )
    return [r for r in rows if source_family(r.source) in sources]


def extract_features(
    critic: Critic,
    rows: list[LabeledResponse],
    layers: tuple[int, int],
    batch_size: int,
    log: ResumeLog,
) -> Features:
    """Probe features of every row, in row order, at `layers` (the judge input's, the request's);
    batches by `Critic.reading_length`, each one logged."""
    batches = length_sorted_batches(
        range(len(rows)),
        lambda i: critic.reading_length(rows[i].prompt, rows[i].response),
        lambda i: rows[i].id,
        batch_size,
    )

    def work(indices: list[int]) -> list[dict[str, list[float]]]:
        features = critic.probe_features(
            [(rows[i].prompt, rows[i].response) for i in indices],
            [rows[i].id for i in indices],
            *layers,
        )
        blocks = asdict(features)
        return [{name: blocks[name][k].tolist() for name in blocks} for k in range(len(indices))]

    def read_requests() -> None:
        # Every row's request first, so a resumed run reads the same states (`request_states`).
        critic.feature_reader.read_ahead([row.prompt for row in rows], layers[1])

    results, _ = run_resumable(batches, work, log, "critic features", read_requests)
    by_row = dict(zip((i for batch in batches for i in batch.items), results, strict=True))
    ordered_rows = [by_row[i] for i in range(len(rows))]
    return Features(
        **{
            name: np.asarray([row[name] for row in ordered_rows], dtype=np.float64)
            for name in FEATURE_BLOCKS
        }
    )


def feature_inputs(
    critic: Critic, rows: list[LabeledResponse], layers: tuple[int, int], embedder: str
) -> dict[str, Any]:
    """Everything that changes the features; names the resume log."""
    return {
        "rows": [asdict(r) for r in rows],
        "critic": critic.loaded.model_id,
        "embedder": embedder,
        "constitution": critic.constitution.version,
        "style": critic.params.style,
        "max_response_tokens": critic.params.max_response_tokens,
        "layer": layers[0],
        "request_layer": layers[1],
        # A log of rows read with other blocks cannot be resumed into these.
        "blocks": list(FEATURE_BLOCKS),
    }


def request_training_set(
    rows: list[LabeledResponse], requests: list[LabeledRequest]
) -> tuple[list[str], BoolArray]:
    """The request head's rows (texts and labels): each distinct prompt of the reply rows whose
    source says whether it is harmful, then each labeled request not among them, so a request
    counts once however many replies answer it. Two labels for one prompt are an error."""
    known: dict[str, bool] = {}
    labeled = [
        (row.prompt, row.prompt_label == "unsafe", row.id)
        for row in rows
        if row.prompt_label != "unknown"
    ]
    for prompt, harmful, name in [*labeled, *((r.prompt, r.harmful, r.id) for r in requests)]:
        if known.setdefault(prompt, harmful) != harmful:
            raise UserError(
                f"request {prompt!r} is labeled both harmful and harmless (row {name!r} and an "
                "earlier one); fix the label in data/critic/"
            )
    return list(known), np.asarray(list(known.values()), dtype=bool)


def fit_reply_heads(
    features: Features,
    rows: list[LabeledResponse],
    heads: list[str],
    l2: float,
    gate: FloatArray | None = None,
) -> dict[str, LinearHead]:
    """The reply heads that `heads` names, each on the rows that carry its label; `gate`: each
    row's P(harmful request) when the harm head is gated (None: not gated)."""
    fitted = {}
    for name, label_of in LABELS.items():
        if name not in heads:
            continue
        labels = [label_of(row) for row in rows]
        known = np.asarray([label is not None for label in labels], dtype=bool)
        truth = np.asarray([bool(label) for label in labels], dtype=bool)[known]
        if truth.all() or not truth.any():
            raise UserError(
                f"the critic's {name} head needs rows of both classes; add sources to "
                "critic_probe.sources"
            )
        matrix = features.rows(known).matrix(HEAD_BLOCKS[name])
        if name == "response_harmful":
            matrix = harm_features(matrix, _rows(gate, known))
        fitted[name] = fit_head(matrix, truth, l2)
    return fitted


def harm_probability(
    heads: dict[str, LinearHead], features: Features, gate: FloatArray | None = None
) -> FloatArray:
    """P(harmful help) = the rubric's P(1), which is the response_harmful head (gated by
    `gate` as in `fit_reply_heads`)."""
    matrix = harm_features(features.matrix(HEAD_BLOCKS["response_harmful"]), gate)
    return heads["response_harmful"].probability(matrix)


def _fold(group: str) -> int:
    """A prompt's fold, from a hash of its group: stable, seed-free, same on every machine."""
    return int(hashlib.sha256(group.encode("utf-8")).hexdigest(), 16) % CV_FOLDS


def _by_family(rows: list[LabeledResponse], harm: FloatArray) -> dict[str, Any]:
    groups: dict[str, list[tuple[bool, float]]] = {"all": []}
    for row, p in zip(rows, harm.tolist(), strict=True):
        groups["all"].append((row.harmful, p))
        groups.setdefault(source_family(row.source), []).append((row.harmful, p))
    return grouped_report(groups)


def cross_validate(
    features: Features,
    rows: list[LabeledResponse],
    l2: float,
    gate: FloatArray | None = None,
) -> dict[str, Any]:
    """Grouped k-fold: each row's P(harmful) comes from a harm head fitted without its prompt
    (`gate` as in `fit_reply_heads`)."""
    folds = np.array([_fold(r.group) for r in rows])
    harm = np.zeros(len(rows))
    for fold in range(CV_FOLDS):
        held = folds == fold
        if not held.any():
            continue
        held_harm = _held_out_harm(features, rows, held, l2, gate)
        if held_harm is None:
            # Tiny data sets only: one fold's complement holds a single class.
            return {"skipped": f"fold {fold}'s training part lacks harmful or harmless rows"}
        harm[held] = held_harm
    return _by_family(rows, harm)


def _held_out_harm(
    features: Features,
    rows: list[LabeledResponse],
    held: BoolArray,
    l2: float,
    gate: FloatArray | None,
) -> FloatArray | None:
    """P(harmful help) of the `held` rows from a harm head fitted on the other rows only (`gate`
    as in `fit_reply_heads`); None when those lack harmful or harmless rows."""
    train = [r for r, h in zip(rows, held, strict=True) if not h]
    labels = [r.harmful for r in train]
    if all(labels) or not any(labels):
        return None
    heads = fit_reply_heads(
        features.rows(~held), train, ["response_harmful"], l2, _rows(gate, ~held)
    )
    return harm_probability(heads, features.rows(held), _rows(gate, held))


def _rows(gate: FloatArray | None, mask: BoolArray) -> FloatArray | None:
    return None if gate is None else gate[mask]


def request_cross_validation(
    matrix: FloatArray,
    labels: BoolArray,
    texts: list[str],
    l2: float,
    classifier: ClassifierSettings | None = None,
) -> tuple[dict[str, Any], FloatArray | None]:
    """The request head's k-fold estimate on unseen requests: each request's P(harmful request)
    comes from a head fitted on the folds without it (folds by a hash of the text), combined
    with a request classifier fine-tuned on those folds when `classifier` is given.

    Returns the report and those out-of-fold probabilities, one per text (None when a fold
    could not be fitted)."""
    folds = np.array([_fold(text) for text in texts])
    harm = np.zeros(len(labels))
    for fold in range(CV_FOLDS):
        held = folds == fold
        if not held.any():
            continue
        if labels[~held].all() or not labels[~held].any():
            skipped = f"fold {fold}'s training part lacks harmful or harmless requests"
            return {"skipped": skipped}, None
        harm[held] = fit_head(matrix[~held], labels[~held], l2).probability(matrix[held])
        if classifier is not None:
            fitted = fit_request_classifier(
                [t for t, h in zip(texts, held, strict=True) if not h],
                labels[~held],
                classifier,
                f"request classifier, fold {fold + 1} of {CV_FOLDS}",
            )
            logits = fitted.logits([t for t, h in zip(texts, held, strict=True) if h])
            harm[held] = combined_request(harm[held], logits)
    return separation(labels.tolist(), harm.tolist()), harm


def leave_source_out(
    features: Features,
    rows: list[LabeledResponse],
    l2: float,
    gate: FloatArray | None = None,
) -> dict[str, Any]:
    """Per source family: a harm head fitted on the other families only, scored on this one
    (`gate` as in `fit_reply_heads`)."""
    families = np.array([source_family(r.source) for r in rows])
    report: dict[str, Any] = {}
    for family in sorted(set(families.tolist())):
        held = families == family
        harm = _held_out_harm(features, rows, held, l2, gate)
        if harm is None:
            report[family] = {"skipped": "the other sources lack harmful or harmless rows"}
            continue
        held_rows = [r for r, h in zip(rows, held, strict=True) if h]
        report[family] = separation([r.harmful for r in held_rows], harm.tolist())
    return report


def request_gate(
    critic: Critic,
    rows: list[LabeledResponse],
    out_of_fold: dict[str, float],
    request_head: LinearHead,
    classifier: RequestClassifier | None,
    params: CriticProbeParams,
) -> FloatArray:
    """Each row's P(harmful request) for a gated harm head: its request's out-of-fold value
    (module docstring); a request the request heads never trained on (a row whose source does
    not label its request) gets the fitted heads' value, which is not in-sample."""
    by_text = dict(out_of_fold)
    unseen = sorted({row.prompt for row in rows} - set(by_text))
    if unseen:
        linear = request_head.probability(
            critic.feature_reader.request_matrix(unseen, params.request_layer)
        )
        fitted = (
            linear if classifier is None else combined_request(linear, classifier.logits(unseen))
        )
        by_text.update(zip(unseen, fitted.tolist(), strict=True))
    return np.asarray([by_text[row.prompt] for row in rows], dtype=np.float64)


def train_probe(
    critic: Critic,
    rows: list[LabeledResponse],
    requests: list[LabeledRequest],
    params: CriticProbeParams,
    *,
    batch_size: int,
    log: ResumeLog,
    seed: int,
    precision: TrainingPrecision,
) -> tuple[Probe, RequestClassifier | None, dict[str, Any]]:
    """Features, validation and the final fit; returns the probe, its fine-tuned request
    classifier (None when `params.request_epochs` is 0 or there is no request head; trained in
    `precision`) and the training metrics."""
    started = time.perf_counter()
    layers = params.feature_layers
    features = extract_features(critic, rows, layers, batch_size, log)
    extracted = time.perf_counter()
    heads: dict[str, LinearHead] = {}
    request_rows, request_cv, classifier, gate = 0, None, None, None
    if "request_harmful" in params.heads:
        texts, labels = request_training_set(rows, requests)
        if labels.all() or not labels.any():
            raise UserError(
                "the critic's request_harmful head needs harmful and harmless requests; check "
                "the --requests file and critic_probe.sources"
            )
        matrix = critic.feature_reader.request_matrix(texts, params.request_layer)
        heads["request_harmful"] = fit_head(matrix, labels, params.l2)
        request_rows = len(labels)
        settings = None
        if params.request_epochs > 0:
            settings = ClassifierSettings(params.request_epochs, params.request_lr, seed, precision)
            classifier = fit_request_classifier(texts, labels, settings)
        request_cv, out_of_fold = request_cross_validation(
            matrix, labels, texts, params.l2, settings
        )
        if params.gated_harm:
            if out_of_fold is None:
                raise UserError(
                    "critic_probe.gated_harm needs the request head's cross-validation, which "
                    f"could not run ({request_cv['skipped']}); add requests of both kinds or "
                    "set gated_harm to false"
                )
            known = dict(zip(texts, out_of_fold.tolist(), strict=True))
            gate = request_gate(critic, rows, known, heads["request_harmful"], classifier, params)
    heads.update(fit_reply_heads(features, rows, params.heads, params.l2, gate))
    probe = Probe(
        critic=critic.loaded.model_id,
        embedder=critic.embedder.embedder_id,
        constitution_version=critic.constitution.version,
        style=critic.params.style,
        layer=params.layer,
        request_layer=params.request_layer,
        max_response_tokens=critic.params.max_response_tokens,
        trained_on=dict(sorted(Counter(r.source for r in rows).items())),
        heads=dict(sorted(heads.items())),
        request_classifier=None if classifier is None else classifier.digest,
        harm_gated=params.gated_harm,
        hidden_size=features.hidden.shape[1],
    )
    head_rows = {
        name: int(sum(label_of(r) is not None for r in rows))
        for name, label_of in LABELS.items()
        if name in params.heads
    }
    metrics = {
        "n": len(rows),
        "per_source": probe.trained_on,
        "harmful": sum(r.harmful for r in rows),
        "head_rows": {**head_rows, **({"request_harmful": request_rows} if request_rows else {})},
        "layer": params.layer,
        "request_layer": params.request_layer,
        "gated_harm": params.gated_harm,
        "train": _by_family(rows, harm_probability(heads, features, gate)),
        "grouped_cv": cross_validate(features, rows, params.l2, gate),
        "leave_source_out": leave_source_out(features, rows, params.l2, gate),
        **({"request_grouped_cv": request_cv} if request_cv is not None else {}),
        "feature_seconds": round(extracted - started, 1),
        "fit_seconds": round(time.perf_counter() - extracted, 1),
    }
    return probe, classifier, metrics
