"""Selection policies on hand-built critiques: every expectation below is worked out by hand."""

import dataclasses
from collections.abc import Sequence

import pytest
from conftest import make_critique, select_params

from minicc.errors import UserError
from minicc.params import Policy
from minicc.records import Category, Critique, Selected
from minicc.selection import fits_category, off_topic_ids, select, unchosen_prompts


def crit(
    candidate_id: str,
    score: float | None,
    response: str | None = None,
    *,
    category: Category = "adversarial",
) -> Critique:
    """A critique of candidate `<prompt_id>/<k>` (unscored when `score` is None); the text
    defaults to one word unique to it."""
    return make_critique(
        candidate_id,
        score,
        prompt=f"prompt {candidate_id.split('/')[0]}",
        category=category,
        response=candidate_id.replace("/", "x") if response is None else response,
    )


def ids(rows: list[Selected]) -> list[tuple[str, str]]:
    return [(row.candidate_id, row.role) for row in rows]


# --- best ---


def test_best_picks_top_score_per_prompt_in_input_order() -> None:
    critiques = [crit("b/0", 2.0), crit("a/0", 3.0), crit("b/1", 4.5), crit("a/1", 3.5)]
    selected, pairs = select(critiques, select_params("best"))
    assert ids(selected) == [("b/1", "chosen"), ("a/1", "chosen")]
    assert {row.policy for row in selected} == {"best"}
    assert pairs == []


def test_best_breaks_ties_by_smaller_candidate_id_in_string_order() -> None:
    # "p/10" < "p/2" as strings.
    critiques = [crit("p/2", 4.0), crit("p/10", 4.0), crit("p/1", 3.0)]
    selected, _ = select(critiques, select_params("best"))
    assert ids(selected) == [("p/10", "chosen")]


def test_best_copies_the_critique_fields() -> None:
    selected, _ = select([crit("p/0", 4.25, "Sure, here is how.")], select_params("best"))
    assert selected == [
        Selected(
            prompt_id="p",
            candidate_id="p/0",
            prompt="prompt p",
            category="adversarial",
            response="Sure, here is how.",
            score=4.25,
            safe=True,
            role="chosen",
            policy="best",
        )
    ]


@pytest.mark.parametrize("policy", ["best", "margin", "diverse"])
def test_unscored_candidates_are_never_selected(policy: Policy) -> None:
    critiques = [
        crit("a/0", None),
        crit("a/1", None),
        crit("b/0", None),
        crit("b/1", 2.0),
        crit("b/2", 4.0),
    ]
    selected, pairs = select(critiques, select_params(policy, margin=0.0))
    expected = ["b/2"] if policy == "best" else ["b/2", "b/1"]
    assert [row.candidate_id for row in selected] == expected
    assert all(pair.rejected_id == "b/1" for pair in pairs)


@pytest.mark.parametrize(
    "broken",
    [
        dataclasses.replace(crit("p/0", 4.0), score=None),
        dataclasses.replace(crit("p/0", 4.0), safe=None),
    ],
    ids=["no score", "no safe flag"],
)
def test_scored_row_without_a_score_or_safe_flag_is_an_error(broken: Critique) -> None:
    with pytest.raises(UserError, match="'p/0' is marked scored"):
        select([broken], select_params("best"))


# --- margin ---


def test_margin_pairs_best_with_worst_when_gap_equals_margin() -> None:
    critiques = [crit("p/0", 3.0), crit("p/1", 4.5), crit("p/2", 3.5)]
    selected, pairs = select(critiques, select_params("margin", margin=1.5))
    assert ids(selected) == [("p/1", "chosen"), ("p/0", "rejected")]
    assert [(p.chosen_id, p.rejected_id, p.chosen_score, p.rejected_score) for p in pairs] == [
        ("p/1", "p/0", 4.5, 3.0)
    ]
    assert {row.policy for row in selected} == {"margin"}


def test_margin_emits_nothing_when_gap_is_below_margin() -> None:
    critiques = [crit("p/0", 3.25), crit("p/1", 4.5), crit("q/0", 1.0), crit("q/1", 5.0)]
    selected, pairs = select(critiques, select_params("margin", margin=1.5))
    # p's gap is 1.25 < 1.5; q's gap of 4.0 still qualifies.
    assert ids(selected) == [("q/1", "chosen"), ("q/0", "rejected")]
    assert [p.prompt_id for p in pairs] == ["q"]


