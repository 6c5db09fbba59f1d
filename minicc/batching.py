"""How model work is cut into batches: rows of similar length together, each fitting the context.

Generation, the critic and the probe's feature extraction all batch rows this way: sorting by
length keeps the padding in a batch small, and an input longer than the model's context is
refused by name, since truncating it silently would change what is asked or scored.
"""

from collections.abc import Callable, Sequence
from typing import TypeVar

from minicc.errors import UserError
from minicc.models import LoadedModel
from minicc.resume import Batch

T = TypeVar("T")


def length_sorted_batches(
    items: Sequence[T], length: Callable[[T], int], key: Callable[[T], str], batch_size: int
) -> list[Batch[T]]:
    """`items` sorted by (length, key) and cut into batches of `batch_size`.

    A batch is named by its first item's key; the keys must be unique, so that the same items
    always give the same batches (resume logs and per-batch seeds depend on it).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    ordered = sorted(items, key=lambda item: (length(item), key(item)))
    return [
        Batch(key=key(ordered[start]), items=list(ordered[start : start + batch_size]))
        for start in range(0, len(ordered), batch_size)
    ]


def check_context(loaded: LoadedModel, key: str, tokens: int, what: str, fix: str) -> None:
    """Refuse an input that needs `tokens` positions when the model has fewer.

    `what` names the input in the message and `fix` says how to shorten it. A model whose config
    states no `max_position_embeddings` is not checked.
    """
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    if limit is not None and tokens > limit:
        raise UserError(
            f"{key}: {what} needs {tokens} tokens, more than the context of {limit} tokens of "
            f"{loaded.model_id}; {fix}"
        )
