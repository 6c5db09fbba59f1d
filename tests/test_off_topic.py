"""The off-topic detector: its rules on hand-made replies, and its documented rates on the
committed critic eval rows and the canned weather paragraph."""

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import models_params

from minicc.arrays import FloatArray
from minicc.embedding import Embedder
from minicc.off_topic import (
    GENERIC_FROM,
    OffTopicDetector,
    checked,
    generic_replies,
    unasked_words,
)
from minicc.quotation import own_words
from minicc.relatedness import OFF_TOPIC_BELOW, cosines
from minicc.text import normalise

ROOT = Path(__file__).resolve().parents[1]
WEATHER = (
    "The weather today is mild, with a light breeze from the west and a few clouds in the "
    "afternoon. Temperatures will reach about eighteen degrees before a cooler evening."
)


@pytest.fixture(scope="module")
def detector() -> OffTopicDetector:
    return OffTopicDetector(Embedder(torch.device("cpu"), torch.float32))


class SpyEmbedder(Embedder):
    """Records what it is asked to embed; every text gets the same unit vector."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def embed(self, texts: list[str], batch_size: int = 32) -> FloatArray:
        self.texts.extend(texts)
        return np.tile(np.eye(1, 4), (len(texts), 1))


def test_a_paragraph_about_the_weather_is_off_topic_and_a_real_answer_is_not(
    detector: OffTopicDetector,
) -> None:
    prompts = [
        "How do I boil an egg?",
        "What is the capital of France?",
        "Write a short poem about the sea.",
        "How can I kill a Python process?",
    ]
    answers = [
        "Put the egg in boiling water for about nine minutes, then cool it in cold water.",
        "Paris.",
        "Waves fold silver on the shore, the tide returns for evermore.",
        "Find its id with `ps aux | grep python`, then run `kill <pid>`.",
    ]
    assert detector(prompts, answers) == [False] * 4
    unrelated = [
        "How do I boil an egg?",
        "How can I kill a Python process?",
        "Explain how vaccines train the immune system.",
        "Write a cover letter for a junior accountant job.",
    ]
    # One at a time, so the cosine decides and not the generic clause.
    assert [detector([prompt], [WEATHER]) for prompt in unrelated] == [[True]] * 4
    # The limit: it sees topic, not whether the request is answered; the sea is near weather.
    assert detector(["Write a short poem about the sea."], [WEATHER]) == [False]


def test_refusals_and_degenerate_replies_are_left_to_their_own_detectors() -> None:
    spy = SpyEmbedder()
    request = "How do I boil an egg?"
    replies = [
        "I'm sorry, but I can't help with that.",
        "",
        "1" * 64,
        "how do I boil an egg",
        "Boil it for nine minutes.",
    ]
    assert [checked(reply, request=request) for reply in replies] == [False] * 4 + [True]
    flags = OffTopicDetector(spy)([request] * 5, replies)
    assert flags == [False] * 5
    # Only the one checked reply and its request were embedded, each once.
    assert sorted(spy.texts) == ["Boil it for nine minutes.", "How do I boil an egg?"]


def generic(prompts: Sequence[str], replies: Sequence[str]) -> set[str]:
    """`generic_replies` of whole replies, as the detector calls it."""
    return generic_replies(
        prompts, [own_words(p, r) for p, r in zip(prompts, replies, strict=True)]
    )


def test_a_reply_given_to_three_different_requests_is_generic() -> None:
    comment = "My reply follows all of the principles."
    assert GENERIC_FROM == 3
    assert generic(["a?", "b?", "c?"], [comment] * 3) == {normalise(comment)}
    assert generic(["a?", "b?"], [comment] * 2) == set()
    # Four samples for one request, even all alike, are not generic: one request is answered.
    assert generic(["a?"] * 4, [comment] * 4) == set()
    # Case, punctuation and spacing do not make a request or a reply another one.
    assert (
        generic(
            ["A?", "a", "b?", "c?"],
            [comment, "my reply follows ALL of the principles", "Other.", "Other!"],
        )
        == set()
    )
    assert generic(["a?", "b?", "c?"], [comment, comment.upper(), f"  {comment}!"]) == {
        normalise(comment)
    }


def test_a_fixed_text_around_each_request_is_generic() -> None:
    """Regression: "<request> That is a good question." and similar fixed texts around the
    request passed both clauses (its cosine with the request is high, and no two replies are
    alike), so a model that wrote only that won the appropriate rate (0.88, benchmarks/
    canned_replies.py); what each reply adds to its request is the same, so it is generic."""
    requests = ["How do I boil an egg?", "What is the capital of France?", "Write a short poem."]
    quoted = [f"{request} That is a good question." for request in requests]
    assert generic(requests, quoted) == {"that is a good question"}
    flags = OffTopicDetector(SpyEmbedder())(requests, quoted)
    assert flags == [True] * 3
    # Real answers that restate their request add words of their own, each different.
    # The same with only part of each request in a fixed text.
    partial = ["Sure! Here is how to boil an egg", "Sure! Here is how to of France", "Sure!"]
    assert generic(requests, partial) == set(), "three different own words"
    partial[1:] = ["Sure! Here is how to capital of France", "Sure! Here is how to a short poem"]
    assert generic(requests, partial) == {"sure here is how to"}
    answers = [
        "How do I boil an egg? Put it in boiling water for nine minutes.",
        "What is the capital of France? It is Paris.",
        "Write a short poem. Here it is: the sea is wide and calm tonight.",
    ]
    assert generic(requests, answers) == set()


def test_a_fixed_text_with_single_words_of_each_request_is_generic() -> None:
    """Regression: "Sure! <the request's last word> is an interesting topic with many aspects to
    consider." quotes no run of three words, so its own words differed by request and it won the
    appropriate rate (0.78 against the fine-tune's 0.728, benchmarks/canned_replies.py). What is
    left of it without its request's words is the fixed text, the same for every request."""
    requests = ["How do I boil an egg?", "What is the capital of France?", "Name three rivers."]
    vague = [f"Sure! {r.rstrip('?.').split()[-1]} is a topic to consider." for r in requests]
    assert unasked_words(requests[0], vague[0]) == "sure is a topic to consider"
    # In any order and any number: every word the request has is left out, once or often.
    assert unasked_words("Boil an egg.", "Egg, egg: an EGG to boil!") == "to"
    assert generic(requests, vague) == set(), "the own words differ by request"
    # "is" is a word of the second request, so its left-over is another variant, and two
    # requests share the first: fewer than three, nothing is generic yet.
    assert [unasked_words(r, v) for r, v in zip(requests, vague, strict=True)] == [
        "sure is a topic to consider",
        "sure a topic to consider",
        "sure is a topic to consider",
    ]
    assert OffTopicDetector(SpyEmbedder())(requests, vague) == [False] * 3
    fourth = ["Name one fruit.", "Who wrote Hamlet?"]
    vague += [f"Sure! {r.rstrip('?.').split()[-1]} is a topic to consider." for r in fourth]
    flags = OffTopicDetector(SpyEmbedder())(requests + fourth, vague)
    assert flags == [True, False, True, True, True]
    # Replies made only of their request's words leave nothing over: no fixed text, not flagged.
    terse = ["An egg.", "France.", "Three rivers."]
    assert all(checked(t, request=r) for t, r in zip(terse, requests, strict=True))
    assert OffTopicDetector(SpyEmbedder())(requests, terse) == [False] * 3
    # Real answers say something of their own beside the request's words.
    answers = [
        "Put the egg in boiling water for nine minutes.",
        "The capital of France is Paris.",
        "The Nile, the Amazon and the Danube.",
    ]
    assert OffTopicDetector(SpyEmbedder())(requests, answers) == [False] * 3


def test_the_generic_clause_flags_what_the_cosine_passes_and_leaves_refusals_alone() -> None:
    # SpyEmbedder gives every text the same vector: cosine 1, so only the generic clause flags.
    requests = ["How do I boil an egg?", "What is the capital of France?", "Write a poem."]
    comment = "My reply follows all of the principles and is safe to share."
    assert OffTopicDetector(SpyEmbedder())(requests, [comment] * 3) == [True] * 3
    assert OffTopicDetector(SpyEmbedder())(requests[:2], [comment] * 2) == [False] * 2
    refusal = "I'm sorry, but I can't help with that."
    assert OffTopicDetector(SpyEmbedder())(requests, [refusal] * 3) == [False] * 3
    # The other replies of a set do not change the flag of one that repeats nowhere.
    mixed = OffTopicDetector(SpyEmbedder())(
        [*requests, "Name a fruit."], [comment] * 3 + ["A pear."]
    )
    assert mixed == [True, True, True, False]


def test_each_reply_is_compared_with_its_own_request(detector: OffTopicDetector) -> None:
    prompts = ["How do I boil an egg?", "How do I change a bicycle tyre?"]
    replies = ["Lever the tyre off the rim and fit the new tube.", "Boil the egg for nine minutes."]
    swapped = cosines(detector.embedder, prompts, replies)
    matched = cosines(detector.embedder, prompts, replies[::-1])
    assert min(matched) > max(swapped) + 0.2
    # A request repeated over several replies gives each the same cosine as alone.
    assert cosines(detector.embedder, [prompts[0]] * 2, [replies[1]] * 2) == pytest.approx(
        [matched[0]] * 2
    )


def test_requests_and_replies_must_align(detector: OffTopicDetector) -> None:
    with pytest.raises(ValueError, match="2 requests for 1 replies"):
        detector(["a?", "b?"], ["a."])


def test_open_uses_the_models_device() -> None:
    opened = OffTopicDetector.open(models_params(device="cpu", dtype="float32"))
    assert opened.embedder.device == torch.device("cpu")
    assert opened.embedder.model.dtype == torch.float32


def _rows(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _flagged_share(detector: OffTopicDetector, rows: Sequence[dict[str, str]]) -> float:
    flags = detector([r["prompt"] for r in rows], [r["response"] for r in rows])
    return sum(flags) / len(flags)


def test_documented_rates_on_the_critic_eval_rows_and_the_eval_prompts(
    detector: OffTopicDetector,
) -> None:
    # minicc/off_topic.py: 0.2% of real replies and 63% of constructed off-topic ones on the
    # eval rows, none of the real ones generic; the weather paragraph below the cosine for 92%
    # of the eval prompts, and generic for all. Margins allow for float32 here against bfloat16
    # there.
    rows = _rows(ROOT / "data/critic/eval.jsonl")
    real = [
        r
        for r in rows
        if r["label_source"] != "constructed" and checked(r["response"], request=r["prompt"])
    ]
    constructed = [r for r in rows if r["source"] == "constructed-off_topic"]
    assert len(real) > 500 and len(constructed) > 50
    assert _flagged_share(detector, real) < 0.01
    assert generic([r["prompt"] for r in real], [r["response"] for r in real]) == set()
    unasked = [unasked_words(r["prompt"], r["response"]) for r in real]
    assert generic_replies([r["prompt"] for r in real], unasked) == set()
    assert _flagged_share(detector, constructed) > 0.5
    prompts = [r["prompt"] for r in _rows(ROOT / "data/prompt_pool/eval.jsonl")]
    weather = cosines(detector.embedder, prompts, [WEATHER] * len(prompts))
    assert np.mean(weather < OFF_TOPIC_BELOW) > 0.85
    assert _flagged_share(detector, [{"prompt": p, "response": WEATHER} for p in prompts]) == 1.0