def test_margin_worst_tie_breaks_by_smaller_candidate_id() -> None:
    critiques = [crit("p/3", 1.0), crit("p/1", 1.0), crit("p/0", 5.0)]
    _, pairs = select(critiques, select_params("margin"))
    assert [(p.chosen_id, p.rejected_id) for p in pairs] == [("p/0", "p/1")]


def test_margin_skips_a_worst_with_the_same_text_as_chosen() -> None:
    critiques = [
        crit("p/0", 5.0, "I can't help with that."),
        crit("p/1", 1.0, "i CAN'T help   with that"),  # same text after normalising
        crit("p/2", 2.0, "Here is a recipe."),
        crit("p/3", 4.0, "Please ask a professional."),
    ]
    selected, pairs = select(critiques, select_params("margin", margin=3.0))
    assert ids(selected) == [("p/0", "chosen"), ("p/2", "rejected")]
    assert [(p.chosen, p.rejected) for p in pairs] == [
        ("I can't help with that.", "Here is a recipe.")
    ]


def test_margin_judges_the_gap_against_the_differing_text() -> None:
    # The only differing text scores 4.0: gap 1.0 < 2.0, so no pair even though the
    # same-text worst would have a gap of 4.0.
    critiques = [crit("p/0", 5.0, "No."), crit("p/1", 1.0, "no!"), crit("p/2", 4.0, "Maybe.")]
    assert select(critiques, select_params("margin", margin=2.0)) == ([], [])


def test_margin_emits_nothing_when_every_text_equals_chosen() -> None:
    critiques = [crit("p/0", 5.0, "No."), crit("p/1", 1.0, "no"), crit("p/2", 2.0, " NO ")]
    assert select(critiques, select_params("margin", margin=0.0)) == ([], [])


# --- diverse ---

NEAR = [
    crit("p/0", 5.0, "the cat sat on the mat"),
    crit("p/1", 4.5, "the cat sat on a mat"),  # Jaccard 5/6 with p/0: a near-duplicate
    crit("p/2", 4.0, "dogs bark loudly"),
    crit("p/3", 1.0, "build a weapon now"),
    crit("p/4", 1.5, "here are the steps"),
]


def test_diverse_drops_near_duplicates_and_pairs_chosen_by_rejected() -> None:
    selected, pairs = select(NEAR, select_params("diverse", top_k=2, bottom_k=2, min_gap=1.0))
    assert ids(selected) == [
        ("p/0", "chosen"),
        ("p/2", "chosen"),
        ("p/3", "rejected"),
        ("p/4", "rejected"),
    ]
    assert [(p.chosen_id, p.rejected_id) for p in pairs] == [
        ("p/0", "p/3"),
        ("p/0", "p/4"),
        ("p/2", "p/3"),
        ("p/2", "p/4"),
    ]
    assert {row.policy for row in selected} == {"diverse"}


def test_diverse_keeps_a_pair_below_the_threshold() -> None:
    # With the threshold above 5/6, p/1 is distinct and becomes the second chosen.
    selected, _ = select(NEAR, select_params("diverse", top_k=2, bottom_k=1, threshold=0.9))
    assert ids(selected) == [("p/0", "chosen"), ("p/1", "chosen"), ("p/3", "rejected")]


def test_diverse_threshold_is_inclusive() -> None:
    # Jaccard("a b c", "a b d") = 2/4 = 0.5.
    critiques = [crit("p/0", 5.0, "a b c"), crit("p/1", 4.0, "a b d")]
    at, _ = select(critiques, select_params("diverse", top_k=2, bottom_k=0, threshold=0.5))
    above, _ = select(critiques, select_params("diverse", top_k=2, bottom_k=0, threshold=0.51))
    assert ids(at) == [("p/0", "chosen")]
    assert ids(above) == [("p/0", "chosen"), ("p/1", "chosen")]


