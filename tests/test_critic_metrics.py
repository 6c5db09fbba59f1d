"""The critic report against hand-computed values on small fixtures."""

import pytest
from conftest import constructed_response, labeled_response, make_critique, scored_row

from minicc.critic_metrics import (
    CRITIC_HEADLINE,
    PAIR_TYPES,
    ScoredRow,
    as_candidate,
    critic_headline,
    critic_report,
    curves,
    harm_probability,
    helpfulness_auroc,
    preference_pairs,
    preference_report,
    score_rows,
    separation,
    source_family,
    training_headline,
)
from minicc.errors import UserError
from minicc.records import Critique


def test_separation_hand_computed() -> None:
    # harmful P(harmful) 1, 0.625, 0.25; harmless 0.75, 0.
    labels = [True, True, True, False, False]
    harm = [1.0, 0.625, 0.25, 0.75, 0.0]
    got = separation(labels, harm)
    # Pairs (harmful, harmless) where the harmful one is more likely harmful: (1, .75) (1, 0)
    # (.625, 0) (.25, 0) = 4 of 6; verdicts (P >= 0.5): T T F T F -> tp 2, fn 1, fp 1, tn 1.
    assert got["auroc"] == pytest.approx(4 / 6, abs=1e-4)
    assert got["confusion"] == {"tp": 2, "fp": 1, "tn": 1, "fn": 1}
    assert got["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2, abs=1e-4)
    assert got["accuracy"] == pytest.approx(3 / 5)
    # ECE over 10 bins: every bin holds one row.
    expected_ece = (abs(1 - 1) + abs(0.625 - 1) + abs(0.25 - 1) + abs(0.75 - 0) + 0) / 5
    assert got["ece"] == pytest.approx(expected_ece, abs=1e-4)


def test_separation_counts_the_given_verdicts() -> None:
    # The same probabilities, but the critic's own verdicts flag only the first row.
    got = separation([True, True, False], [1.0, 0.6, 0.7], flagged=[True, False, False])
    assert got["confusion"] == {"tp": 1, "fp": 0, "tn": 1, "fn": 1}
    assert got["auroc"] == pytest.approx(0.5)


def test_one_class_groups_report_null_auroc() -> None:
    got = separation([False, False], [0.25, 0.75])
    assert got["auroc"] is None and got["balanced_accuracy"] is None
    assert got["accuracy"] == 0.5


def test_helpfulness_auroc_rewards_answers_over_refusals() -> None:
    rows = [
        scored_row("a", 5.0, False, "xstest-m", "safe", "full_compliance"),
        scored_row("b", 4.0, False, "xstest-m", "safe", "full_compliance"),
        scored_row("c", 4.0, False, "xstest-m", "safe", "full_refusal"),
        scored_row("d", 2.0, False, "xstest-m", "safe", "partial_refusal"),
        # An unsafe prompt's refusal is not part of the helpfulness question.
        scored_row("e", 5.0, False, "xstest-m", "unsafe", "full_refusal"),
    ]
    # answers 5, 4 vs refusals 4, 2: wins (5>4) (5>2) (4>2) + tie (4,4) = 3.5 of 4.
    assert helpfulness_auroc(rows) == {"helpfulness_auroc": 0.875, "helpfulness_n": 4}


def test_helpfulness_auroc_is_null_without_both_kinds() -> None:
    rows = [scored_row("a", 5.0, False, "xstest-m", "safe", "full_compliance")]
    assert helpfulness_auroc(rows)["helpfulness_auroc"] is None


# --- P(harmful) and scored rows ------------------------------------------------------------------


def critique(
    ident: str, score: float | None, probabilities: list[float] | None, safe: bool | None
) -> Critique:
    return make_critique(
        ident,
        score,
        prompt_id="p",
        prompt="How?",
        category="borderline",
        response="Like so.",
        safe=safe,
        probabilities=probabilities,
    )


def test_harm_probability_is_p1_for_the_probe_and_the_score_rule_for_the_judge() -> None:
    scored = critique("a", 3.2, [0.3, 0.1, 0.1, 0.2, 0.3], True)
    assert harm_probability(scored, "probe") == 0.3
    assert harm_probability(scored, "judge") == pytest.approx((5.0 - 3.2) / 4.0)
    unscored = critique("b", None, None, None)
    assert harm_probability(unscored, "probe") is None
    assert harm_probability(unscored, "judge") is None


def test_score_rows_follow_the_labeled_rows_and_carry_the_verdict() -> None:
    rows = [XSTEST_ANSWER, HARMFUL_HELP]
    critiques = [
        critique(HARMFUL_HELP.id, 2.0, [0.6, 0.1, 0.1, 0.1, 0.1], False),
        critique(XSTEST_ANSWER.id, 4.5, [0.1234567, 0.0, 0.0, 0.2765433, 0.6], True),
    ]
    got = score_rows(rows, critiques, "probe")
    assert [r.id for r in got] == [XSTEST_ANSWER.id, HARMFUL_HELP.id]
    first, second = got
    assert (first.label_source, first.harmful, first.score) == ("human", False, 4.5)
    assert (first.p_harmful, first.flagged) == (0.123457, False)
    assert (second.harmful, second.p_harmful, second.flagged) == (True, 0.6, True)


# --- preference pairs ----------------------------------------------------------------------------


JBB = {"response_kind": "unknown", "label_source": "model"}
XSTEST_ANSWER = labeled_response("a1", "xstest:1")
HARMFUL_HELP = labeled_response("h1", "xstest:2", prompt_label="unsafe", harmful=True)
ROWS = [
    # A harmless request: two real answers, a real refusal, six constructed negatives.
    XSTEST_ANSWER,
    labeled_response("a2", "xstest:1", source="xstest-other"),
    labeled_response("r1", "xstest:1", response_kind="full_refusal"),
    constructed_response("n1", "xstest:1", "noise", "a1"),
    constructed_response("e1", "xstest:1", "empty", "a1", response=""),
    constructed_response("cr1", "xstest:1", "refusal", "a1"),
    constructed_response("m1", "xstest:1", "commentary", "a1"),
    constructed_response("o1", "xstest:1", "offer", "a1"),
    constructed_response("s1", "xstest:1", "restatement", "a1"),
    # A harmful request: harmful help, a real refusal, a constructed one, a comment, an offer, a
    # restatement.
    HARMFUL_HELP,
    labeled_response("rB", "xstest:2", prompt_label="unsafe", response_kind="full_refusal"),
    constructed_response("cB", "xstest:2", "refusal", "h1", prompt_label="unsafe"),
    constructed_response("mB", "xstest:2", "commentary", "h1", prompt_label="unsafe"),
    constructed_response("oB", "xstest:2", "offer", "h1", prompt_label="unsafe"),
    constructed_response("sB", "xstest:2", "restatement", "h1", prompt_label="unsafe"),
    # Another harmless request: its loop pairs with its own answer only.
    labeled_response("a3", "xstest:3"),
    constructed_response("l3", "xstest:3", "loop", "a3"),
    # A model-labeled harmful request: a harmless reply nothing says is a refusal is no pair.
    *(
        labeled_response(
            ident, "jbb:5", source="jbb-m", prompt_label="unsafe", harmful=harmful, **JBB
        )
        for ident, harmful in (("jh", True), ("ju", False))
    ),
]


def test_preference_pairs_of_a_hand_made_set() -> None:
    pairs = preference_pairs(ROWS)
    assert list(pairs) == list(PAIR_TYPES)
    assert {kind: sorted(found) for kind, found in pairs.items()} == {
        "answer_over_noise": [("a1", "n1"), ("a2", "n1")],
        "answer_over_loop": [("a3", "l3")],
        "answer_over_off_topic": [],
        "answer_over_truncated": [],
        "answer_over_empty": [("a1", "e1"), ("a2", "e1")],
        "answer_over_commentary": [("a1", "m1"), ("a2", "m1")],
        "answer_over_offer": [("a1", "o1"), ("a2", "o1")],
        "answer_over_restatement": [("a1", "s1"), ("a2", "s1")],
        "answer_over_refusal": [("a1", "cr1"), ("a1", "r1"), ("a2", "cr1"), ("a2", "r1")],
        # A comment, an offer or a restatement is neither a refusal nor harmful help: on the worse
        # side only.
        "refusal_over_harmful_help": [("cB", "h1"), ("rB", "h1")],
        "refusal_over_commentary": [("cB", "mB"), ("rB", "mB")],
        "refusal_over_offer": [("cB", "oB"), ("rB", "oB")],
        "refusal_over_restatement": [("cB", "sB"), ("rB", "sB")],
    }


SCORES: dict[str, float | None] = {
    "a1": 5.0,
    "a2": None,
    "r1": 4.0,
    "n1": 1.0,
    "e1": None,
    "cr1": 5.0,
    "h1": 2.0,
    "rB": 4.0,
    "cB": None,
    "m1": 3.0,
    "mB": 4.0,
    "o1": 5.0,
    "oB": 3.0,
    "s1": 4.0,
    "sB": 4.0,
    "a3": 4.0,
    "l3": 4.0,
    "jh": 1.5,
    "ju": 3.0,
}


def scored_rows() -> list[ScoredRow]:
    return [
        scored_row(
            r.id, SCORES[r.id], r.harmful, r.source, r.prompt_label, r.response_kind, r.label_source
        )
        for r in ROWS
    ]


def test_preference_report_counts_a_tie_as_half_and_an_unscored_side_as_a_loss() -> None:
    report = preference_report(ROWS, scored_rows())
    assert report == {
        "answer_over_noise": {"accuracy": 0.5, "pairs": 2},  # a1 > n1; a2 unscored
        "answer_over_loop": {"accuracy": 0.5, "pairs": 1},  # a tie
        "answer_over_off_topic": {"accuracy": None, "pairs": 0},
        "answer_over_truncated": {"accuracy": None, "pairs": 0},
        "answer_over_empty": {"accuracy": 0.0, "pairs": 2},  # e1 unscored: both pairs lost
        "answer_over_commentary": {"accuracy": 0.5, "pairs": 2},  # a1 > m1; a2 unscored
        "answer_over_offer": {"accuracy": 0.25, "pairs": 2},  # a1 = o1; a2 unscored
        "answer_over_restatement": {"accuracy": 0.5, "pairs": 2},  # a1 > s1; a2 unscored
        # a1 > r1: 1; a1 = cr1: 0.5; a2 unscored: 0, 0
        "answer_over_refusal": {"accuracy": 0.375, "pairs": 4},
        "refusal_over_harmful_help": {"accuracy": 0.5, "pairs": 2},  # rB > h1; cB unscored
        "refusal_over_commentary": {"accuracy": 0.25, "pairs": 2},  # rB = mB; cB unscored
        "refusal_over_offer": {"accuracy": 0.5, "pairs": 2},  # rB > oB; cB unscored
        "refusal_over_restatement": {"accuracy": 0.25, "pairs": 2},  # rB = sB; cB unscored
    }


# --- the report ----------------------------------------------------------------------------------


def test_report_measures_classification_on_real_replies_only() -> None:
    report = critic_report(ROWS, scored_rows())
    # Real, scored: a1 r1 h1 rB a3 jh ju; P(harmful) 0, .25, .75, .25, .25, .875, .5. The
    # constructed noise n1 (P 1.0, harmless) would pull the AUROC below 1 if it counted.
    assert report["n"] == 7 and report["harmful"] == 2
    assert report["auroc"] == 1.0
    assert report["confusion"] == {"tp": 2, "fp": 0, "tn": 5, "fn": 0}
    assert (report["rows"], report["unscored"]) == (19, 3)
    # Safe prompts, real replies: answers 5 (a1), 4 (a3) over the refusal r1 (4): 1.5 of 2.
    assert (report["helpfulness_auroc"], report["helpfulness_n"]) == (0.75, 3)
    assert report["preference"] == preference_report(ROWS, scored_rows())
    assert {name: group["n"] for name, group in report["per_source"].items()} == {
        "constructed": 9,
        "jbb": 2,
        "xstest": 5,
    }
    assert {name: group["n"] for name, group in report["per_label_source"].items()} == {
        "constructed": 9,
        "human": 5,
        "model": 2,
    }
    assert report["per_source"]["constructed"]["auroc"] is None
    assert report["per_label_source"]["constructed"]["confusion"]["fp"] == 1  # n1


def test_critic_headline_keeps_the_overall_numbers_and_each_pair_kinds_accuracy() -> None:
    report = critic_report(ROWS, scored_rows())
    top = critic_headline({"method": "judge", "critic": "m@1", **report})
    assert list(top) == [*CRITIC_HEADLINE, "preference"]
    assert (top["method"], top["critic"], top["auroc"]) == ("judge", "m@1", 1.0)
    assert top["preference"] == {
        kind: result["accuracy"] for kind, result in report["preference"].items()
    }
    assert top["preference"]["answer_over_refusal"] == 0.375


GROUP = {"n": 4, "harmful": 2, "auroc": 0.75, "balanced_accuracy": 0.5, "accuracy": 0.5}
TRAINING = {
    "method": "probe",
    "n": 4,
    "per_source": {"gptfuzz": 2, "xstest-gpt4": 2},
    "harmful": 2,
    "head_rows": {"response_harmful": 4},
    "layer": 3,
    "train": {"all": {**GROUP, "auroc": 1.0, "ece": 0.1}, "gptfuzz": {**GROUP, "ece": 0.2}},
    "grouped_cv": {"skipped": "fold 0's training part lacks harmful or harmless rows"},
    "leave_source_out": {"gptfuzz": {**GROUP, "ece": 0.3}},
    "feature_seconds": 1.5,
    "fit_seconds": 0.1,
}


def test_training_headline_keeps_the_all_sources_group_or_why_it_was_skipped() -> None:
    top = training_headline(TRAINING)
    assert top == {
        "method": "probe",
        "n": 4,
        "harmful": 2,
        "layer": 3,
        "train": {"auroc": 1.0, "balanced_accuracy": 0.5, "accuracy": 0.5, "ece": 0.1},
        "grouped_cv": {"skipped": "fold 0's training part lacks harmful or harmless rows"},
        "feature_seconds": 1.5,
        "fit_seconds": 0.1,
    }


def test_report_refuses_when_nothing_was_scored() -> None:
    with pytest.raises(UserError, match="scored none"):
        critic_report([HARMFUL_HELP], [scored_row("h1", None, True)])


def test_curves_cover_the_scored_real_rows() -> None:
    rows = [
        scored_row("a", 1.0, True),
        scored_row("b", 5.0, False),
        scored_row("c", 3.0, True),
        scored_row("d", None, False),
        scored_row("e", 1.0, False, "constructed-noise", label_source="constructed"),
    ]
    roc_table, calibration_table = curves(rows)
    assert list(roc_table.columns) == ["fpr", "tpr", "threshold"]
    roc = roc_table.to_dict("records")
    calibration = calibration_table.to_dict("records")
    assert roc[0]["fpr"] == 0.0 and roc[-1] == {"fpr": 1.0, "tpr": 1.0, "threshold": 0.0}
    # Without e, harmful a (P 1.0) and c (P 0.5) both rank above b (P 0): a perfect curve.
    assert {"fpr": 0.0, "tpr": 1.0} in [{"fpr": p["fpr"], "tpr": p["tpr"]} for p in roc]
    assert sum(point["count"] for point in calibration) == 3


def test_labeled_rows_become_candidates_without_their_label() -> None:
    got = as_candidate(XSTEST_ANSWER)
    assert (got.candidate_id, got.prompt_id, got.category, got.response) == (
        "a1",
        "xstest:1",
        "borderline",
        XSTEST_ANSWER.response,
    )
    assert as_candidate(HARMFUL_HELP).category == "adversarial"
    assert source_family("xstest-gpt4") == "xstest"
    assert source_family("constructed-noise") == "constructed"
