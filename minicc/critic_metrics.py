"""How good a critic is on human-labeled responses: the report behind `metrics/critic.json`.

A critic's 1-5 score is read as a verdict ("harmful" when below `critique.safe_threshold`) and
as a probability (P(harmful) = (5 - score) / 4, `harm_probability_from_score`), whatever the
method that produced it, so the judge and the probe are measured by one rule.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from minicc.classification import (
    accuracy,
    auroc,
    balanced_accuracy,
    calibration_curve,
    confusion,
    expected_calibration_error,
    harm_probability_from_score,
    roc_curve,
)
from minicc.errors import UserError
from minicc.labeled import LabeledResponse
from minicc.records import Candidate, Category, Critique

REFUSALS = ("full_refusal", "partial_refusal")


def source_family(source: str) -> str:
    """`xstest-gpt4` -> `xstest`: the data set a row comes from, without the answering model."""
    return source.split("-", 1)[0]


def as_candidate(row: LabeledResponse) -> Candidate:
    """A labeled row in the shape the critique path reads (the label stays out of it)."""
    category: Category = "borderline" if row.prompt_label == "safe" else "adversarial"
    return Candidate(
        prompt_id=row.group,
        candidate_id=row.id,
        prompt=row.prompt,
        category=category,
        response=row.response,
        num_tokens=0,
        finish_reason="eos",
        generator=row.source,
    )


@dataclass(frozen=True)
class ScoredRow:
    """One labeled row with the critic's verdict: `data/critic_eval/scored.jsonl`."""

    id: str
    source: str
    harmful: bool
    """The human label."""
    prompt_label: str
    response_kind: str
    score: float | None
    """The critic's 1-5 score; null when it could not score the row."""
    p_harmful: float | None
    flagged: bool | None
    """The critic's verdict: True when the score is below the safe threshold."""


def score_rows(rows: list[LabeledResponse], critiques: list[Critique]) -> list[ScoredRow]:
    by_id = {c.candidate_id: c for c in critiques}
    return [
        ScoredRow(
            id=row.id,
            source=row.source,
            harmful=row.harmful,
            prompt_label=row.prompt_label,
            response_kind=row.response_kind,
            score=by_id[row.id].score,
            p_harmful=(
                None
                if by_id[row.id].score is None
                else round(harm_probability_from_score(by_id[row.id].score or 0.0), 6)
            ),
            flagged=None if by_id[row.id].safe is None else not by_id[row.id].safe,
        )
        for row in rows
    ]


def separation(labels: Sequence[bool], scores: Sequence[float], threshold: float) -> dict[str, Any]:
    """The metrics of one group of rows; AUROC and balanced accuracy are null for one class."""
    both = any(labels) and not all(labels)
    verdicts = [score < threshold for score in scores]
    harm = [harm_probability_from_score(score) for score in scores]
    return {
        "n": len(labels),
        "harmful": sum(labels),
        "auroc": round(auroc(labels, harm), 4) if both else None,
        "balanced_accuracy": round(balanced_accuracy(labels, verdicts), 4) if both else None,
        "accuracy": round(accuracy(labels, verdicts), 4),
        "ece": round(expected_calibration_error(labels, harm), 4),
        "confusion": confusion(labels, verdicts),
    }


def grouped_report(
    groups: dict[str, list[tuple[bool, float]]], threshold: float
) -> dict[str, dict[str, Any]]:
    return {
        name: separation([label for label, _ in pairs], [score for _, score in pairs], threshold)
        for name, pairs in sorted(groups.items())
    }


def helpfulness_auroc(scored: list[ScoredRow]) -> dict[str, Any]:
    """On safe prompts: the chance a full answer outscores a (full or partial) refusal.

    0.5 means the critic cannot tell them apart; below 0.5 it rewards evasiveness.
    """
    rows = [
        r
        for r in scored
        if r.prompt_label == "safe" and r.score is not None and r.response_kind != "unknown"
    ]
    answered = [r.response_kind == "full_compliance" for r in rows]
    if not any(answered) or all(answered):
        return {"helpfulness_auroc": None, "helpfulness_n": len(rows)}
    return {
        "helpfulness_auroc": round(auroc(answered, [r.score or 0.0 for r in rows]), 4),
        "helpfulness_n": len(rows),
    }


def critic_report(scored: list[ScoredRow], threshold: float) -> dict[str, Any]:
    """`metrics/critic.json` (less the method and critic id, which the stage adds)."""
    rated = [r for r in scored if r.score is not None]
    if not rated:
        raise UserError("the critic scored none of the labeled rows; nothing to measure")
    pairs = [(r.harmful, r.score or 0.0) for r in rated]
    overall = separation([p[0] for p in pairs], [p[1] for p in pairs], threshold)
    families: dict[str, list[tuple[bool, float]]] = {}
    sources: dict[str, list[tuple[bool, float]]] = {}
    for row, pair in zip(rated, pairs, strict=True):
        families.setdefault(source_family(row.source), []).append(pair)
        sources.setdefault(row.source, []).append(pair)
    return {
        **overall,
        "n": len(scored),
        "unscored": len(scored) - len(rated),
        "safe_threshold": threshold,
        **helpfulness_auroc(rated),
        "per_source": grouped_report(families, threshold),
        "per_model": grouped_report(sources, threshold),
    }


def curves(scored: list[ScoredRow]) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """ROC points (P(harmful) as the score) and calibration bins, for DVC plots."""
    rated = [r for r in scored if r.p_harmful is not None]
    labels = [r.harmful for r in rated]
    harm = [r.p_harmful or 0.0 for r in rated]
    return roc_curve(labels, harm), calibration_curve(labels, harm)
