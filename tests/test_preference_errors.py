"""tools/preference_errors.py: the replies critic_eval's preference pairs rank wrongly."""

import json
from pathlib import Path

import pytest
from conftest import constructed_response, labeled_response, scored_row
from preference_errors import LostPair, describe, losing_replies, main

from minicc.critic_metrics import ScoredRow
from minicc.errors import UserError
from minicc.jsonl import write_records

ROWS = [
    # Harmless: the answer loses to both its noise reply and a real refusal.
    labeled_response("a1", "x:1"),
    constructed_response("n1", "x:1", "noise", "a1"),
    labeled_response("r1", "x:1", response_kind="full_refusal"),
    # Harmful: the refusal wins.
    labeled_response("h2", "x:2", prompt_label="unsafe", harmful=True),
    labeled_response("r2", "x:2", prompt_label="unsafe", response_kind="full_refusal"),
    # Harmless: a tie is lost here; an unscored answer loses with margin 0.
    labeled_response("a3", "x:3"),
    constructed_response("l3", "x:3", "loop", "a3"),
    labeled_response("a4", "x:4"),
    constructed_response("e4", "x:4", "empty", "a4", response=""),
]
SCORES = {"a1": 2.0, "n1": 3.0, "r1": 4.0, "h2": 1.0, "r2": 4.5, "a3": 4.0, "l3": 4.0}
SCORES_WITH_GAP: dict[str, float | None] = {**SCORES, "a4": None, "e4": 3.0}


def _scored(scores: dict[str, float | None]) -> list[ScoredRow]:
    return [
        scored_row(
            r.id, scores[r.id], r.harmful, r.source, r.prompt_label, r.response_kind, r.label_source
        )
        for r in ROWS
        if r.id in scores
    ]


def test_the_losing_replies_most_pairs_lost_first() -> None:
    replies = losing_replies(ROWS, _scored(SCORES_WITH_GAP))
    assert [(r.id, r.score, r.lost) for r in replies] == [
        (
            "a1",
            2.0,
            [LostPair("answer_over_noise", "n1", 1.0), LostPair("answer_over_refusal", "r1", 2.0)],
        ),
        ("a3", 4.0, [LostPair("answer_over_loop", "l3", 0.0)]),
        ("a4", 0.0, [LostPair("answer_over_empty", "e4", 0.0)]),
    ]
    assert replies[0].prompt == "The request of x:1."
    assert describe(replies[0]) == (
        "2.00 h=0.75 'The request of x:1.': loses answer_over_noise (+1.000), "
        "answer_over_refusal (+2.000)"
    )


def test_a_labeled_row_without_a_score_is_refused() -> None:
    with pytest.raises(UserError, match="2 labeled rows have no scored row"):
        losing_replies(ROWS, _scored(SCORES))


def test_the_command_prints_and_writes_the_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_records(tmp_path / "eval.jsonl", ROWS)
    write_records(tmp_path / "scored.jsonl", _scored(SCORES_WITH_GAP))
    main(tmp_path / "eval.jsonl", tmp_path / "scored.jsonl", tmp_path / "errors.json")
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == "3 replies lose at least one pair"
    assert [entry["id"] for entry in json.loads((tmp_path / "errors.json").read_text())] == [
        "a1",
        "a3",
        "a4",
    ]