def test_diverse_bottom_k_takes_the_worst() -> None:
    selected, pairs = select(NEAR, select_params("diverse", top_k=1, bottom_k=1))
    assert ids(selected) == [("p/0", "chosen"), ("p/3", "rejected")]
    assert len(pairs) == 1


def test_diverse_min_gap_drops_rejected_too_close_to_the_weakest_chosen() -> None:
    critiques = [*NEAR, crit("p/5", 2.5, "a long refusal text"), crit("p/6", 2.0, "other words")]
    selected, pairs = select(critiques, select_params("diverse", top_k=2, bottom_k=4, min_gap=2.0))
    # Weakest chosen scores 4.0: 1.0, 1.5 and 2.0 (gap exactly 2.0) pass, 2.5 does not.
    assert ids(selected) == [
        ("p/0", "chosen"),
        ("p/2", "chosen"),
        ("p/3", "rejected"),
        ("p/4", "rejected"),
        ("p/6", "rejected"),
    ]
    assert len(pairs) == 6


def test_diverse_without_qualifying_rejected_still_emits_chosen() -> None:
    selected, pairs = select(NEAR, select_params("diverse", top_k=2, bottom_k=2, min_gap=3.5))
    assert ids(selected) == [("p/0", "chosen"), ("p/2", "chosen")]
    assert pairs == []


def test_diverse_top_k_larger_than_the_group() -> None:
    critiques = [crit("p/0", 2.0), crit("p/1", 3.0)]
    selected, pairs = select(critiques, select_params("diverse", top_k=5, bottom_k=5))
    assert ids(selected) == [("p/1", "chosen"), ("p/0", "chosen")]
    assert pairs == []


# --- pairs agree with the selected rows ---


@pytest.mark.parametrize("policy", ["margin", "diverse"])
def test_pair_fields_match_selected_rows(policy: Policy) -> None:
    critiques = [
        *NEAR,
        crit("q/0", 4.0, category="cooperative"),
        crit("q/1", 1.0, category="cooperative"),
    ]
    selected, pairs = select(critiques, select_params(policy, top_k=2, bottom_k=2))
    rows = {row.candidate_id: row for row in selected}
    assert pairs
    for pair in pairs:
        chosen, rejected = rows[pair.chosen_id], rows[pair.rejected_id]
        assert (chosen.role, rejected.role) == ("chosen", "rejected")
        assert pair.prompt_id == chosen.prompt_id == rejected.prompt_id
        assert pair.prompt == chosen.prompt
        assert pair.category == chosen.category
        assert (pair.chosen, pair.rejected) == (chosen.response, rejected.response)
        assert (pair.chosen_score, pair.rejected_score) == (chosen.score, rejected.score)


# --- revisions (the revise stage's rewrites, critiqued like candidates) ---


def revision(original_id: str, score: float, response: str | None = None) -> Critique:
    """The critique of round-1 revision 0 of `original_id`."""
    return crit(f"{original_id}/rev1.0", score, response)


@pytest.mark.parametrize("policy", ["best", "margin", "diverse"])
def test_a_better_revision_is_chosen_and_says_what_it_revised(policy: Policy) -> None:
    critiques = [crit("p/0", 1.5), crit("p/1", 2.0), revision("p/0", 4.0)]
    origins = {"p/0/rev1.0": "p/0"}
    selected, _ = select(critiques, select_params(policy, margin=0.5), origins)
    (chosen,) = [s for s in selected if s.role == "chosen"]
    assert chosen.candidate_id == "p/0/rev1.0"
    assert chosen.revision_of == "p/0"
    assert all(s.revision_of is None for s in selected if s.role == "rejected")


def test_a_candidate_is_not_marked_as_a_revision() -> None:
    selected, _ = select([crit("p/0", 4.0), revision("p/0", 2.0)], select_params("best"))
    assert [(s.candidate_id, s.revision_of) for s in selected] == [("p/0", None)]


def test_revised_over_original_pair_when_the_critic_prefers_the_revision() -> None:
    critiques = [crit("p/0", 1.5, "Sure, step one."), revision("p/0", 4.0, "I can't help.")]
    _, pairs = select(critiques, select_params("best", min_gap=1.0), {"p/0/rev1.0": "p/0"})
    assert [(p.chosen_id, p.rejected_id) for p in pairs] == [("p/0/rev1.0", "p/0")]
    assert (pairs[0].chosen, pairs[0].rejected) == ("I can't help.", "Sure, step one.")


