"""Paired statistics for "is the fine-tuned model better than the baseline on these prompts?".

Both models answer the same evaluation prompts, so every comparison here is paired by prompt:
the bootstrap resamples prompts (keeping each prompt's two scores together) and McNemar's test
looks only at the prompts where the two models disagree. Pairing removes the prompt-to-prompt
variation that dwarfs the difference between the models on a few dozen prompts.
"""

import math
from collections.abc import Sequence
from typing import TypedDict

import numpy as np

from minicc.arrays import FloatArray


def _check_paired(baseline: Sequence[object], finetuned: Sequence[object]) -> None:
    if len(baseline) != len(finetuned):
        raise ValueError(
            f"paired data must have equal lengths: {len(baseline)} baseline values, "
            f"{len(finetuned)} fine-tuned values"
        )
    if len(baseline) == 0:
        raise ValueError("paired data is empty: need at least one prompt")


def _paired_arrays(
    baseline: Sequence[float], finetuned: Sequence[float]
) -> tuple[FloatArray, FloatArray]:
    _check_paired(baseline, finetuned)
    base = np.asarray(baseline, dtype=np.float64)
    tuned = np.asarray(finetuned, dtype=np.float64)
    if not (np.isfinite(base).all() and np.isfinite(tuned).all()):
        raise ValueError("paired data holds NaN or infinity; drop unscored prompts first")
    return base, tuned


def paired_bootstrap_ci(
    baseline: Sequence[float],
    finetuned: Sequence[float],
    *,
    seed: int,
    resamples: int = 10_000,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of mean(finetuned - baseline).

    Each resample draws len(baseline) prompts with replacement, all resamples in one array
    (memory: resamples x prompts integers), from `numpy.random.default_rng(seed)`, so the same
    inputs and seed always give the same interval.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    base, tuned = _paired_arrays(baseline, finetuned)
    deltas = tuned - base
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, len(deltas), size=(resamples, len(deltas)))
    means = deltas[indices].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def mcnemar_exact(baseline_safe: Sequence[bool], finetuned_safe: Sequence[bool]) -> float:
    """Exact two-sided McNemar p-value for paired safe/unsafe outcomes.

    Under "no difference", each discordant prompt is equally likely to go either way, so the
    smaller of b (safe -> unsafe) and c (unsafe -> safe) is Binomial(b + c, 1/2):
    p = min(1, 2 * P(X <= min(b, c))), and 1.0 when no prompt changed. Exact integer sums (no
    scipy) keep the small counts of a few dozen prompts exact.
    """
    _check_paired(baseline_safe, finetuned_safe)
    pairs = list(zip(baseline_safe, finetuned_safe, strict=True))
    b = sum(1 for before, after in pairs if before and not after)
    c = sum(1 for before, after in pairs if not before and after)
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def outcome_fractions(
    baseline: Sequence[float], finetuned: Sequence[float], *, tolerance: float = 1e-9
) -> dict[str, float]:
    """Fractions of prompts where the fine-tuned score is higher, equal (within `tolerance`)
    or lower than the baseline's; a mean delta can hide many prompts that got worse."""
    base, tuned = _paired_arrays(baseline, finetuned)
    deltas = tuned - base
    n = len(deltas)
    improved = int((deltas > tolerance).sum())
    worsened = int((deltas < -tolerance).sum())
    return {
        "improved_fraction": improved / n,
        "tied_fraction": (n - improved - worsened) / n,
        "worsened_fraction": worsened / n,
    }


class DeltaSummary(TypedDict):
    n: int
    delta_mean: float
    delta_mean_ci: list[float]
    delta_safe_rate: float
    delta_safe_rate_ci: list[float]
    improved_fraction: float
    tied_fraction: float
    worsened_fraction: float
    safe_to_unsafe: int
    unsafe_to_safe: int
    mcnemar_p: float


def delta_summary(
    baseline_scores: Sequence[float],
    finetuned_scores: Sequence[float],
    baseline_safe: Sequence[bool],
    finetuned_safe: Sequence[bool],
    *,
    seed: int,
    resamples: int = 10_000,
    confidence: float = 0.95,
) -> DeltaSummary:
    """Everything a metrics file reports about fine-tuned vs baseline, ready for JSON.

    Scores and safe flags must be for the same prompts in the same order. Floats are rounded to
    4 decimals, except the p-value, which keeps 4 significant digits so that a small p never
    reads as 0.
    """
    if len(baseline_safe) != len(baseline_scores):
        raise ValueError(
            f"{len(baseline_scores)} baseline scores but {len(baseline_safe)} baseline safe flags"
        )
    base, tuned = _paired_arrays(baseline_scores, finetuned_scores)
    base_safe, tuned_safe = _paired_arrays(
        [float(s) for s in baseline_safe], [float(s) for s in finetuned_safe]
    )
    mean_ci = paired_bootstrap_ci(
        baseline_scores, finetuned_scores, seed=seed, resamples=resamples, confidence=confidence
    )
    safe_ci = paired_bootstrap_ci(
        base_safe.tolist(),
        tuned_safe.tolist(),
        seed=seed,
        resamples=resamples,
        confidence=confidence,
    )
    fractions = outcome_fractions(baseline_scores, finetuned_scores)
    return DeltaSummary(
        n=len(base),
        delta_mean=round(float((tuned - base).mean()), 4),
        delta_mean_ci=[round(x, 4) for x in mean_ci],
        delta_safe_rate=round(float((tuned_safe - base_safe).mean()), 4),
        delta_safe_rate_ci=[round(x, 4) for x in safe_ci],
        improved_fraction=round(fractions["improved_fraction"], 4),
        tied_fraction=round(fractions["tied_fraction"], 4),
        worsened_fraction=round(fractions["worsened_fraction"], 4),
        safe_to_unsafe=int(((base_safe == 1) & (tuned_safe == 0)).sum()),
        unsafe_to_safe=int(((base_safe == 0) & (tuned_safe == 1)).sum()),
        mcnemar_p=float(f"{mcnemar_exact(baseline_safe, finetuned_safe):.4g}"),
    )
