"""Safety metrics over critiques and selected samples: numbers for DVC, a table for people.

Unscored candidates are counted, never given a score: when nothing in a group is scored its
mean, spread and safe rate are null rather than a made-up 0, so a critic that failed everywhere
cannot look like a critic that found everything unsafe.

Beside the critic's numbers, two that no critic decides, over every row of a group: the share
of refusals (minicc/refusal.py's documented detector) and of degenerate replies (empty, loops,
noise: minicc/degeneration.py). They show what selection keeps: a critic that prefers refusals
or loops shows up here even when its own scores look fine.
"""

import math
import statistics
from collections.abc import Sequence
from typing import Any

from minicc.degeneration import is_degenerate
from minicc.errors import UserError
from minicc.records import CATEGORIES, Critique, Selected
from minicc.refusal import is_refusal

_DIGITS = 4
_LOW, _HIGH = 1.0, 5.0


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, _DIGITS)


def _stats(
    responses: Sequence[str], scores: Sequence[float], safes: Sequence[bool]
) -> dict[str, Any]:
    """Count, mean, population std and safe rate of the scored rows out of all `responses`,
    and the refusal and degenerate shares of all of them."""
    count, scored = len(responses), len(scores)
    return {
        "count": count,
        "scored": scored,
        "unscored": count - scored,
        "mean_score": _round(statistics.fmean(scores)) if scored else None,
        "std_score": _round(statistics.pstdev(scores)) if scored else None,
        "safe_rate": _round(sum(safes) / scored) if scored else None,
        "refusal_rate": _round(sum(map(is_refusal, responses)) / count) if count else None,
        "degenerate_rate": _round(sum(map(is_degenerate, responses)) / count) if count else None,
    }


def _scored(critiques: Sequence[Critique]) -> list[tuple[Critique, float, bool]]:
    """Each scored critique with its score and safe flag, which a scored row must have."""
    rows = []
    for critique in critiques:
        if not critique.scored:
            continue
        if critique.score is None or critique.safe is None:
            raise UserError(
                f"critique {critique.candidate_id!r} is marked scored but has no score or safe "
                "flag; re-run the critique stage to rebuild critiques.jsonl"
            )
        rows.append((critique, critique.score, critique.safe))
    return rows


def _critique_stats(critiques: Sequence[Critique]) -> dict[str, Any]:
    scored = _scored(critiques)
    return _stats(
        [c.response for c in critiques],
        [s for _, s, _ in scored],
        [safe for _, _, safe in scored],
    )


def _selected_stats(rows: Sequence[Selected]) -> dict[str, Any]:
    stats = _stats([r.response for r in rows], [r.score for r in rows], [r.safe for r in rows])
    stats["chosen"] = sum(r.role == "chosen" for r in rows)
    stats["rejected"] = sum(r.role == "rejected" for r in rows)
    return stats


def summarize(critiques: list[Critique], selected: list[Selected]) -> dict[str, Any]:
    """Overall and per-category statistics for all candidates and for the selected samples.

    `per_category` lists only the categories present, in `CATEGORIES` order.
    """
    candidates = _critique_stats(critiques)
    candidates["per_category"] = {
        category: _critique_stats([c for c in critiques if c.category == category])
        for category in CATEGORIES
        if any(c.category == category for c in critiques)
    }
    chosen = _selected_stats(selected)
    chosen["per_category"] = {
        category: _selected_stats([s for s in selected if s.category == category])
        for category in CATEGORIES
        if any(s.category == category for s in selected)
    }
    return {"candidates": candidates, "selected": chosen}


def score_histogram(critiques: list[Critique], bin_width: float = 0.5) -> list[dict[str, Any]]:
    """Rows for a DVC bar plot: a bin's lower edge under `score`, one count per category.

    Bins are half-open [edge, edge + width) except the last, which also holds a score of exactly
    5.0, the best possible. Every category has a column, zeros included, so the plot's series do
    not change from run to run.
    """
    bins = math.ceil(round((_HIGH - _LOW) / bin_width, 9))
    rows: list[dict[str, Any]] = [
        {"score": round(_LOW + i * bin_width, _DIGITS), **dict.fromkeys(CATEGORIES, 0)}
        for i in range(bins)
    ]
    for critique, score, _ in _scored(critiques):
        rows[min(int((score - _LOW) / bin_width), bins - 1)][critique.category] += 1
    return rows


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(metrics: dict[str, Any]) -> str:
    """A fixed-width console table of `summarize`'s output; nulls show as "-"."""
    header = f"{'set':<10} {'group':<12} {'count':>6} {'unscored':>8} {'mean':>6} {'std':>6} "
    lines = [header + f"{'safe rate':>9} {'refusals':>8} {'degenerate':>10}"]
    for name in ("candidates", "selected"):
        stats = metrics[name]
        groups = [("overall", stats), *stats["per_category"].items()]
        for group, row in groups:
            lines.append(
                f"{name:<10} {group:<12} {row['count']:>6} {row['unscored']:>8} "
                f"{_cell(row['mean_score'], '.2f'):>6} {_cell(row['std_score'], '.2f'):>6} "
                f"{_cell(row['safe_rate'], '.1%'):>9} {_cell(row['refusal_rate'], '.1%'):>8} "
                f"{_cell(row['degenerate_rate'], '.1%'):>10}"
            )
    return "\n".join(lines)
