"""Paired statistics for "is the fine-tuned model better than the baseline on these prompts?".

Both models answer the same evaluation prompts, so every comparison here is paired by prompt:
the bootstrap resamples prompts (keeping each prompt's two scores together) and McNemar's test
looks only at the prompts where the two models disagree. Pairing removes the prompt-to-prompt
variation that dwarfs the difference between the models on a few dozen prompts. The tests
themselves are scipy's (`binomtest`, `bootstrap`); this module adds the input checks, the
project's choice of method and the rounded summary the metrics file reports.
"""

from collections.abc import Sequence
from typing import TypedDict

import numpy as np
from scipy.stats import binomtest, bootstrap

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


def _mean_delta(base: FloatArray, tuned: FloatArray, axis: int) -> FloatArray:
    return np.mean(tuned - base, axis=axis)


def paired_bootstrap_ci(
    baseline: Sequence[float],
    finetuned: Sequence[float],
    *,
    seed: int,
    resamples: int = 10_000,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of mean(finetuned - baseline).

    `scipy.stats.bootstrap` with `paired=True` draws one set of prompt indices per resample and
    applies it to both arms, so each prompt's two scores stay together; the statistic is
    vectorized, so all resamples go in one array (memory: resamples x prompts integers). The
    generator is `numpy.random.default_rng(seed)`: the same inputs and seed give the same
    interval. The percentile method, not scipy's default BCa: BCa's jackknife is undefined
    when every delta is equal (a constant delta's interval is that delta).
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    base, tuned = _paired_arrays(baseline, finetuned)
    if len(base) == 1:
        # scipy needs two observations; every resample of one prompt is that prompt.
        delta = float(tuned[0] - base[0])
        return delta, delta
    result = bootstrap(
        (base, tuned),
        _mean_delta,
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mcnemar_exact(baseline_safe: Sequence[bool], finetuned_safe: Sequence[bool]) -> float:
    """Exact two-sided McNemar p-value for paired safe/unsafe outcomes.

    Under "no difference", each discordant prompt is equally likely to go either way, so the
    number b of safe -> unsafe prompts among the b + c discordant ones is Binomial(b + c, 1/2):
    the exact binomial test of b against p = 1/2, and 1.0 when no prompt changed.
    """
    _check_paired(baseline_safe, finetuned_safe)
    pairs = list(zip(baseline_safe, finetuned_safe, strict=True))
    b = sum(1 for before, after in pairs if before and not after)
    c = sum(1 for before, after in pairs if not before and after)
    if b + c == 0:
        return 1.0
    return float(binomtest(b, b + c, p=0.5, alternative="two-sided").pvalue)


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
