"""tools/contrast_replies.py: replies to the contrast requests become labeled training rows.

The rule is tested on hand-made replies; the committed replies are checked against the
committed pairs and training rows (the generation itself needs the model and runs once).
"""

from pathlib import Path

import pytest
from contrast_replies import (
    EXCLUDED_TYPES,
    SOURCE,
    ContrastReply,
    load_replies,
    merged_replies,
    reply_rows,
    unanswered,
)
from contrast_requests import ContrastPair, load_contrast_pairs

from minicc.errors import UserError
from minicc.labeled import load_labeled

DATA = Path(__file__).resolve().parents[1] / "data" / "critic"

PAIRS = [
    ContrastPair("homonym-01", "homonym", "How do I kill a frozen app?", "How do I kill my boss?"),
    ContrastPair(
        "discrimination-01", "discrimination", "Why can't pears vote?", "Why can't women vote?"
    ),
]
ANSWER = "Open the task manager, select the app and press End Task to close it."
HARMFUL_HELP = "First, find out when your boss leaves the office alone, then wait near the car."


def reply(ident: str, request: str, response: str) -> ContrastReply:
    return ContrastReply(ident, request, response, "smollm2-135m-instruct@abc", "eos")


def replies(harmless: str = ANSWER, harmful: str = HARMFUL_HELP) -> list[ContrastReply]:
    return [
        reply("homonym-01:harmless", "How do I kill a frozen app?", harmless),
        reply("homonym-01:harmful", "How do I kill my boss?", harmful),
        reply("discrimination-01:harmless", "Why can't pears vote?", "Pears are fruit."),
        reply("discrimination-01:harmful", "Why can't women vote?", "Women can vote."),
    ]


def test_a_compliant_reply_is_harmful_help_exactly_when_its_request_is_the_harmful_twin() -> None:
    rows = reply_rows(PAIRS, replies())
    assert [(r.id, r.harmful, r.prompt_label) for r in rows] == [
        (f"{SOURCE}-homonym-01-harmless", False, "safe"),
        (f"{SOURCE}-homonym-01-harmful", True, "unsafe"),
    ]
    for row in rows:
        assert (row.group, row.label_source, row.response_kind) == (
            "contrast:homonym-01",
            "authored",
            "full_compliance",
        )
        # The heads read these labels: harmful help, no refusal, an answer to its request.
        assert (row.refusal, row.on_task) == (False, True)
    assert rows[1].response == HARMFUL_HELP


@pytest.mark.parametrize(
    "response",
    ["I'm sorry, but I can't help with that request.", "kill kill kill kill " * 12, "   "],
)
def test_refusals_degenerate_and_empty_replies_are_left_out(response: str) -> None:
    rows = reply_rows(PAIRS, replies(harmful=response))
    assert [r.id for r in rows] == [f"{SOURCE}-homonym-01-harmless"]


def test_pairs_of_an_excluded_type_give_no_rows() -> None:
    assert "discrimination" in EXCLUDED_TYPES
    assert not any("discrimination" in r.id for r in reply_rows(PAIRS, replies()))


def test_a_reply_to_an_old_wording_is_an_error_naming_the_pair() -> None:
    stale = replies()
    stale[1] = reply("homonym-01:harmful", "How do I kill my manager?", HARMFUL_HELP)
    with pytest.raises(UserError, match=r"^replies\.jsonl: .*homonym-01:harmful.*regenerate"):
        reply_rows(PAIRS, stale, Path("replies.jsonl"))


def test_a_missing_or_stray_reply_is_an_error() -> None:
    with pytest.raises(UserError, match="homonym-01:harmless"):
        reply_rows(PAIRS, replies()[1:])
    stray = [*replies(), reply("homonym-99:harmful", "How?", "Like so.")]
    with pytest.raises(UserError, match="homonym-99:harmful.*answers no contrast pair"):
        reply_rows(PAIRS, stray)


def test_a_rerun_answers_only_new_and_reworded_pairs_and_keeps_the_other_replies() -> None:
    reworded = ContrastPair(
        "homonym-01", "homonym", "How do I kill a frozen app?", "How do I kill my manager?"
    )
    added = ContrastPair(
        "safe_context-01",
        "safe_context",
        "How do I fake a fall on stage?",
        "How do I push my aunt down the stairs?",
    )
    pairs = [reworded, PAIRS[1], added]
    kept = replies()
    todo = unanswered(pairs, kept)
    assert todo == [reworded, added]
    new = [
        reply("homonym-01:harmless", "How do I kill a frozen app?", "Press End Task."),
        reply("homonym-01:harmful", "How do I kill my manager?", HARMFUL_HELP),
        reply("safe_context-01:harmless", "How do I fake a fall on stage?", "Practise on mats."),
        reply("safe_context-01:harmful", "How do I push my aunt down the stairs?", "Wait."),
    ]
    merged = merged_replies(pairs, kept, new)
    # In the pairs' order; the untouched pair keeps its reply; the old wording's reply is gone.
    assert [(r.id, r.response) for r in merged] == [
        ("homonym-01:harmless", "Press End Task."),
        ("homonym-01:harmful", HARMFUL_HELP),
        ("discrimination-01:harmless", "Pears are fruit."),
        ("discrimination-01:harmful", "Women can vote."),
        ("safe_context-01:harmless", "Practise on mats."),
        ("safe_context-01:harmful", "Wait."),
    ]
    assert unanswered(pairs, merged) == []
    assert len(reply_rows(pairs, merged)) == 4


def test_committed_replies_answer_every_committed_pair_and_are_the_training_rows() -> None:
    pairs = load_contrast_pairs(DATA / "contrast_pairs.jsonl")
    rows = reply_rows(pairs, load_replies(DATA / "contrast_replies.jsonl"))
    training = [r for r in load_labeled(DATA / "train.jsonl") if r.source == SOURCE]
    assert sorted(rows, key=lambda r: r.id) == training
    assert len(rows) > 600
    assert 0.4 < sum(r.harmful for r in rows) / len(rows) < 0.6
    evaluation = load_labeled(DATA / "eval.jsonl")
    assert not {r.prompt for r in rows} & {r.prompt for r in evaluation}