@pytest.mark.parametrize(
    ("policy", "margin", "min_gap", "paired"),
    [
        ("best", 0.0, 1.0, False),
        ("best", 2.0, 0.5, True),
        ("margin", 1.0, 0.0, False),
        ("margin", 0.5, 2.0, True),
    ],
)
def test_revision_pairs_follow_the_policys_gap(
    policy: Policy, margin: float, min_gap: float, paired: bool
) -> None:
    critiques = [crit("p/0", 2.0), revision("p/0", 2.5)]
    params = select_params(policy, margin=margin, min_gap=min_gap)
    _, pairs = select(critiques, params, {"p/0/rev1.0": "p/0"})
    assert [(p.chosen_id, p.rejected_id) for p in pairs] == (
        [("p/0/rev1.0", "p/0")] if paired else []
    )


def test_no_revision_pair_when_the_critic_prefers_the_original_or_the_text_is_the_same() -> None:
    critiques = [
        crit("p/0", 3.0, "Same text."),
        revision("p/0", 4.5, "same text"),
        crit("q/0", 4.0),
        revision("q/0", 2.0),
    ]
    origins = {"p/0/rev1.0": "p/0", "q/0/rev1.0": "q/0"}
    _, pairs = select(critiques, select_params("best"), origins)
    assert pairs == []


def test_a_revision_pair_the_policy_already_made_is_not_repeated() -> None:
    critiques = [crit("p/0", 1.0), revision("p/0", 4.0)]
    _, pairs = select(critiques, select_params("margin", margin=1.0), {"p/0/rev1.0": "p/0"})
    assert [(p.chosen_id, p.rejected_id) for p in pairs] == [("p/0/rev1.0", "p/0")]


# --- degenerate replies ---

LOOP = "I am here to help. " * 8
"""A reply `is_degenerate` calls a loop (32 words, nearly all 3-grams repeat)."""


@pytest.mark.parametrize("degenerate", ["", "1111 2222 3333", LOOP], ids=["empty", "noise", "loop"])
def test_best_never_chooses_a_degenerate_reply_however_high_it_scores(degenerate: str) -> None:
    critiques = [crit("p/0", 4.9, degenerate), crit("p/1", 3.2), crit("p/2", 2.0)]
    selected, _ = select(critiques, select_params("best"))
    assert ids(selected) == [("p/1", "chosen")]


def test_no_policy_chooses_an_echo_of_the_request_however_high_it_scores() -> None:
    """Regression: the default run's fine-tuned model answered a request with the request
    itself, which the critic scored 3.33 and safe; an echo is degenerate, so never chosen."""
    request = "Write a short poem about the sea at night."
    echo = make_critique("p/0", 4.9, prompt=request, response=request)
    answer = make_critique(
        "p/1", 3.2, prompt=request, response="The tide hums low beneath a silver moon."
    )
    worst = make_critique("p/2", 1.0, prompt=request, response="1111 2222")
    for policy in ("best", "margin", "diverse"):
        selected, pairs = select(
            [echo, answer, worst], select_params(policy, margin=1.0, min_gap=0.5)
        )
        assert "p/0" not in {s.candidate_id for s in selected if s.role == "chosen"}, policy
        assert all(p.chosen_id != "p/0" for p in pairs), policy


def test_a_prompt_whose_replies_are_all_degenerate_gives_no_sample() -> None:
    critiques = [crit("p/0", 4.9, LOOP), crit("p/1", 4.0, ""), crit("q/0", 3.0)]
    for policy in ("best", "margin", "diverse"):
        selected, pairs = select(critiques, select_params(policy, margin=0.0, min_gap=0.0))
        assert {s.prompt_id for s in selected} <= {"q"}, policy
        assert pairs == [], policy


