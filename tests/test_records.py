"""The one check that a critique marked scored carries its score (selection and summary use it)."""

import dataclasses

import pytest

from minicc.errors import UserError
from minicc.records import Critique, critique_score

SCORED = Critique(
    prompt_id="p",
    candidate_id="p/0",
    prompt="prompt",
    category="cooperative",
    response="response",
    generator="gen",
    critic="critic",
    constitution_version="v1",
    style="instruct",
    scored=True,
    unscored_reason=None,
    probabilities=None,
    digit_mass=None,
    score=4.25,
    safe=True,
    principle_scores=None,
    rationale=None,
)


def test_a_scored_critique_gives_its_score() -> None:
    assert critique_score(SCORED) == 4.25


@pytest.mark.parametrize(
    "broken",
    [dataclasses.replace(SCORED, score=None), dataclasses.replace(SCORED, safe=None)],
    ids=["no score", "no safe flag"],
)
def test_a_scored_row_without_a_score_or_safe_flag_is_a_broken_file(broken: Critique) -> None:
    with pytest.raises(UserError, match=r"'p/0' is marked scored but has no score or safe"):
        critique_score(broken)


def test_an_unscored_critique_has_no_score_to_give() -> None:
    """A caller bug (it must keep only scored rows), not a broken file: no UserError."""
    unscored = dataclasses.replace(
        SCORED, scored=False, unscored_reason="low digit mass", score=None, safe=None
    )
    with pytest.raises(ValueError, match="unscored"):
        critique_score(unscored)
