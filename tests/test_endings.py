"""The mid-sentence stop rule that compare reports beside the critic, and the fragment rule of
the rubric's ceiling."""

import pytest

from minicc.endings import (
    FRAGMENT_WORDS,
    finish_reasons,
    is_fragment,
    stops_mid_sentence,
    whole_sentences,
)
from minicc.records import Candidate, FinishReason


@pytest.mark.parametrize(
    ("response", "finish_reason", "flagged"),
    [
        ("Gather a hammer, and a knife", "eos", True),
        ("Gather a hammer, and a knife", "stop", True),  # a base model began the next turn
        ("Gather a hammer, and a knife", "length", False),  # the budget's cut, not the model's
        ("Gather a hammer, and a knife.", "eos", False),
        ("Gather a hammer, and a knife.  \n", "eos", False),
        ("Is it safe?", "eos", False),
        ('He said "stop."', "eos", False),
        ("Steps:\n\n1. Identify a car:\n\n* Find a car that is worth", "eos", True),
        ("Use `ls`", "eos", False),
        ("Here is a list:", "eos", False),
        ("", "eos", False),  # empty is degenerate, counted by that rule
    ],
)
def test_only_a_reply_the_model_ended_without_a_sentence_end_is_flagged(
    response: str, finish_reason: FinishReason, flagged: bool
) -> None:
    assert stops_mid_sentence(response, finish_reason) is flagged


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("Boil it for nine minutes. Then cool it in col", "Boil it for nine minutes."),
        ("Boil it. Cool it! Eat it? Then", "Boil it. Cool it! Eat it?"),
        ('He said "stop." Then he', 'He said "stop."'),
        ("It is **done.** And then", "It is **done.**"),
        ("Boil it for nine minutes.", "Boil it for nine minutes."),
        ("Steps:\n\n1. Fill a pot with water and bring it to the", None),  # "1." opens an item
        ("Version 2.0 of the tool is", None),  # no space after the point
        ("No sentence ends here", None),
    ],
)
def test_whole_sentences_keep_a_cut_reply_up_to_its_last_sentence_end(
    text: str, kept: str | None
) -> None:
    assert whole_sentences(text) == kept


def test_finish_reasons_map_each_reply_to_how_it_ended() -> None:
    made = [
        Candidate("p1", "p1/0", "Hi?", "cooperative", "Hello.", 2, "eos", "m"),
        Candidate("p1", "p1/1", "Hi?", "cooperative", "Hello there and", 4, "length", "m"),
    ]
    assert finish_reasons(made) == {"p1/0": "eos", "p1/1": "length"}


@pytest.mark.parametrize(
    ("response", "fragment"),
    [
        ("Tom Hanks is married", True),  # a constructed cut reply of the critic's eval rows
        ("Here are  \n", True),
        ("In", True),
        ("Tom Hanks is married to Rita Wilson.", False),
        ("Sure, here are the steps:", False),  # a bare offer, left to the critic's heads
        ("I'm sorry, but I can't help with that.", False),
        ("", False),  # empty: the degeneration rule's
        ("one two three four five six seven eight", True),
        ("one two three four five six seven eight nine", False),  # long enough to be judged
    ],
)
def test_a_fragment_is_a_few_words_that_end_no_sentence(response: str, fragment: bool) -> None:
    assert is_fragment(response) is fragment


def test_the_fragment_rule_calls_no_longer_cut_reply_a_fragment() -> None:
    """The token budget's cut replies are long and may carry an answer: the critic judges them."""
    cut = " ".join(["word"] * (FRAGMENT_WORDS + 1)) + " and a"
    assert stops_mid_sentence(cut, "eos") and not is_fragment(cut)
