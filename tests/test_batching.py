"""Length-sorted batches and the context check shared by generation, the critic and training."""

import dataclasses
from types import SimpleNamespace

import pytest

from minicc.batching import check_context, length_sorted_batches
from minicc.errors import UserError
from minicc.models import LoadedModel

WORDS = ["ccc", "a", "bb", "dddd", "b", "aa"]


def _batches(batch_size: int) -> list[tuple[str, list[str]]]:
    batches = length_sorted_batches(WORDS, len, lambda word: word, batch_size)
    return [(batch.key, batch.items) for batch in batches]


def test_batches_hold_similar_lengths_ties_broken_by_key() -> None:
    assert _batches(2) == [("a", ["a", "b"]), ("aa", ["aa", "bb"]), ("ccc", ["ccc", "dddd"])]


def test_the_last_batch_holds_the_rest_and_the_order_of_input_does_not_matter() -> None:
    assert _batches(4) == [("a", ["a", "b", "aa", "bb"]), ("ccc", ["ccc", "dddd"])]
    shuffled = length_sorted_batches(list(reversed(WORDS)), len, lambda word: word, 4)
    assert [(batch.key, batch.items) for batch in shuffled] == _batches(4)


def test_items_can_be_indices_named_by_their_rows() -> None:
    rows = ["long reply", "hi", "mid"]
    batches = length_sorted_batches(range(3), lambda i: len(rows[i]), lambda i: f"r{i}", 2)
    assert [(batch.key, batch.items) for batch in batches] == [("r1", [1, 2]), ("r0", [0])]


def test_no_items_no_batches_and_a_batch_size_below_one_is_refused() -> None:
    assert length_sorted_batches([], len, str, 3) == []
    with pytest.raises(ValueError, match="batch_size"):
        length_sorted_batches(WORDS, len, str, 0)


def test_context_check_allows_the_full_context_and_names_the_row_beyond_it(
    tiny_llama: LoadedModel,
) -> None:
    limit = tiny_llama.model.config.max_position_embeddings
    check_context(tiny_llama, "p/0", limit, "the input", "shorten it")
    with pytest.raises(UserError, match="p/1: the input needs 257 tokens") as error:
        check_context(tiny_llama, "p/1", limit + 1, "the input", "shorten it")
    message = str(error.value)
    assert f"context of {limit} tokens of {tiny_llama.model_id}; shorten it" in message


def test_a_model_without_a_stated_context_is_not_checked(tiny_llama: LoadedModel) -> None:
    no_limit = SimpleNamespace(config=SimpleNamespace())
    check_context(dataclasses.replace(tiny_llama, model=no_limit), "p/0", 10**9, "it", "fix")
