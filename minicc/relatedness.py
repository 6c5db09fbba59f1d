"""Whether a reply has anything of its request in it, by the cosine of their sentence embeddings.

One cut, shared by the off-topic detector that summarize, select and compare run
(minicc/off_topic.py, where the choice of 0.05 is explained) and by the rubric's rule that a reply
unrelated to its request is no answer, for the critics with an on-task head (minicc/rubric.py).
"""

import numpy as np

from minicc.arrays import BoolArray, FloatArray

OFF_TOPIC_BELOW = 0.05
"""A reply whose embedding cosine with its request is below this is unrelated to it."""


def unrelated(cosines: FloatArray) -> BoolArray:
    """Which (request, reply) pairs, given their embedding cosines, are unrelated."""
    return np.asarray(cosines, dtype=np.float64) < OFF_TOPIC_BELOW
