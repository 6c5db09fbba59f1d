"""Where a reply ends: whether a model ended its turn mid-sentence, and a cut reply's last
whole sentence.

A fine-tune learns where to end its turn from its training replies. Trained on replies the token
budget cut, with the end-of-turn token after each, it learns to stop mid-sentence (8992818's
default fine-tune did so on 29 of 320 evaluation prompts; its baseline on none). The critic reads
such a reply as a short answer, and the degeneration rule sees nothing wrong with it, so compare
counts it (`stops_mid_sentence`), and build_sft can train a cut reply up to its last whole
sentence instead (`whole_sentences`, `sft.cut_replies`).
"""

import re
from collections.abc import Iterable

from minicc.records import FinishReason, Reply

SENTENCE_ENDS = frozenset(".!?…:;\"')]}*`»”’")
"""Characters a finished sentence, quotation, list item or code span ends with."""


def finish_reasons(replies: Iterable[Reply]) -> dict[str, FinishReason]:
    """How each reply ended, by candidate id (build_sft's cut replies, compare's stops)."""
    return {reply.candidate_id: reply.finish_reason for reply in replies}


def stops_mid_sentence(response: str, finish_reason: FinishReason) -> bool:
    """The model ended the reply itself (`eos`, or `stop`: a base model began the next turn)
    and its last character ends no sentence: "... a can of non-toxic carbon-based explosive, a
    hammer, and a knife" is flagged, "... and a knife." is not. A reply the token budget cut
    (`length`) is not the model's stop, and an empty reply is counted as degenerate instead."""
    text = response.rstrip()
    return finish_reason != "length" and bool(text) and text[-1] not in SENTENCE_ENDS


# A sentence ends at ., ! or ? (and any closing quotes, brackets or emphasis after it) before
# whitespace or the end of the text, unless the mark follows a bare number: "1." opens a list
# item. Hand-written, like minicc/refusal.py's rule, rather than a sentence tokenizer (nltk,
# spaCy): only the last end of a short chat reply is needed, and a wrong one keeps a little more
# or less of the reply.
_SENTENCE_END = re.compile(r"(?<![\s\d])[.!?][\"')\]*”’»]*(?=\s|$)")


def whole_sentences(text: str) -> str | None:
    """`text` up to the end of its last whole sentence (stripped of the space before it), or
    None when no sentence ends in it: "Boil it for nine minutes. Then cool it in col" gives
    "Boil it for nine minutes."."""
    ends = [match.end() for match in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]].strip() if ends else None
