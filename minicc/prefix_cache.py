"""Forward passes over many inputs that share one long prefix, the prefix run only once.

The critic's judge prompt (instructions, principles, rubric, few-shot examples) is the same for
every candidate and most of each input, so its key/value cache is computed once per distinct
prefix and copied to every row of a batch: this cuts the critic's work several-fold. A caller
that reads a lower layer (the probe) asks for the prefix to that depth only: the blocks above
it never run, neither for the prefix nor for the rows, and each batch copies less of the cache.
"""

import copy
from typing import Any

import torch
from transformers import DynamicCache

from minicc.batching import check_context
from minicc.hidden import hidden_states_at
from minicc.models import LoadedModel
from minicc.padding import unpadded_positions


class PrefixCache:
    """Key/value caches of shared prefixes, each computed on first use, for one loaded model."""

    def __init__(self, loaded: LoadedModel, context_fix: str) -> None:
        self.loaded = loaded
        self.context_fix = context_fix
        """How to shorten an input that does not fit the model's context (said in the error)."""
        self._caches: dict[tuple[str, int | None], tuple[int, Any]] = {}

    @torch.no_grad()
    def _prefix(self, prefix: str, depth: int | None) -> tuple[int, Any]:
        """Token count and key/value cache of `prefix`, filled for decoder blocks 1..`depth`
        (None: every block)."""
        if (prefix, depth) not in self._caches:
            model, cache_argument = self.loaded.model, self.loaded.cache_argument
            ids = self.loaded.tokenizer(
                prefix, add_special_tokens=not self.loaded.uses_chat_template, return_tensors="pt"
            )["input_ids"].to(self.loaded.device)
            if depth is None:
                output = model(input_ids=ids, use_cache=True, **self.loaded.last_logits_only)
                cache = getattr(output, cache_argument)
            else:
                # forward() is left from inside block `depth`, so the cache it would return is
                # passed in and filled in place; it is the kind forward() makes by itself.
                cache = DynamicCache(config=model.config)
                hidden_states_at(
                    model, depth, input_ids=ids, use_cache=True, **{cache_argument: cache}
                )
            self._caches[(prefix, depth)] = (ids.shape[1], cache)
        return self._caches[(prefix, depth)]

    def inputs(
        self, prefix: str, suffixes: list[str], keys: list[str], depth: int | None = None
    ) -> dict[str, Any]:
        """forward() arguments for a batch of inputs `prefix + suffix`, `keys` naming the rows.

        Rows are left-padded after the prefix; the attention mask hides the padding and explicit
        position ids keep every real token at the position it would have had without padding.
        The cache is a copy, so the forward pass may fill it. With a `depth`, the cache holds
        decoder blocks 1..`depth` only: the rows must not be read above that block
        (`hidden_states_at` with a layer of at most `depth`).
        """
        prefix_length, prefix_cache = self._prefix(prefix, depth)
        tokenizer, device = self.loaded.tokenizer, self.loaded.device
        encoded = tokenizer(suffixes, add_special_tokens=False, padding=True, return_tensors="pt")
        suffix_mask = encoded["attention_mask"].to(device)
        for key, suffix_length in zip(keys, suffix_mask.sum(dim=-1).tolist(), strict=True):
            tokens = prefix_length + suffix_length
            check_context(self.loaded, key, tokens, "the input", self.context_fix)
        rows = suffix_mask.shape[0]
        attention_mask = torch.cat(
            [torch.ones(rows, prefix_length, dtype=suffix_mask.dtype, device=device), suffix_mask],
            dim=1,
        )
        positions = prefix_length + unpadded_positions(suffix_mask)
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(rows)
        return {
            "input_ids": encoded["input_ids"].to(device),
            "attention_mask": attention_mask,
            "position_ids": positions,
            self.loaded.cache_argument: cache,
            "use_cache": True,
        }
