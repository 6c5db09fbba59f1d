"""SFT examples from selected samples, and the grouped train/val split that never leaks a prompt."""

import random
from dataclasses import replace

import pytest

from minicc.errors import UserError
from minicc.params import CutReplies, SftParams
from minicc.records import Category, FinishReason, PreferencePair, Selected
from minicc.sft import (
    OFF_TOPIC,
    REFUSES_A_HARMLESS_REQUEST,
    SftExample,
    build_sft_examples,
    category_counts,
    ending_counts,
    grouped_split,
    refusal_pairs,
    select_pair_turns,
    split_by_prompt,
)


def _selected(
    prompt_id: str,
    k: int,
    score: float,
    role: str = "chosen",
    category: Category = "cooperative",
    response: str | None = None,
) -> Selected:
    return Selected(
        prompt_id=prompt_id,
        candidate_id=f"{prompt_id}/{k}",
        prompt=f"prompt of {prompt_id}",
        category=category,
        response=response if response is not None else f"response {k} to {prompt_id}",
        score=score,
        safe=score >= 3.0,
        role=role,  # type: ignore[arg-type]
        policy="margin",
    )


def _ended(selected: list[Selected], how: FinishReason = "eos") -> dict[str, FinishReason]:
    return {sample.candidate_id: how for sample in selected}


def _params(
    min_score: float = 1.0, trim_refusals: bool = False, cut_replies: CutReplies = "sentence"
) -> SftParams:
    return SftParams(min_score, 0.1, trim_refusals, cut_replies, "none")


def test_only_chosen_samples_at_or_above_min_score_become_examples() -> None:
    selected = [
        _selected("p1", 0, 4.5),
        _selected("p1", 1, 1.2, role="rejected"),
        _selected("p2", 0, 3.9),  # below min_score
        _selected("p3", 0, 4.0),  # exactly min_score: kept
        _selected("p4", 0, 5.0, role="rejected"),  # high score but rejected
    ]
    examples = build_sft_examples(selected, _params(min_score=4.0), _ended(selected))
    assert [e.candidate_id for e in examples] == ["p1/0", "p3/0"]
    assert [e.score for e in examples] == [4.5, 4.0]


def test_messages_are_a_user_turn_then_an_assistant_turn() -> None:
    selected = [_selected("p1", 2, 4.5, category="borderline")]
    (example,) = build_sft_examples(selected, _params(), _ended(selected))
    assert example == SftExample(
        prompt_id="p1",
        category="borderline",
        messages=[
            {"role": "user", "content": "prompt of p1"},
            {"role": "assistant", "content": "response 2 to p1"},
        ],
        score=4.5,
        candidate_id="p1/2",
        finish_reason="eos",
        trimmed=None,
        ends_turn=True,
    )


REFUSAL = "I'm sorry, but I can't help with that request. The answer is not a lie."
ANSWER = "Boil it for nine minutes. Then cool it in cold water."


@pytest.mark.parametrize("trim_refusals", [True, False])
def test_trim_refusals_cuts_a_refusal_after_its_refusing_sentence(trim_refusals: bool) -> None:
    selected = [
        _selected("a1", 0, 4.8, category="adversarial", response=REFUSAL),
        _selected("c1", 0, 4.6, response=ANSWER),
    ]
    examples = build_sft_examples(selected, _params(trim_refusals=trim_refusals), _ended(selected))
    refusal, answer = examples
    expected = "I'm sorry, but I can't help with that request." if trim_refusals else REFUSAL
    assert refusal.messages[1]["content"] == expected
    assert refusal.score == 4.8 and refusal.candidate_id == "a1/0"
    assert refusal.trimmed == ("refusal" if trim_refusals else None)
    assert answer.messages[1]["content"] == ANSWER and answer.trimmed is None
    assert ending_counts(examples)["refusals_trimmed"] == (1 if trim_refusals else 0)


CUT = "Boil it for nine minutes. Then cool it in col"
NO_SENTENCE = "Steps:\n\n1. Fill a pot with water and bring it to the"


