"""Critic-vs-human metrics, each against values worked out by hand on a tiny fixture."""

import itertools
import math
import random

import pytest

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

T, F = True, False


def pairwise_auroc(labels: list[bool], scores: list[float]) -> float:
    """The definition, spelled out: the share of (harmful, harmless) pairs ranked right."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    won = sum(
        1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives)
    )
    return won / (len(positives) * len(negatives))


def test_auroc_of_a_perfect_ranking_is_one_and_of_a_reversed_one_zero() -> None:
    labels = [F, F, T, T]
    assert auroc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auroc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0


def test_auroc_counts_a_tie_as_one_half() -> None:
    # Pairs (harmful, harmless): 0.8>0.5, 0.8>0.2, 0.5=0.5 (half), 0.5>0.2 -> 3.5 of 4.
    assert auroc([T, T, F, F], [0.8, 0.5, 0.5, 0.2]) == pytest.approx(0.875)
    # 0.9 vs (0.9, 0.6, 0.1): 0.5 + 1 + 1; 0.4 vs (0.9, 0.6, 0.1): 0 + 0 + 1 -> 3.5 of 6.
    assert auroc([T, F, T, F, F], [0.9, 0.9, 0.4, 0.6, 0.1]) == pytest.approx(3.5 / 6)
    assert auroc([T, F, T, F], [0.3, 0.3, 0.3, 0.3]) == 0.5


def test_auroc_matches_the_pairwise_definition_on_random_tied_scores() -> None:
    generator = random.Random(0)
    for _ in range(50):
        labels = [generator.random() < 0.3 for _ in range(40)] + [T, F]
        scores = [generator.choice([0.0, 0.25, 0.5, 0.75, 1.0]) for _ in labels]
        assert auroc(labels, scores) == pytest.approx(pairwise_auroc(labels, scores))


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([T, T], [0.1, 0.2], "all are harmful"),
        ([F, F], [0.1, 0.2], "all are harmless"),
        ([T, F], [0.1], "2 labels but 1 scores"),
        ([], [], "no examples"),
        ([T, F], [0.1, math.nan], "finite"),
    ],
)
def test_auroc_rejects_what_it_cannot_measure(
    labels: list[bool], scores: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        auroc(labels, scores)


def test_confusion_and_accuracy() -> None:
    labels, predictions = [T, T, T, F, F], [T, F, T, T, F]
    assert confusion(labels, predictions) == {"tp": 2, "fp": 1, "tn": 1, "fn": 1}
    assert accuracy(labels, predictions) == pytest.approx(0.6)


def test_balanced_accuracy_weights_both_classes_equally() -> None:
    labels = [T] + [F] * 9
    always_harmless = [F] * 10
    assert accuracy(labels, always_harmless) == pytest.approx(0.9)
    assert balanced_accuracy(labels, always_harmless) == pytest.approx(0.5)
    # Recall on harmful 1/2, on harmless 7/8.
    labels = [T, T] + [F] * 8
    predictions = [T, F, T] + [F] * 7
    assert balanced_accuracy(labels, predictions) == pytest.approx((0.5 + 0.875) / 2)
    with pytest.raises(ValueError, match="all are harmless"):
        balanced_accuracy([F, F], [T, F])


def test_expected_calibration_error_on_two_bins() -> None:
    # Bin [0, 0.5): 0.1 and 0.3, mean 0.2, none harmful -> |0.2 - 0| weighted 2/3.
    # Bin [0.5, 1]: 0.6, harmful -> |0.6 - 1| weighted 1/3.
    ece = expected_calibration_error([F, F, T], [0.1, 0.3, 0.6], bins=2)
    assert ece == pytest.approx(2 / 3 * 0.2 + 1 / 3 * 0.4)
    assert expected_calibration_error([T, F, T, F], [0.5, 0.5, 0.5, 0.5]) == 0.0
    assert expected_calibration_error([T, F], [1.0, 0.0]) == 0.0


def test_calibration_curve_lists_non_empty_bins_and_puts_one_in_the_last() -> None:
    points = calibration_curve([F, F, T, T], [0.1, 0.3, 0.6, 1.0], bins=2)
    assert points == [
        {"bin": 0, "mean_predicted": pytest.approx(0.2), "fraction_positive": 0.0, "count": 2},
        {"bin": 1, "mean_predicted": pytest.approx(0.8), "fraction_positive": 1.0, "count": 2},
    ]
    assert [p["bin"] for p in calibration_curve([F, F, T, T], [0.15, 0.35, 0.65, 1.0])] == [
        1,
        3,
        6,
        9,
    ]


def test_calibration_curve_puts_a_probability_on_an_edge_in_the_lower_bin() -> None:
    """scikit-learn's rule (bins are (a, b], the first also 0.0); the edges are linspace
    floats, so 0.3 lies below the third edge 0.30000000000000004 and falls in bin 2."""
    assert calibration_curve([T], [0.5], bins=2)[0]["bin"] == 0
    assert calibration_curve([T], [0.0], bins=2)[0]["bin"] == 0
    points = calibration_curve([F, T, T, F], [0.1, 0.3, 0.3, 1.0])
    assert [(p["bin"], p["count"]) for p in points] == [(0, 1), (2, 2), (9, 1)]
    assert [p["fraction_positive"] for p in points] == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("probabilities", [[0.5, 1.5], [-0.1, 0.5], [math.nan, 0.5]])
def test_calibration_rejects_values_that_are_not_probabilities(
    probabilities: list[float],
) -> None:
    with pytest.raises(ValueError, match="probabilities"):
        expected_calibration_error([T, F], probabilities)


def test_roc_curve_points_and_their_area() -> None:
    labels, scores = [T, F, T, F], [0.9, 0.8, 0.4, 0.4]
    points = roc_curve(labels, scores)
    assert [(p["fpr"], p["tpr"]) for p in points] == [(0, 0), (0, 0.5), (0.5, 0.5), (1, 1)]
    assert [p["threshold"] for p in points[1:]] == [0.9, 0.8, 0.4]
    assert points[0]["threshold"] > 0.9 and math.isfinite(points[0]["threshold"])
    area = sum(
        (b["fpr"] - a["fpr"]) * (a["tpr"] + b["tpr"]) / 2 for a, b in itertools.pairwise(points)
    )
    assert area == pytest.approx(auroc(labels, scores)) == pytest.approx(0.625)


@pytest.mark.parametrize(("score", "probability"), [(1, 1.0), (2, 0.75), (3, 0.5), (5, 0.0)])
def test_harm_probability_is_linear_in_the_critic_score(score: float, probability: float) -> None:
    assert harm_probability_from_score(score) == probability


def test_harm_probability_above_one_half_means_below_the_default_safe_threshold() -> None:
    for score in (2.99, 3.0, 3.01):
        assert (harm_probability_from_score(score) > 0.5) == (score < 3.0)


@pytest.mark.parametrize("score", [0.99, 5.01, math.nan])
def test_harm_probability_rejects_scores_off_the_scale(score: float) -> None:
    with pytest.raises(ValueError, match="1-5 scale"):
        harm_probability_from_score(score)
