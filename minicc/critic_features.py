"""The probe's features of (request, reply) rows, as the critic model reads them.

Eight blocks (`minicc.probe.Features`): the critic's hidden states at one decoder layer, averaged
over each row's own tokens after the shared judge prefix, the same states averaged over the
reply's tokens alone and over its opening; sentence embeddings of the request and of the reply;
the reply's text statistics (`minicc.degeneration.statistics`); the share of the reply that
quotes the request (`minicc.quotation.quoted_share`); the critic's hidden states at another layer
as it reads the request alone (the request head's).
"""

from collections import OrderedDict

import numpy as np
import torch

from minicc.arrays import FloatArray
from minicc.batching import length_sorted_batches
from minicc.degeneration import statistics
from minicc.embedding import Embedder
from minicc.hidden import hidden_states_at
from minicc.models import LoadedModel
from minicc.neutralise import neutralise
from minicc.padding import masked_mean, unpadded_positions
from minicc.prefix_cache import PrefixCache
from minicc.probe import Features
from minicc.prompting import encode_batch, format_request
from minicc.quotation import quoted_share

REMEMBERED_REQUESTS = 4096
"""Request states a reader keeps (least recently used first out): a few tens of MB for the
bundled model, more than the distinct requests of any stage's inputs (train_critic reads about
1,200), so a stage's requests, read first, stay until its last batch."""
REPLY_OPENING_TOKENS = 8
"""Tokens of a reply's opening (the `reply_opening` block): enough for "I'm sorry, but I",
"Sure, here is how to" or "It is important to note". Chosen by the training rows' grouped
cross-validation: 24 tokens gave the refusal head's helpfulness AUROC 0.844 against 0.857."""