@pytest.mark.parametrize(
    ("response", "how", "cut_replies", "turn", "trimmed", "ends_turn"),
    [
        (CUT, "eos", "sentence", CUT, None, True),  # the model ended it: kept as it is
        (CUT, "stop", "open", CUT, None, True),
        (CUT, "length", "whole", CUT, None, True),  # teaches a stop mid-sentence
        (CUT, "length", "open", CUT, None, False),
        (CUT, "length", "sentence", "Boil it for nine minutes.", "sentence", True),
        (NO_SENTENCE, "length", "sentence", NO_SENTENCE, None, False),  # nothing whole to keep
        (
            REFUSAL + " I am",
            "length",
            "open",
            "I'm sorry, but I can't help with that request.",
            "refusal",
            True,
        ),  # trimmed after the refusal: a whole turn however it ended
    ],
)
def test_a_reply_the_token_budget_cut_trains_as_cut_replies_says(
    response: str,
    how: FinishReason,
    cut_replies: CutReplies,
    turn: str,
    trimmed: str | None,
    ends_turn: bool,
) -> None:
    selected = [_selected("a1", 0, 4.8, category="adversarial", response=response)]
    params = _params(trim_refusals=True, cut_replies=cut_replies)
    (example,) = build_sft_examples(selected, params, _ended(selected, how))
    assert example.messages[1]["content"] == turn
    assert (example.finish_reason, example.trimmed, example.ends_turn) == (how, trimmed, ends_turn)


def test_ending_counts_count_each_way_a_turn_was_made() -> None:
    selected = [
        _selected("a1", 0, 4.8, category="adversarial", response=REFUSAL),
        _selected("c1", 0, 4.6, response=CUT),
        _selected("c2", 0, 4.6, response=NO_SENTENCE),
        _selected("c3", 0, 4.6, response=ANSWER),
    ]
    endings = _ended(selected, "length") | {"c3/0": "eos"}
    examples = build_sft_examples(selected, _params(trim_refusals=True), endings)
    assert ending_counts(examples) == {
        "refusals_trimmed": 1,
        "cut_by_token_budget": 3,
        "cut_to_a_sentence": 1,
        "without_end_of_turn": 1,
    }


def test_a_sample_no_reply_file_holds_is_an_error_naming_it() -> None:
    selected = [_selected("p1", 0, 4.5), _selected("p2", 0, 4.5)]
    with pytest.raises(UserError, match=r"'p2/0' is not among the generated replies"):
        build_sft_examples(selected, _params(), _ended(selected[:1]))


def _examples(n_prompts: int, per_prompt: int = 3) -> list[SftExample]:
    selected = [_selected(f"p{i:02d}", k, 4.0) for i in range(n_prompts) for k in range(per_prompt)]
    return build_sft_examples(selected, _params(), _ended(selected))


def _prompt_id(example: SftExample) -> str:
    return example.prompt_id


@pytest.mark.parametrize("val_ratio", [0.1, 0.25, 0.5, 0.9])
def test_grouped_split_never_puts_a_prompt_in_both_parts(val_ratio: float) -> None:
    examples = _examples(20)
    for seed in range(200):
        train, val = grouped_split(examples, _prompt_id, val_ratio, seed)
        train_ids, val_ids = {e.prompt_id for e in train}, {e.prompt_id for e in val}
        assert not train_ids & val_ids
        assert train and val
        assert len(train) + len(val) == len(examples)
        assert len(val_ids) == int(20 * val_ratio + 0.5)


def test_grouped_split_is_deterministic_and_ignores_input_order() -> None:
    examples = _examples(30)
    train, val = grouped_split(examples, _prompt_id, 0.2, seed=5)
    assert grouped_split(examples, _prompt_id, 0.2, seed=5) == (train, val)
    shuffled = examples[:]
    random.Random(0).shuffle(shuffled)
    _, shuffled_val = grouped_split(shuffled, _prompt_id, 0.2, seed=5)
    assert {e.prompt_id for e in shuffled_val} == {e.prompt_id for e in val}
    other_seeds = {
        frozenset(e.prompt_id for e in grouped_split(examples, _prompt_id, 0.2, s)[1])
        for s in range(10)
    }
    assert len(other_seeds) > 1


def test_grouped_split_keeps_input_order_within_each_part() -> None:
    examples = _examples(10)
    train, val = grouped_split(examples, _prompt_id, 0.3, seed=0)
    assert train == [e for e in examples if e in train]
    assert val == [e for e in examples if e in val]


@pytest.mark.parametrize(
    ("n_prompts", "val_ratio", "hint"),
    [
        (1, 0.5, "lower sft.min_score"),
        (0, 0.5, "lower sft.min_score"),
        (4, 0.1, r"set sft.val_ratio between 0.25 and 0.75"),
        (4, 0.9, r"set sft.val_ratio between 0.25 and 0.75"),
    ],
)
def test_too_few_groups_is_an_error_naming_the_params(
    n_prompts: int, val_ratio: float, hint: str
) -> None:
    with pytest.raises(UserError, match=hint) as error:
        grouped_split(_examples(n_prompts), _prompt_id, val_ratio, seed=0)
    message = str(error.value)
    assert f"sft.val_ratio={val_ratio}" in message
    assert "sft.min_score" in message


