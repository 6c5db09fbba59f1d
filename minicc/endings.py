"""Whether a model ended its turn in the middle of a sentence: a measure no critic decides.

A fine-tune learns where to end its turn from its training replies. Trained on replies the token
budget cut, with the end-of-turn token after each, it learns to stop mid-sentence (the default
run's fine-tune did so on 29 of 320 evaluation prompts; its baseline on none). The critic reads
such a reply as a short answer, and the degeneration rule sees nothing wrong with it, so compare
counts it by this rule.
"""

from minicc.records import FinishReason

SENTENCE_ENDS = frozenset(".!?…:;\"')]}*`»”’")
"""Characters a finished sentence, quotation, list item or code span ends with."""


def stops_mid_sentence(response: str, finish_reason: FinishReason) -> bool:
    """The model ended the reply itself (`eos`, or `stop`: a base model began the next turn)
    and its last character ends no sentence: "... a can of non-toxic carbon-based explosive, a
    hammer, and a knife" is flagged, "... and a knife." is not. A reply the token budget cut
    (`length`) is not the model's stop, and an empty reply is counted as degenerate instead."""
    text = response.rstrip()
    return finish_reason != "length" and bool(text) and text[-1] not in SENTENCE_ENDS
