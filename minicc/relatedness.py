"""Whether a reply has anything of its request in it, by the cosine of their sentence embeddings.

One cut, shared by the off-topic detector that summarize, select and compare run
(minicc/off_topic.py, where the choice of 0.05 is explained) and by the rubric's rule that a reply
unrelated to its request is no answer, for the critics with an on-task head (minicc/rubric.py).
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from minicc.arrays import BoolArray, FloatArray

if TYPE_CHECKING:  # the embedder is passed in; the rubric imports this module without torch
    from minicc.embedding import Embedder

OFF_TOPIC_BELOW = 0.05
"""A reply whose embedding cosine with its request is below this is unrelated to it."""


def unrelated(cosines: FloatArray) -> BoolArray:
    """Which (request, reply) pairs, given their embedding cosines, are unrelated."""
    return np.asarray(cosines, dtype=np.float64) < OFF_TOPIC_BELOW


def cosines(embedder: "Embedder", requests: Sequence[str], replies: Sequence[str]) -> FloatArray:
    """The embedding cosine of each request and its reply (aligned); each distinct text is
    embedded once, requests and replies together (the embeddings are unit vectors)."""
    texts = sorted(set(requests) | set(replies))
    vectors = embedder.embed(texts)
    row = {text: i for i, text in enumerate(texts)}
    left = vectors[[row[request] for request in requests]]
    right = vectors[[row[reply] for reply in replies]]
    return np.einsum("ij,ij->i", left, right)
