"""Training the critic probe (minicc/probe.py) on human-labeled responses.

The critic model reads each labeled (request, reply) through the judge template, exactly as it
reads candidates; its pooled hidden states are the features (computed in resumable batches,
since they are most of the time). Two logistic heads are fitted on them: `harm` and
`over_refusal`. Before the final fit, grouped k-fold cross-validation (no prompt on both
sides of a fold) estimates how well the heads generalise to unseen prompts, and a
leave-one-source-out fit measures generalisation to a source never trained on.
"""

import hashlib
import time
from collections import Counter
from dataclasses import asdict
from typing import Any

import numpy as np
import numpy.typing as npt

from minicc.critic import Critic, FloatArray
from minicc.critic_metrics import REFUSALS, grouped_report, separation, source_family
from minicc.errors import UserError
from minicc.labeled import LabeledResponse
from minicc.params import CriticProbeParams
from minicc.probe import Heads, Probe, fit_heads
from minicc.resume import Batch, ResumeLog, run_resumable

BoolArray = npt.NDArray[np.bool_]
CV_FOLDS = 5


def select_sources(rows: list[LabeledResponse], sources: list[str]) -> list[LabeledResponse]:
    """The rows whose source family is listed; an unknown name is an error, not an empty set."""
    available = sorted({source_family(r.source) for r in rows})
    unknown = [s for s in sources if s not in available]
    if unknown:
        raise UserError(
            f"critic_probe.sources names {unknown[0]!r}, which the training data does not have; "
            f"available: {', '.join(available)}"
        )
    return [r for r in rows if source_family(r.source) in sources]


def harm_labels(rows: list[LabeledResponse]) -> BoolArray:
    return np.array([r.harmful for r in rows], dtype=bool)


def over_refusal_labels(rows: list[LabeledResponse]) -> BoolArray:
    """True for a (full or partial) refusal of a request the source marks safe."""
    return np.array(
        [r.prompt_label == "safe" and r.response_kind in REFUSALS for r in rows], dtype=bool
    )


def extract_features(
    critic: Critic, rows: list[LabeledResponse], layer: int, batch_size: int, log: ResumeLog
) -> FloatArray:
    """Probe features of every row, in row order; batches by reply length, each one logged."""
    ordered = sorted(range(len(rows)), key=lambda i: (len(rows[i].response), rows[i].id))
    batches = [
        Batch(key=rows[ordered[start]].id, items=ordered[start : start + batch_size])
        for start in range(0, len(ordered), batch_size)
    ]

    def work(indices: list[int]) -> list[list[float]]:
        features = critic.probe_features(
            [(rows[i].prompt, rows[i].response) for i in indices],
            [rows[i].id for i in indices],
            layer,
        )
        return features.tolist()  # type: ignore[no-any-return]

    results, _ = run_resumable(batches, work, log, "critic features")
    by_row = dict(zip((i for batch in batches for i in batch.items), results, strict=True))
    return np.asarray([by_row[i] for i in range(len(rows))], dtype=np.float64)


def feature_inputs(critic: Critic, rows: list[LabeledResponse], layer: int) -> dict[str, Any]:
    """Everything that changes the features; names the resume log."""
    return {
        "rows": [asdict(r) for r in rows],
        "critic": critic.loaded.model_id,
        "constitution": critic.constitution.version,
        "style": critic.params.style,
        "max_response_tokens": critic.params.max_response_tokens,
        "layer": layer,
    }


def fit_rows(features: FloatArray, rows: list[LabeledResponse], l2: float) -> Heads:
    """Both heads from labeled rows; a clear error when the rows hold one class only."""
    harm = harm_labels(rows)
    if harm.all() or not harm.any():
        raise UserError(
            "the critic's training rows need harmful and harmless examples; add sources to "
            "critic_probe.sources"
        )
    return fit_heads(features, harm, over_refusal_labels(rows), l2)


def _fold(group: str) -> int:
    """A prompt's fold, from a hash of its group: stable, seed-free, same on every machine."""
    return int(hashlib.sha256(group.encode("utf-8")).hexdigest(), 16) % CV_FOLDS


def _by_family(rows: list[LabeledResponse], scores: FloatArray, threshold: float) -> dict[str, Any]:
    groups: dict[str, list[tuple[bool, float]]] = {"all": []}
    for row, score in zip(rows, scores.tolist(), strict=True):
        groups["all"].append((row.harmful, score))
        groups.setdefault(source_family(row.source), []).append((row.harmful, score))
    return grouped_report(groups, threshold)


def cross_validate(
    features: FloatArray, rows: list[LabeledResponse], l2: float, threshold: float
) -> dict[str, Any]:
    """Grouped k-fold: each row is scored by heads fitted without any row of its prompt."""
    folds = np.array([_fold(r.group) for r in rows])
    scores = np.zeros(len(rows))
    for fold in range(CV_FOLDS):
        held = folds == fold
        if held.any():
            rest = harm_labels(rows)[~held]
            if rest.all() or not rest.any():
                # Tiny data sets only: one fold's complement holds a single class.
                return {"skipped": f"fold {fold}'s training part lacks harmful or harmless rows"}
            train = [r for r, h in zip(rows, held, strict=True) if not h]
            heads = fit_rows(features[~held], train, l2)
            scores[held] = heads.scores(features[held])
    return _by_family(rows, scores, threshold)


def leave_source_out(
    features: FloatArray, rows: list[LabeledResponse], l2: float, threshold: float
) -> dict[str, Any]:
    """Per source family: heads fitted on the other families only, scored on this one."""
    families = np.array([source_family(r.source) for r in rows])
    report: dict[str, Any] = {}
    for family in sorted(set(families.tolist())):
        held = families == family
        train = [r for r, h in zip(rows, held, strict=True) if not h]
        if not train or harm_labels(train).all() or not harm_labels(train).any():
            report[family] = {"skipped": "the other sources lack harmful or harmless rows"}
            continue
        heads = fit_rows(features[~held], train, l2)
        held_rows = [r for r, h in zip(rows, held, strict=True) if h]
        report[family] = separation(
            harm_labels(held_rows).tolist(), heads.scores(features[held]).tolist(), threshold
        )
    return report


def train_probe(
    critic: Critic,
    rows: list[LabeledResponse],
    params: CriticProbeParams,
    batch_size: int,
    log: ResumeLog,
) -> tuple[Probe, dict[str, Any]]:
    """Features, validation and the final fit; returns the probe and its training metrics."""
    started = time.perf_counter()
    features = extract_features(critic, rows, params.layer, batch_size, log)
    extracted = time.perf_counter()
    threshold = critic.params.safe_threshold
    heads = fit_rows(features, rows, params.l2)
    probe = Probe(
        critic=critic.loaded.model_id,
        constitution_version=critic.constitution.version,
        style=critic.params.style,
        layer=params.layer,
        max_response_tokens=critic.params.max_response_tokens,
        trained_on=dict(sorted(Counter(r.source for r in rows).items())),
        heads=heads,
    )
    metrics = {
        "n": len(rows),
        "per_source": probe.trained_on,
        "harmful": int(harm_labels(rows).sum()),
        "over_refusals": int(over_refusal_labels(rows).sum()),
        "layer": params.layer,
        "features": int(features.shape[1]),
        "train": _by_family(rows, heads.scores(features), threshold),
        "grouped_cv": cross_validate(features, rows, params.l2, threshold),
        "leave_source_out": leave_source_out(features, rows, params.l2, threshold),
        "feature_seconds": round(extracted - started, 1),
        "fit_seconds": round(time.perf_counter() - extracted, 1),
    }
    return probe, metrics