@pytest.mark.parametrize("val_ratio", [0.0, 1.0, -0.1, 1.5])
def test_val_ratio_must_be_strictly_between_zero_and_one(val_ratio: float) -> None:
    with pytest.raises(UserError, match="sft.val_ratio must be strictly between 0 and 1"):
        grouped_split(_examples(10), _prompt_id, val_ratio, seed=0)


def test_grouped_split_works_on_any_items() -> None:
    pairs = [("a", 1), ("b", 2), ("a", 3), ("c", 4)]
    train, val = grouped_split(pairs, lambda pair: pair[0], 0.34, seed=1)
    assert {p[0] for p in train}.isdisjoint({p[0] for p in val})
    assert len({p[0] for p in val}) == 1


def test_category_counts_list_every_category() -> None:
    selected = [
        _selected("a1", 0, 5.0, category="adversarial"),
        _selected("a2", 0, 5.0, category="adversarial"),
        _selected("c1", 0, 5.0),
    ]
    examples = build_sft_examples(selected, _params(), _ended(selected))
    assert category_counts(examples) == {"adversarial": 2, "borderline": 0, "cooperative": 1}
    assert category_counts([]) == {"adversarial": 0, "borderline": 0, "cooperative": 0}


def _pair(prompt_id: str) -> PreferencePair:
    return PreferencePair(
        prompt=f"prompt of {prompt_id}",
        chosen="good",
        rejected="bad",
        prompt_id=prompt_id,
        category="cooperative",
        chosen_id=f"{prompt_id}/0",
        rejected_id=f"{prompt_id}/1",
        chosen_score=4.5,
        rejected_score=1.5,
    )


@pytest.mark.parametrize("seed", range(20))
def test_examples_and_pairs_of_a_prompt_land_on_the_same_side(seed: int) -> None:
    examples = _examples(12)
    # Pairs for some example prompts, and for prompts whose examples fell below min_score.
    pairs = [_pair(f"p{i:02d}") for i in range(0, 12, 2)] + [_pair("x1"), _pair("x2")]
    split = split_by_prompt(examples, pairs, 0.25, seed)
    train_ids = {e.prompt_id for e in split.train} | {p.prompt_id for p in split.pairs_train}
    val_ids = {e.prompt_id for e in split.val} | {p.prompt_id for p in split.pairs_val}
    assert not train_ids & val_ids
    assert len(split.train) + len(split.val) == len(examples)
    assert len(split.pairs_train) + len(split.pairs_val) == len(pairs)


def test_without_pairs_the_split_is_the_grouped_split() -> None:
    examples = _examples(15)
    split = split_by_prompt(examples, [], 0.2, seed=3)
    assert (split.train, split.val) == grouped_split(examples, _prompt_id, 0.2, seed=3)
    assert split.pairs_train == split.pairs_val == []


def test_an_sft_part_left_empty_is_an_error_naming_the_params() -> None:
    """One example prompt and two pair-only prompts: whichever prompt goes to validation, one
    SFT part is empty."""
    for seed in range(20):
        with pytest.raises(UserError, match="sft.min_score") as error:
            split_by_prompt(_examples(1), [_pair("x1"), _pair("x2")], 0.4, seed)
        assert "sft.val_ratio=0.4" in str(error.value)


def _select_pair(prompt_id: str, chosen: str, rejected: str = "bad") -> PreferencePair:
    return replace(_pair(prompt_id), chosen=chosen, rejected=rejected)


@pytest.mark.parametrize(
    ("chosen", "how", "cut_replies", "turn"),
    [
        (CUT, "eos", "sentence", CUT),  # the model ended it: kept as it is
        (CUT, "length", "sentence", "Boil it for nine minutes."),
        (CUT, "length", "whole", CUT),
        (CUT, "length", "open", None),  # DPO cannot train it without the end of the turn
        (NO_SENTENCE, "length", "sentence", None),
        (REFUSAL, "eos", "sentence", "I'm sorry, but I can't help with that request."),
    ],
)
def test_select_pairs_chosen_reply_is_cut_as_an_sft_example_is(
    chosen: str, how: FinishReason, cut_replies: CutReplies, turn: str | None
) -> None:
    """The chosen reply of a pair trains with the end of the turn (DPO appends it), so it is
    made the turn build_sft_examples makes of it, or the pair is left out."""
    pair = _select_pair("p1", chosen, rejected=CUT)
    params = _params(trim_refusals=True, cut_replies=cut_replies)
    made = select_pair_turns([pair], params, {"p1/0": how, "p1/1": "length"})
    selected = [_selected("p1", 0, 4.5, response=chosen)]
    examples = build_sft_examples(selected, params, _ended(selected, how))
    if turn is None:
        assert (made.pairs, made.chosen_trimmed, made.dropped) == ([], 0, 1)
        assert not examples[0].ends_turn
        return
    (kept,) = made.pairs
    assert kept == replace(pair, chosen=turn)  # rejected, ids and scores as select wrote them
    assert kept.chosen == examples[0].reply
    assert (made.chosen_trimmed, made.dropped) == (int(turn != chosen), 0)


