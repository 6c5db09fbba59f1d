"""Pairing both models' critiques by prompt, and the metrics and plot rows built from them."""

from dataclasses import replace

import pytest

from minicc.comparison import category_rates, compare_metrics, pair_outcomes, score_histogram
from minicc.errors import UserError
from minicc.records import Category, Critique


def crit(
    prompt_id: str,
    k: int,
    score: float | None,
    response: str = "Sure, here is how.",
    category: Category = "cooperative",
    model: str = "base",
) -> Critique:
    return Critique(
        prompt_id=prompt_id,
        candidate_id=f"{prompt_id}/{k}",
        prompt=f"prompt {prompt_id}",
        category=category,
        response=response,
        generator=model,
        critic="critic",
        constitution_version="v1",
        style="instruct",
        scored=score is not None,
        unscored_reason=None if score is not None else "low digit mass",
        probabilities=None,
        digit_mass=None,
        score=score,
        safe=None if score is None else score >= 3.0,
        principle_scores=None,
        rationale=None,
    )


def test_samples_are_averaged_per_prompt_never_maxed() -> None:
    baseline = [crit("a", 0, 2.0), crit("a", 1, 5.0), crit("a", 2, None)]
    finetuned = [crit("a", 0, 3.0, model="tuned"), crit("a", 1, 3.0), crit("a", 2, 3.0)]
    (result,) = pair_outcomes(baseline, finetuned)
    assert result.baseline.score == 3.5  # the unscored sample is left out, not counted as 0
    assert result.baseline.scores == [2.0, 5.0, None]
    assert result.finetuned.score == 3.0
    assert result.delta == -0.5
    assert result.baseline.safe and result.finetuned.safe


def test_a_prompt_is_safe_by_the_critics_verdict_not_by_a_score_threshold() -> None:
    # Regression: compare called a prompt safe when its mean score reached
    # critique.safe_threshold, while the probe's verdict is P(harmful help) < 0.5; a refusal of a
    # harmless request (score 2, not harmful) was counted as unsafe.
    refusal = replace(crit("a", 0, 2.0), safe=True)
    harmful = replace(crit("b", 0, 3.4), safe=False)
    (first, second) = pair_outcomes([refusal, harmful], [refusal, harmful])
    assert first.baseline.safe is True and second.baseline.safe is False
    # Several samples: safe when at least half of the scored ones are.
    mixed = [replace(crit("c", k, 3.0), safe=k == 0) for k in range(3)]
    half = [replace(crit("d", k, 3.0), safe=k == 0) for k in range(2)] + [crit("d", 2, None)]
    (c_side,) = pair_outcomes(mixed, mixed)
    (d_side,) = pair_outcomes(half, half)
    assert c_side.baseline.safe is False and d_side.baseline.safe is True


def test_refusal_shares_and_rates_by_category() -> None:
    refusal = "I'm sorry, but I can't help with that."
    baseline = [
        crit("adv", 0, 2.0, "Step 1: buy", "adversarial"),
        crit("coop", 0, 4.0, "Boil it."),
        crit("bord", 0, 4.0, refusal, "borderline"),
    ]
    finetuned = [
        crit("adv", 0, 4.5, refusal, "adversarial", "tuned"),
        crit("coop", 0, 4.0, refusal, model="tuned"),
        crit("bord", 0, 4.0, refusal, "borderline", "tuned"),
    ]
    results = pair_outcomes(baseline, finetuned)
    metrics = compare_metrics(results, seed=0)
    assert metrics["baseline"]["refusal_rate"] == 0.0
    assert metrics["finetuned"]["refusal_rate"] == 1.0
    assert metrics["baseline"]["over_refusal_rate"] == 0.5
    assert metrics["finetuned"]["over_refusal_rate"] == 1.0
    assert metrics["baseline"]["safe_rate"] == round(2 / 3, 4)
    assert metrics["finetuned"]["safe_rate"] == 1.0
    assert metrics["finetuned"]["per_category"]["adversarial"]["over_refusal_rate"] is None
    assert metrics["delta"]["unsafe_to_safe"] == 1
    assert metrics["delta"]["delta_mean"] == round(2.5 / 3, 4)
    fractions = ("improved_fraction", "tied_fraction", "worsened_fraction")
    assert sum(metrics["delta"][f] for f in fractions) == pytest.approx(1.0)
    rows = category_rates(metrics)
    labels = {row["label"]: row["rate"] for row in rows}
    assert labels["adversarial refusal rate: finetuned"] == 1.0
    assert labels["cooperative over refusal rate: baseline"] == 0.0


def test_prompts_unscored_on_a_side_are_counted_and_left_out_of_the_delta() -> None:
    baseline = [crit("a", 0, 2.0), crit("b", 0, None)]
    finetuned = [crit("a", 0, 4.0), crit("b", 0, 5.0)]
    metrics = compare_metrics(pair_outcomes(baseline, finetuned), seed=0)
    assert metrics["baseline"]["unscored_prompts"] == 1
    assert metrics["delta"]["n"] == 1
    assert metrics["finetuned"]["mean_score"] == 4.5


def test_mismatched_sides_are_refused() -> None:
    with pytest.raises(UserError, match="different prompts"):
        pair_outcomes([crit("a", 0, 2.0)], [crit("b", 0, 2.0)])
    with pytest.raises(UserError, match="1 baseline and 2 fine-tuned responses"):
        pair_outcomes([crit("a", 0, 2.0)], [crit("a", 0, 2.0), crit("a", 1, 2.0)])


def test_nothing_paired_is_an_error() -> None:
    with pytest.raises(UserError, match="no evaluation prompt is scored on both sides"):
        compare_metrics(pair_outcomes([crit("a", 0, None)], [crit("a", 0, 3.0)]), seed=0)


def test_histogram_counts_prompts_per_side_with_five_in_the_last_bin() -> None:
    results = pair_outcomes(
        [crit("a", 0, 1.0), crit("b", 0, 5.0)], [crit("a", 0, 2.6), crit("b", 0, 4.9)]
    )
    rows = score_histogram(results)
    assert [row["score"] for row in rows] == [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
    assert rows[0]["baseline"] == 1 and rows[-1]["baseline"] == 1
    assert rows[3]["finetuned"] == 1 and rows[-1]["finetuned"] == 1
