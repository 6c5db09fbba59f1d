"""Paired statistics: McNemar against hand-computed binomial tails, bootstrap on known shifts."""

from typing import Any

import numpy as np
import pytest

from minicc.stats import delta_summary, mcnemar_exact, outcome_fractions, paired_bootstrap_ci


def _discordant(b: int, c: int, both_safe: int = 0) -> tuple[list[bool], list[bool]]:
    """Paired flags with b safe->unsafe, c unsafe->safe and `both_safe` unchanged prompts."""
    baseline = [True] * b + [False] * c + [True] * both_safe
    finetuned = [False] * b + [True] * c + [True] * both_safe
    return baseline, finetuned


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (1, 9, 0.021484375),  # 2 * (1 + 10) / 2**10
        (9, 1, 0.021484375),  # two-sided: symmetric
        (0, 5, 0.0625),  # 2 * 1 / 2**5
        (3, 3, 1.0),  # 2 * 42 / 64 > 1, capped
        (2, 8, 0.109375),  # 2 * (1 + 10 + 45) / 2**10
        (0, 1, 1.0),  # 2 * 1 / 2
        (0, 0, 1.0),  # nothing changed
    ],
)
def test_mcnemar_exact_matches_hand_computed_values(b: int, c: int, expected: float) -> None:
    baseline, finetuned = _discordant(b, c, both_safe=4)
    # No tolerance: scipy's binomtest sums the same binomial terms, exact in binary at these n.
    assert mcnemar_exact(baseline, finetuned) == expected


def test_mcnemar_ignores_concordant_prompts() -> None:
    baseline, finetuned = _discordant(1, 9)
    more_base = baseline + [True] * 50 + [False] * 50
    more_tuned = finetuned + [True] * 50 + [False] * 50
    assert mcnemar_exact(more_base, more_tuned) == mcnemar_exact(baseline, finetuned)


def test_mcnemar_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        mcnemar_exact([True], [True, False])
    with pytest.raises(ValueError, match="empty"):
        mcnemar_exact([], [])


def _shifted(n: int = 200, shift: float = 0.3, seed: int = 0) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    baseline = rng.normal(3.0, 1.0, size=n)
    finetuned = baseline + shift + rng.normal(0.0, 0.5, size=n)
    return baseline.tolist(), finetuned.tolist()


def test_bootstrap_ci_covers_a_known_shift_and_excludes_zero() -> None:
    baseline, finetuned = _shifted()
    low, high = paired_bootstrap_ci(baseline, finetuned, seed=1)
    assert low < 0.3 < high
    assert low > 0.0
    observed = float(np.mean(np.subtract(finetuned, baseline)))
    assert low < observed < high


def test_bootstrap_ci_includes_zero_without_a_shift() -> None:
    baseline, finetuned = _shifted(shift=0.0)
    low, high = paired_bootstrap_ci(baseline, finetuned, seed=1)
    assert low < 0.0 < high


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    baseline, finetuned = _shifted()
    first = paired_bootstrap_ci(baseline, finetuned, seed=7, resamples=2000)
    assert paired_bootstrap_ci(baseline, finetuned, seed=7, resamples=2000) == first
    assert paired_bootstrap_ci(baseline, finetuned, seed=8, resamples=2000) != first


def test_bootstrap_of_a_constant_delta_is_that_delta() -> None:
    # Also pins the pairing: resampling the two arms independently would mix prompts 1.0 apart.
    low, high = paired_bootstrap_ci([1.0, 2.0, 3.0], [1.5, 2.5, 3.5], seed=0, resamples=100)
    assert low == pytest.approx(0.5)
    assert high == pytest.approx(0.5)


def test_bootstrap_of_one_prompt_is_its_delta() -> None:
    assert paired_bootstrap_ci([2.0], [4.5], seed=0) == (2.5, 2.5)


def test_bootstrap_is_the_percentile_interval_of_resampled_prompt_means() -> None:
    """The interval by hand: resample prompt indices from default_rng(seed), as the project did
    before scipy; scipy draws the same indices, and its quantile and mean round differently in
    the last bits only, hence the 1e-12 tolerance."""
    baseline, finetuned = _shifted(n=37)
    deltas = np.subtract(finetuned, baseline)
    indices = np.random.default_rng(5).integers(0, len(deltas), size=(3000, len(deltas)))
    expected = np.quantile(deltas[indices].mean(axis=1), [0.05, 0.95])
    interval = paired_bootstrap_ci(baseline, finetuned, seed=5, resamples=3000, confidence=0.9)
    assert interval == pytest.approx(tuple(expected), abs=1e-12)


