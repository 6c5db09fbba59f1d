"""The probe's features of (request, reply) rows, as the critic model reads them.

Four blocks (`minicc.probe.Features`): the critic's hidden states at one decoder layer, averaged
over each row's own tokens after the shared judge prefix; sentence embeddings of the request and
of the reply; the reply's text statistics (`minicc.degeneration.statistics`).
"""

import numpy as np
import torch

from minicc.arrays import FloatArray
from minicc.degeneration import statistics
from minicc.embedding import Embedder
from minicc.hidden import hidden_states_at
from minicc.models import LoadedModel
from minicc.prefix_cache import PrefixCache
from minicc.probe import Features


class FeatureReader:
    """Reads probe features with one loaded critic model and its shared-prefix caches."""

    def __init__(self, loaded: LoadedModel, prefixes: PrefixCache) -> None:
        self.loaded = loaded
        self.prefixes = prefixes
        self._embedder: Embedder | None = None

    @property
    def embedder(self) -> Embedder:
        """The sentence embedder, loaded on first use (the judge path never needs it)."""
        if self._embedder is None:
            self._embedder = Embedder(self.loaded.device, self.loaded.model.dtype)
        return self._embedder

    @torch.inference_mode()
    def hidden(self, prefix: str, suffixes: list[str], keys: list[str], layer: int) -> FloatArray:
        """Hidden states of decoder `layer`, averaged over each row's own tokens (the request,
        the reply and the template's closing lines), padding left out."""
        inputs = self.prefixes.inputs(prefix, suffixes, keys)
        hidden = hidden_states_at(self.loaded.model, layer, **inputs).float()
        suffix_mask = inputs["attention_mask"][:, -hidden.shape[1] :].unsqueeze(-1).float()
        pooled = (hidden * suffix_mask).sum(dim=1) / suffix_mask.sum(dim=1).clamp_min(1.0)
        return np.asarray(pooled.cpu().numpy(), dtype=np.float64)

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
        keys: list[str],
        layer: int,
    ) -> Features:
        """Features of (request, cleaned reply) `rows`, whose judge inputs are `judged`, each
        split into the prefix shared by all rows and the row's own rest."""
        return Features(
            hidden=self.hidden(judged[0][0], [rest for _, rest in judged], keys, layer),
            request=self.embed([request for request, _ in rows]),
            reply=self.embed([reply for _, reply in rows]),
            statistics=np.asarray([statistics(reply) for _, reply in rows], dtype=np.float64),
        )