def test_a_pair_whose_chosen_reply_no_file_holds_is_an_error_naming_it() -> None:
    with pytest.raises(UserError, match="'p1/0' is not among the generated replies"):
        select_pair_turns([_select_pair("p1", ANSWER)], _params(), {"p1/1": "eos"})


def _answer_and_refusal_examples() -> list[SftExample]:
    selected = [
        _selected("a1", 0, 4.6, category="adversarial", response=REFUSAL),
        _selected("a2", 0, 4.4, category="adversarial", response="I can't help with that."),
        _selected("b1", 0, 4.8, category="borderline", response=ANSWER),
        _selected("c1", 0, 4.2, category="cooperative", response="Paris is the capital."),
        # A harmless prompt's chosen reply that refuses is no answer: no pair.
        _selected("c2", 0, 3.9, category="cooperative", response="I'm sorry, I can't do that."),
    ]
    return build_sft_examples(selected, _params(trim_refusals=True), _ended(selected))


TAUGHT = {
    "a1/0": "I'm sorry, but I can't help with that request.",
    "a2/0": "I can't help with that.",
}


def test_harmless_refusal_pairs_put_each_harmless_answer_over_a_taught_refusal() -> None:
    examples = _answer_and_refusal_examples()
    pairs = refusal_pairs(examples, 42, "harmless")
    assert [(p.prompt_id, p.chosen_id) for p in pairs] == [("b1", "b1/0"), ("c1", "c1/0")]
    for pair, example in zip(pairs, examples[2:4], strict=True):
        assert pair.prompt == example.messages[0]["content"]
        assert pair.chosen == example.messages[1]["content"]
        assert pair.category == example.category
        assert pair.chosen_score == example.score
        # The rejected side is a refusal example's assistant turn as trained (trimmed).
        assert pair.rejected == TAUGHT[pair.rejected_id]
        assert pair.rejected_score == REFUSES_A_HARMLESS_REQUEST


def test_mirrored_refusal_pairs_add_the_refusal_over_the_answer_under_its_own_prompt() -> None:
    examples = _answer_and_refusal_examples()
    harmless = refusal_pairs(examples, 42, "harmless")
    mirrored = refusal_pairs(examples, 42, "mirrored")
    assert mirrored[0::2] == harmless
    by_id = {e.candidate_id: e for e in examples}
    for answer_pair, mirror in zip(mirrored[0::2], mirrored[1::2], strict=True):
        refusal = by_id[answer_pair.rejected_id]
        assert (mirror.chosen_id, mirror.rejected_id) == (
            refusal.candidate_id,
            answer_pair.chosen_id,
        )
        assert (mirror.prompt_id, mirror.category) == (refusal.prompt_id, "adversarial")
        assert mirror.prompt == refusal.messages[0]["content"]
        assert (mirror.chosen, mirror.rejected) == (answer_pair.rejected, answer_pair.chosen)
        assert (mirror.chosen_score, mirror.rejected_score) == (refusal.score, OFF_TOPIC)


def test_no_refusal_pairs_when_none_are_asked_for() -> None:
    assert refusal_pairs(_answer_and_refusal_examples(), 42, "none") == []


def test_refusal_pairs_draw_per_prompt_whatever_the_order() -> None:
    examples = _answer_and_refusal_examples()
    forward = refusal_pairs(examples, 7, "harmless")
    backward = refusal_pairs(examples[::-1], 7, "harmless")
    assert sorted(forward, key=lambda p: p.prompt_id) == sorted(backward, key=lambda p: p.prompt_id)
    drawn = {
        seed: tuple(p.rejected_id for p in refusal_pairs(examples, seed, "harmless"))
        for seed in range(20)
    }
    # Both refusals are drawn under some seed: the draw is not a fixed pick.
    assert {rejected for pick in drawn.values() for rejected in pick} == {"a1/0", "a2/0"}


def test_refusal_pairs_need_a_refusal_example_and_an_ended_answer() -> None:
    examples = _answer_and_refusal_examples()
    assert refusal_pairs(examples[2:], 42, "mirrored") == []
    cut = [_selected("c3", 0, 4.0, response="Step one is to open the")]
    (open_answer,) = build_sft_examples(cut, _params(), _ended(cut, "length"))
    assert not open_answer.ends_turn
    assert refusal_pairs([*examples[:2], open_answer], 42, "mirrored") == []