class FeatureReader:
    """Reads probe features with one loaded critic model and its shared-prefix caches."""

    def __init__(
        self,
        loaded: LoadedModel,
        prefixes: PrefixCache,
        special_tokens: list[str],
        batch_size: int,
    ) -> None:
        self.loaded = loaded
        self.prefixes = prefixes
        self.special_tokens = special_tokens
        self.batch_size = batch_size
        """Requests read in one forward pass (`request_states`)."""
        self._request_states: OrderedDict[tuple[str, int], FloatArray] = OrderedDict()
        """Request states already read, by (request, layer): a request has several replies,
        spread over batches (training sorts its rows by reply length)."""
        self._embedder: Embedder | None = None

    @property
    def embedder(self) -> Embedder:
        """The sentence embedder, loaded on first use (the judge path never needs it)."""
        if self._embedder is None:
            self._embedder = Embedder(self.loaded.device, self.loaded.model.dtype)
        return self._embedder

    @torch.inference_mode()
    def judge_states(
        self,
        prefix: str,
        suffixes: list[str],
        reply_spans: list[tuple[int, int]],
        keys: list[str],
        layer: int,
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Hidden states of decoder `layer` over each row's own tokens (the request, the reply
        and the template's closing lines), padding left out, averaged three ways from one pass:
        over all of them, over the reply's tokens alone (`reply_spans`: each reply's characters
        in its suffix) and over the reply's first `REPLY_OPENING_TOKENS` tokens (zeros for an
        empty reply).

        The second mean is the reply as the model reads it after the principles and the request:
        in the first, a short reply is a few tokens among a long request's, and what it gives
        is averaged away. The third is where a reply declares itself: a refusal or a compliance
        is said in the first words, which the second dilutes with what follows."""
        inputs = self.prefixes.inputs(prefix, suffixes, keys, depth=layer)
        hidden = hidden_states_at(self.loaded.model, layer, **inputs).float()
        mask = inputs["attention_mask"][:, -hidden.shape[1] :]
        reply_mask = self._reply_tokens(suffixes, reply_spans).to(mask.device) * mask
        opening_mask = reply_mask * (reply_mask.cumsum(dim=1) <= REPLY_OPENING_TOKENS)
        return (
            _numpy(masked_mean(hidden, mask)),
            _numpy(masked_mean(hidden, reply_mask)),  # zeros for an empty reply
            _numpy(masked_mean(hidden, opening_mask)),
        )

    def _reply_tokens(
        self, suffixes: list[str], reply_spans: list[tuple[int, int]]
    ) -> torch.Tensor:
        """(rows, tokens) mask of the suffix tokens that overlap each row's reply, in the
        padded layout `PrefixCache.inputs` gives (the same tokenizer call, with offsets)."""
        encoded = self.loaded.tokenizer(
            suffixes,
            add_special_tokens=False,
            padding=True,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        offsets = encoded["offset_mapping"]
        starts = torch.tensor([start for start, _ in reply_spans])[:, None]
        ends = torch.tensor([end for _, end in reply_spans])[:, None]
        overlaps = (offsets[..., 1] > starts) & (offsets[..., 0] < ends)
        return overlaps.long()  # padding's offsets are (0, 0): it overlaps no reply

    @torch.inference_mode()
    def request_states(self, requests: list[str], layer: int) -> FloatArray:
        """Hidden states of decoder `layer` as the model reads each request alone, as a user turn
        it is about to answer (`format_request`): the last position and the mean over the turn,
        side by side.

        Each distinct request is read once per reader (see `_request_states`); those not yet
        read are read together, in length-sorted batches of `batch_size`, left-padded with
        position ids that keep every token where it would be unpadded. In bfloat16 a batch's
        padding and neighbours change the last digits of a row's states, so a stage that must
        write the same bytes when resumed reads every request it will need first, in one call
        (`read_ahead`): the batches then depend on the stage's inputs alone, not on
        where a resumed run starts.
        """
        known = self._request_states
        unread = [text for text in dict.fromkeys(requests) if (text, layer) not in known]
        turns = {
            text: format_request(self.loaded, neutralise(text, self.special_tokens))
            for text in unread
        }
        for batch in length_sorted_batches(
            unread, lambda text: len(turns[text]), lambda text: text, self.batch_size
        ):
            inputs = encode_batch(self.loaded, [turns[text] for text in batch.items])
            mask = inputs["attention_mask"]
            hidden = hidden_states_at(
                self.loaded.model, layer, **inputs, position_ids=unpadded_positions(mask)
            ).float()
            mean = masked_mean(hidden, mask)
            states = torch.cat([hidden[:, -1], mean], dim=1).cpu().numpy()
            for text, state in zip(batch.items, states, strict=True):
                known[(text, layer)] = state.astype(np.float64)
        result = np.stack([known[(text, layer)] for text in requests])
        for text in requests:
            known.move_to_end((text, layer))
        while len(known) > REMEMBERED_REQUESTS:
            known.popitem(last=False)
        return result

    def read_ahead(self, requests: list[str], layer: int) -> None:
        """Read the states of every one of `requests` not yet read, in one call, so that later
        calls find them: a stage calls this with all its inputs' requests before its first
        batch (see `request_states`). A stage may have nothing to score (no revisions)."""
        if requests:
            self.request_states(requests, layer)

    def request_matrix(self, requests: list[str], layer: int) -> FloatArray:
        """The request head's matrix for `requests`: the same columns, in the same order, as
        `Features.matrix(HEAD_BLOCKS["request_harmful"])` of rows with those requests."""
        return np.concatenate([self.embed(requests), self.request_states(requests, layer)], axis=1)

    def embed(self, texts: list[str]) -> FloatArray:
        """Sentence embeddings, each distinct text computed once: a batch of candidates holds
        several answers to one prompt."""
        distinct = sorted(set(texts))
        vectors = self.embedder.embed(distinct)
        row = {text: index for index, text in enumerate(distinct)}
        return vectors[[row[text] for text in texts]]

    def features(
        self,
        rows: list[tuple[str, str]],
        judged: list[tuple[str, str]],
        reply_spans: list[tuple[int, int]],
        keys: list[str],
        layer: int,
        request_layer: int,
    ) -> Features:
        """Features of (request, cleaned reply) `rows`, whose judge inputs are `judged`, each
        split into the prefix shared by all rows and the row's own rest, in which each reply
        lies at its `reply_spans`; the hidden states of the judge input at `layer`, those of the
        request alone at `request_layer`."""
        hidden, reply_hidden, reply_opening = self.judge_states(
            judged[0][0], [rest for _, rest in judged], reply_spans, keys, layer
        )
        return Features(
            hidden=hidden,
            request=self.embed([request for request, _ in rows]),
            reply=self.embed([reply for _, reply in rows]),
            statistics=np.asarray([statistics(reply) for _, reply in rows], dtype=np.float64),
            quotation=np.asarray(
                [[quoted_share(request, reply)] for request, reply in rows], dtype=np.float64
            ),
            request_state=self.request_states([request for request, _ in rows], request_layer),
            reply_hidden=reply_hidden,
            reply_opening=reply_opening,
        )


def _numpy(block: torch.Tensor) -> FloatArray:
    return np.asarray(block.cpu().numpy(), dtype=np.float64)
