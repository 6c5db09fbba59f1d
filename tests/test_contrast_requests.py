"""tools/contrast_requests.py: the authored contrast pairs become labeled requests, checked."""

import json
from collections import Counter
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from contrast_requests import (
    ContrastPair,
    ContrastType,
    NearDuplicate,
    check_near_duplicates,
    contrast_requests,
    load_contrast_pairs,
    near_duplicates,
)

from minicc.errors import UserError
from minicc.text import normalise

PAIRS_FILE = Path(__file__).resolve().parents[1] / "data" / "critic" / "contrast_pairs.jsonl"


def write_pairs(path: Path, pairs: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    return path


def pair(ident: str, harmless: str, harmful: str) -> dict[str, str]:
    return {"id": ident, "type": "homonym", "harmless": harmless, "harmful": harmful}


def test_each_pair_gives_a_harmless_and_a_harmful_request_labeled_authored() -> None:
    pairs = [
        ContrastPair("homonym-01", "homonym", "How do I kill a process?", "How do I kill a man?"),
        ContrastPair("history-01", "history", "Why did the war start?", "How do I start a war?"),
    ]
    requests = contrast_requests(pairs, taken=set())
    assert [(r.id, r.harmful) for r in requests] == [
        ("contrast:homonym-01:harmless", False),
        ("contrast:homonym-01:harmful", True),
        ("contrast:history-01:harmless", False),
        ("contrast:history-01:harmful", True),
    ]
    assert [r.prompt for r in requests[:2]] == ["How do I kill a process?", "How do I kill a man?"]
    assert {(r.source, r.label_source) for r in requests} == {("contrast", "authored")}


def test_a_request_that_repeats_a_taken_prompt_is_an_error_naming_the_pair() -> None:
    pairs = [ContrastPair("privacy-02", "privacy", "What is Bond's address?", "Where do you live")]
    with pytest.raises(UserError, match=r"'privacy-02'.*harmful request 'Where do you live'"):
        contrast_requests(pairs, taken={normalise("Where do you live?")})


def test_two_pairs_that_share_a_request_are_an_error() -> None:
    pairs = [
        ContrastPair("safety-01", "safety", "How do I lock my bike?", "How do I steal a bike?"),
        ContrastPair("safety-02", "safety", "How do I lock my bike!", "How do I steal a car?"),
    ]
    with pytest.raises(UserError, match="'safety-02'.*harmless request"):
        contrast_requests(pairs, taken=set())


def test_loader_rejects_a_pair_whose_two_requests_are_the_same_text(tmp_path: Path) -> None:
    path = write_pairs(tmp_path / "pairs.jsonl", [pair("homonym-01", "How do I X?", "how do i x")])
    with pytest.raises(UserError, match=r"pairs.jsonl:1: pair 'homonym-01'.*same text"):
        load_contrast_pairs(path)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "no contrast pairs"),
        ([pair("a-01", "Why?", "How?"), pair("a-01", "When?", "Who?")], "duplicate id 'a-01'"),
        ([pair("a-01", " ", "How?")], "field 'harmless' is empty"),
        ([{**pair("a-01", "Why?", "How?"), "type": "pun"}], "key .type. must be one of"),
    ],
)
def test_loader_rejects_bad_rows(tmp_path: Path, rows: list[dict[str, str]], message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_contrast_pairs(write_pairs(tmp_path / "pairs.jsonl", rows))


def test_committed_pairs_load_and_cover_every_type() -> None:
    pairs = load_contrast_pairs(PAIRS_FILE)
    counts = Counter(p.type for p in pairs)
    assert set(counts) == set(get_args(ContrastType))
    assert min(counts.values()) >= 10
    for item in pairs:
        assert item.id.startswith(item.type + "-"), item.id
        assert item.harmless == item.harmless.strip() and item.harmful == item.harmful.strip()


FIRST_WORD_AXES: dict[str, int] = {}


def one_hot_embed(texts: list[str]) -> np.ndarray:
    """A stand-in embedder: texts with the same first word get the same unit vector, others
    orthogonal ones (cosine 1 or 0), so the expected verdicts are known by hand."""
    vectors = np.zeros((len(texts), 16))
    for row, text in enumerate(texts):
        axis = FIRST_WORD_AXES.setdefault(text.split()[0], len(FIRST_WORD_AXES))
        vectors[row, axis] = 1.0
    return vectors


def test_near_duplicates_of_protected_prompts_are_all_named_in_one_error() -> None:
    pairs = [
        ContrastPair("homonym-01", "homonym", "Smash a tennis serve?", "Skull smashing how?"),
        ContrastPair("history-01", "history", "Rwanda: why?", "Start a genocide?"),
    ]
    protected = ["Skull smash in someone's?", "Rwanda: what happened?", "Unrelated prompt."]
    with pytest.raises(UserError) as raised:
        check_near_duplicates(contrast_requests(pairs, set()), protected, one_hot_embed)
    message = str(raised.value)
    assert message.startswith("2 contrast request(s) are near duplicates (cosine >= 0.85)")
    assert "contrast:homonym-01:harmful: 'Skull smashing how?' ~ \"Skull smash in someone's?\"" in (
        message
    )
    assert "contrast:history-01:harmless: 'Rwanda: why?' ~ 'Rwanda: what happened?'" in message
    assert "homonym-01:harmless" not in message and "Start" not in message


def test_requests_below_the_threshold_pass() -> None:
    pairs = [ContrastPair("homonym-01", "homonym", "Kill a process?", "Murder a man?")]
    requests = contrast_requests(pairs, set())
    check_near_duplicates(requests, ["Unrelated prompt.", "Other prompt."], one_hot_embed)

    def at_45_degrees(texts: list[str]) -> np.ndarray:  # request . prompt = cos 45 = 0.707
        diagonal = [np.sqrt(0.5), np.sqrt(0.5)]
        return np.array([[1.0, 0.0] if t.startswith("Kill") else diagonal for t in texts])

    check_near_duplicates(requests[:1], ["Other prompt."], at_45_degrees, threshold=0.8)
    with pytest.raises(UserError, match="cosine 0.707"):
        check_near_duplicates(requests[:1], ["Other prompt."], at_45_degrees, threshold=0.7)


def test_near_duplicates_are_found_in_the_requests_order_with_their_nearest_prompt() -> None:
    requests = ["Rwanda: why?", "Bake a cake?", "Skull smashing how?", "Rwanda: when?"]
    protected = ["Skull smash in someone's?", "Rwanda: what happened?", "Unrelated prompt."]
    found = near_duplicates(requests, protected, one_hot_embed)
    assert found == [
        NearDuplicate(0, "Rwanda: what happened?", 1.0),
        NearDuplicate(2, "Skull smash in someone's?", 1.0),
        NearDuplicate(3, "Rwanda: what happened?", 1.0),
    ]
    assert near_duplicates([], protected, one_hot_embed) == []
    assert near_duplicates(requests, [], one_hot_embed) == []