def test_wider_confidence_gives_a_wider_interval() -> None:
    baseline, finetuned = _shifted()
    low90, high90 = paired_bootstrap_ci(baseline, finetuned, seed=3, confidence=0.90)
    low99, high99 = paired_bootstrap_ci(baseline, finetuned, seed=3, confidence=0.99)
    assert low99 < low90 and high90 < high99


@pytest.mark.parametrize(
    ("baseline", "finetuned", "kwargs", "message"),
    [
        ([1.0, 2.0], [1.0], {}, "equal lengths"),
        ([], [], {}, "empty"),
        ([1.0, float("nan")], [1.0, 2.0], {}, "NaN"),
        ([1.0], [2.0], {"confidence": 1.0}, "confidence"),
        ([1.0], [2.0], {"confidence": 0.0}, "confidence"),
        ([1.0], [2.0], {"resamples": 0}, "resamples"),
    ],
)
def test_bootstrap_rejects_bad_input(
    baseline: list[float], finetuned: list[float], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        paired_bootstrap_ci(baseline, finetuned, seed=0, **kwargs)


def test_outcome_fractions_count_each_prompt_once() -> None:
    fractions = outcome_fractions([1.0, 2.0, 3.0, 4.0], [2.0, 2.0 + 1e-12, 2.0, 5.0])
    assert fractions == {
        "improved_fraction": 0.5,
        "tied_fraction": 0.25,
        "worsened_fraction": 0.25,
    }


def test_outcome_fractions_sum_to_one() -> None:
    baseline, finetuned = _shifted(n=37)
    fractions = outcome_fractions(baseline, finetuned)
    assert sum(fractions.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="equal lengths"):
        outcome_fractions([1.0], [])


def test_delta_summary_combines_and_rounds() -> None:
    baseline_scores = [2.0, 3.0, 1.0, 4.0, 2.5]
    finetuned_scores = [3.0, 3.0, 4.0, 3.0, 4.123456]
    baseline_safe = [False, True, False, True, False]
    finetuned_safe = [True, True, True, False, True]
    summary = delta_summary(
        baseline_scores, finetuned_scores, baseline_safe, finetuned_safe, seed=0, resamples=500
    )
    assert summary["n"] == 5
    assert summary["delta_mean"] == round((1 + 0 + 3 - 1 + 1.623456) / 5, 4)
    assert summary["delta_safe_rate"] == 0.4  # 4/5 safe vs 2/5 safe
    assert (summary["safe_to_unsafe"], summary["unsafe_to_safe"]) == (1, 3)
    assert summary["mcnemar_p"] == 0.625  # b=1, c=3: 2 * (1 + 4) / 16
    fractions = (
        summary["improved_fraction"],
        summary["tied_fraction"],
        summary["worsened_fraction"],
    )
    assert fractions == (0.6, 0.2, 0.2)
    low, high = summary["delta_mean_ci"]
    assert low <= summary["delta_mean"] <= high
    assert low == round(low, 4) and high == round(high, 4)
    low, high = summary["delta_safe_rate_ci"]
    assert -1.0 <= low <= summary["delta_safe_rate"] <= high <= 1.0


def test_delta_summary_keeps_small_p_values_readable() -> None:
    baseline_safe, finetuned_safe = _discordant(0, 20)
    scores = [1.0] * 20
    summary = delta_summary(scores, scores, baseline_safe, finetuned_safe, seed=0, resamples=10)
    assert summary["mcnemar_p"] == float(f"{2 / 2**20:.4g}")
    assert summary["mcnemar_p"] > 0.0


def test_delta_summary_rejects_mismatched_flags() -> None:
    with pytest.raises(ValueError, match="safe flags"):
        delta_summary([1.0, 2.0], [1.0, 2.0], [True], [True], seed=0)
    with pytest.raises(ValueError, match="equal lengths"):
        delta_summary([1.0, 2.0], [1.0, 2.0], [True, False], [True], seed=0)
