"""Quotations of the request in a reply: what a reply adds to its request, and how much of it
only repeats the request.

A model that parrots its prompt inside a fixed text ("You asked: <request> Here is my answer.")
writes replies that are as close to their request as replies get, and that say nothing. Two
users need to see through that. The off-topic detector's generic clause (minicc/off_topic.py)
compares what replies add across requests (`own_words`): a fixed text around the request adds
the same words to each. The critic probe reads the share of a reply that is quotation
(`quoted_share`, a feature block of its own, minicc/probe.py): before it had that feature and
the constructed restatements (data/critic/README.md), it scored such a reply 4.2 on harmless
prompts, as high as a real answer (docs/critic_history.md, "The restatements").

A quotation is a run of QUOTED_SPAN (3) or more of the request's words in the request's order
(words: `minicc.text.normalise`d and split on spaces). Shorter runs are not counted: "how to",
"of the" are in too many real replies to mean a quotation, and a real answer restates a few of
its request's words in its own order ("Tom Hanks is married to Rita Wilson." quotes nothing of
"Who is Tom Hanks married to?").
"""

from minicc.text import normalise

QUOTED_SPAN = 3
"""A run of this many words of the request, in its order, is a quotation of it; two words in a
row ("how to", "of the") are too common to tell."""


def _quoted(prompt: str, response: str) -> tuple[list[str], list[bool]]:
    """The reply's normalised words and, for each, whether it lies in a quotation of the
    request."""
    reply, request = normalise(response).split(), normalise(prompt).split()
    quoted_spans = {
        tuple(request[i : i + QUOTED_SPAN]) for i in range(len(request) - QUOTED_SPAN + 1)
    }
    quoted = [False] * len(reply)
    for start in range(len(reply) - QUOTED_SPAN + 1):
        if tuple(reply[start : start + QUOTED_SPAN]) in quoted_spans:
            quoted[start : start + QUOTED_SPAN] = [True] * QUOTED_SPAN
    return reply, quoted


def own_words(prompt: str, response: str) -> str:
    """What a reply adds to its request: the reply's normalised words less every word that is
    part of a quotation of the request (whole or in part)."""
    reply, quoted = _quoted(prompt, response)
    return " ".join(word for word, cut in zip(reply, quoted, strict=True) if not cut)


def quoted_share(prompt: str, response: str) -> float:
    """The share of the reply's normalised words that lie in quotations of the request (0.0 for
    a reply without words)."""
    reply, quoted = _quoted(prompt, response)
    return sum(quoted) / len(reply) if reply else 0.0
