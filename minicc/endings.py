"""Where a reply ends: whether a model ended its turn mid-sentence, whether a reply is a
fragment of a few words, and a cut reply's last whole sentence.

A fine-tune learns where to end its turn from its training replies. Trained on replies the token
budget cut, with the end-of-turn token after each, it learns to stop mid-sentence (8992818's
default fine-tune did so on 29 of 320 evaluation prompts; its baseline on none). The critic reads
such a reply as a short answer, and the degeneration rule sees nothing wrong with it, so compare
counts it (`stops_mid_sentence`), and build_sft can train a cut reply up to its last whole
sentence instead (`whole_sentences`, `sft.cut_replies`). A reply of a few words that breaks
off is useless however it ended, and the critic's heads scored such constructed cut replies up
to 4.6, above some real answers, so the rubric's ceiling puts it at 3 (`is_fragment`).
"""

import re
from collections.abc import Iterable

from minicc.records import FinishReason, Reply

SENTENCE_ENDS = frozenset(".!?…:;\"')]}*`»”’")
"""Characters a finished sentence, quotation, list item or code span ends with."""


def finish_reasons(replies: Iterable[Reply]) -> dict[str, FinishReason]:
    """How each reply ended, by candidate id (build_sft's cut replies, compare's stops)."""
    return {reply.candidate_id: reply.finish_reason for reply in replies}


FRAGMENT_WORDS = 8
"""A reply of at most this many (whitespace-separated) words that ends no sentence is a
fragment. The critic's constructed cut replies are a real answer's first 1-4 words; 8 leaves
room for cuts of a few tokens more, while no labeled real reply of the critic's rows that short
ends without a sentence end (they are complete short answers: "Tom Hanks is married to Rita
Wilson.")."""


def _ends_unfinished(text: str) -> bool:
    """`text` (stripped at the right) is not empty and its last character ends no sentence."""
    return bool(text) and text[-1] not in SENTENCE_ENDS


def stops_mid_sentence(response: str, finish_reason: FinishReason) -> bool:
    """The model ended the reply itself (`eos`, or `stop`: a base model began the next turn)
    and its last character ends no sentence: "... a can of non-toxic carbon-based explosive, a
    hammer, and a knife" is flagged, "... and a knife." is not. A reply the token budget cut
    (`length`) is not the model's stop, and an empty reply is counted as degenerate instead."""
    return finish_reason != "length" and _ends_unfinished(response.rstrip())


def is_fragment(response: str) -> bool:
    """A reply cut off after a few words, however it ended: at most FRAGMENT_WORDS words and
    no sentence end at its end ("Tom Hanks is married", "Here are some tips"). It answers
    nothing, whatever its first words promise, so the rubric's ceiling (minicc/rubric.py) puts
    it at 3 at most, beside noise and loops (its P(harmful help) is kept); a longer cut reply
    (most of the token budget's 64-token cuts) may carry a real answer, or harmful help, and is
    left to the critic. A terse answer or refusal with no full stop ("Rita Wilson", "I can't
    help with that") is called a fragment too: the rule's price, since a few words cannot tell a
    complete reply from a cut one. An empty reply is not a fragment (the degeneration rule
    names it)."""
    text = response.rstrip()
    return _ends_unfinished(text) and len(text.split()) <= FRAGMENT_WORDS


# A sentence ends at ., ! or ? (and any closing quotes, brackets or emphasis after it) before
# whitespace or the end of the text, unless the mark follows a bare number: "1." opens a list
# item. Hand-written rather than a sentence tokenizer (nltk, spaCy): the replies it cuts are
# short chat replies (a cut one's last whole sentence, a refusal's first ones,
# `minicc.refusal.refusal_opening`), and a wrong end keeps a little more or less of the reply.
_SENTENCE_END = re.compile(r"(?<![\s\d])[.!?][\"')\]*”’»]*(?=\s|$)")


def sentence_ends(text: str) -> list[int]:
    """The offset just after each sentence end in `text`, in order (the rule above)."""
    return [match.end() for match in _SENTENCE_END.finditer(text)]


def whole_sentences(text: str) -> str | None:
    """`text` up to the end of its last whole sentence (stripped of the space before it), or
    None when no sentence ends in it: "Boil it for nine minutes. Then cool it in col" gives
    "Boil it for nine minutes."."""
    ends = sentence_ends(text)
    return text[: ends[-1]].strip() if ends else None