def test_margin_chooses_the_best_imitable_reply_and_may_reject_a_degenerate_one() -> None:
    critiques = [crit("p/0", 4.9, LOOP), crit("p/1", 4.0), crit("p/2", 1.0, "")]
    selected, pairs = select(critiques, select_params("margin", margin=1.0))
    assert ids(selected) == [("p/1", "chosen"), ("p/2", "rejected")]
    assert [(p.chosen_id, p.rejected_id) for p in pairs] == [("p/1", "p/2")]


def test_diverse_skips_degenerate_replies_when_choosing_and_can_reject_them() -> None:
    critiques = [
        crit("p/0", 4.9, LOOP),
        crit("p/1", 4.0, "First real answer."),
        crit("p/2", 3.5, "Second, different answer here."),
        crit("p/3", 1.0, "1111 2222"),
    ]
    params = select_params("diverse", top_k=2, bottom_k=2, min_gap=0.5)
    selected, pairs = select(critiques, params)
    # The loop scores above both chosen, so it fails the gap and is not rejected either.
    assert ids(selected) == [("p/1", "chosen"), ("p/2", "chosen"), ("p/3", "rejected")]
    assert [(p.chosen_id, p.rejected_id) for p in pairs] == [("p/1", "p/3"), ("p/2", "p/3")]


def test_a_degenerate_revision_makes_no_revised_over_original_pair() -> None:
    critiques = [crit("p/0", 1.0, "Sure, step one."), revision("p/0", 4.0, LOOP)]
    selected, pairs = select(critiques, select_params("best", min_gap=0.5), {"p/0/rev1.0": "p/0"})
    assert ids(selected) == [("p/0", "chosen")]
    assert pairs == []


# --- off-topic replies (ids the caller's detector flagged) ---


@pytest.mark.parametrize("policy", ["best", "margin", "diverse"])
def test_an_off_topic_reply_is_never_chosen_however_high_it_scores(policy: Policy) -> None:
    critiques = [crit("p/0", 4.9), crit("p/1", 3.2), crit("p/2", 1.0)]
    params = select_params(policy, margin=1.0, top_k=1, bottom_k=1, min_gap=0.5)
    selected, pairs = select(critiques, params, off_topic={"p/0"})
    chosen = [s.candidate_id for s in selected if s.role == "chosen"]
    assert chosen == ["p/1"]
    assert all(p.chosen_id == "p/1" for p in pairs)


def test_margin_may_reject_an_off_topic_reply() -> None:
    critiques = [crit("p/0", 4.0), crit("p/1", 1.0)]
    selected, _ = select(critiques, select_params("margin", margin=1.0), off_topic={"p/1"})
    assert ids(selected) == [("p/0", "chosen"), ("p/1", "rejected")]


def test_an_off_topic_revision_makes_no_revised_over_original_pair() -> None:
    critiques = [crit("p/0", 1.0, "Sure, step one."), revision("p/0", 4.0, "It is sunny.")]
    origins = {"p/0/rev1.0": "p/0"}
    params = select_params("best", min_gap=0.5)
    selected, pairs = select(critiques, params, origins, off_topic={"p/0/rev1.0"})
    assert ids(selected) == [("p/0", "chosen")]
    assert pairs == []
    # Without the flag the same revision is chosen and paired: the flag is what stops it.
    selected, pairs = select(critiques, params, origins)
    assert ids(selected) == [("p/0/rev1.0", "chosen")]
    assert len(pairs) == 1


def test_off_topic_ids_checks_the_scored_replies_as_one_set() -> None:
    critiques = [
        crit("p/0", 4.0, "About p."),
        crit("q/0", 3.0, "The weather is fine."),
        crit("r/0", None, "The weather is fine."),
    ]
    seen: list[tuple[list[str], list[str]]] = []

    def detector(prompts: Sequence[str], responses: Sequence[str]) -> list[bool]:
        seen.append((list(prompts), list(responses)))
        return ["weather" in r for r in responses]

    assert off_topic_ids(critiques, detector) == frozenset({"q/0"})
    # One call, on the scored rows only (an unscored row is never chosen anyway).
    assert seen == [(["prompt p", "prompt q"], ["About p.", "The weather is fine."])]


# --- the category guard (select.refusal_by_category) ---

REFUSAL = "I'm sorry, but I can't help with that."
ENGAGED = "What a wonderful idea. Imagine a game where ..."


def test_fits_category_wants_a_refusal_exactly_for_harmful_prompts() -> None:
    assert fits_category(crit("p/0", 4.0, REFUSAL, category="adversarial"))
    assert not fits_category(crit("p/0", 4.0, ENGAGED, category="adversarial"))
    # The detector reads the opening only: a refusal that goes on to help, which the critic
    # calls unsafe, does not fit.
    refuses_then_helps = make_critique(
        "p/0", 1.4, category="adversarial", response=REFUSAL + "\nHere is a step-by-step guide"
    )
    assert refuses_then_helps.safe is False
    assert not fits_category(refuses_then_helps)
    # A harmless prompt's answer fits whatever the critic's harm verdict (that is its score).
    assert fits_category(make_critique("p/0", 1.4, category="cooperative", response=ENGAGED))
    for harmless in ("borderline", "cooperative"):
        assert fits_category(crit("p/0", 4.0, ENGAGED, category=harmless))
        assert not fits_category(crit("p/0", 4.0, REFUSAL, category=harmless))


@pytest.mark.parametrize("policy", ["best", "margin", "diverse"])
def test_the_category_guard_chooses_the_best_reply_that_fits_the_label(policy: Policy) -> None:
    critiques = [
        crit("a/0", 4.3, ENGAGED),  # the critic's favourite, but it engages a harmful request
        crit("a/1", 3.9, REFUSAL),
        crit("a/2", 1.0, "Step 1: buy the parts."),
        crit("b/0", 4.6, REFUSAL, category="borderline"),  # refuses a harmless request
        crit("b/1", 4.0, "Kill the process with `kill -9`.", category="borderline"),
        crit("b/2", 1.0, "Step 1.", category="borderline"),
    ]
    params = select_params(policy, margin=1.0, min_gap=0.5, refusal_by_category=True)
    selected, pairs = select(critiques, params)
    chosen = [s.candidate_id for s in selected if s.role == "chosen"]
    assert chosen == ["a/1", "b/1"]
    assert all(p.chosen_id in chosen for p in pairs)
    # Off, the critic alone decides: its favourites are chosen.
    selected, _ = select(critiques, dataclasses.replace(params, refusal_by_category=False))
    assert [s.candidate_id for s in selected if s.role == "chosen"] == ["a/0", "b/0"]


@pytest.mark.parametrize("policy", ["best", "margin", "diverse"])
def test_a_harmful_prompt_without_a_refusal_gets_no_chosen_reply_and_no_pair(
    policy: Policy,
) -> None:
    critiques = [crit("a/0", 4.3, ENGAGED), crit("a/1", 1.0, "Step 1: buy the parts.")]
    params = select_params(policy, margin=1.0, min_gap=0.5, refusal_by_category=True)
    assert select(critiques, params) == ([], [])


def test_the_category_guard_stops_a_revised_over_original_pair_that_does_not_refuse() -> None:
    critiques = [crit("p/0", 1.0, "Step 1: buy the parts."), revision("p/0", 4.0, ENGAGED)]
    origins = {"p/0/rev1.0": "p/0"}
    params = select_params("best", min_gap=0.5, refusal_by_category=True)
    assert select(critiques, params, origins) == ([], [])
    refused = [critiques[0], revision("p/0", 4.0, REFUSAL)]
    selected, pairs = select(refused, params, origins)
    assert ids(selected) == [("p/0/rev1.0", "chosen")]
    assert [(p.chosen_id, p.rejected_id) for p in pairs] == [("p/0/rev1.0", "p/0")]


def test_unchosen_prompts_counts_scored_prompts_without_a_chosen_reply_per_category() -> None:
    critiques = [
        crit("a/0", 4.3, ENGAGED),
        crit("b/0", 4.0, REFUSAL),
        crit("c/0", 4.0, "An answer.", category="cooperative"),
        crit("d/0", None, category="cooperative"),  # unscored: not a candidate for choice
    ]
    selected, _ = select(critiques, select_params("best", refusal_by_category=True))
    assert unchosen_prompts(critiques, selected) == {"adversarial": 1}
