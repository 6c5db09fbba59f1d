"""Text normalisation shared by dataset checks and near-duplicate detection."""

import re
import unicodedata

_NON_WORD = re.compile(r"[^\w\s]", flags=re.UNICODE)
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Lower-case, strip accents' compatibility forms, punctuation and repeated spaces.

    Two prompts that differ only in case, punctuation or spacing normalise to the same string,
    which is what the train/eval disjointness check and duplicate detection compare.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    without_punctuation = _NON_WORD.sub(" ", folded)
    return _SPACES.sub(" ", without_punctuation).strip()


def word_set(text: str) -> frozenset[str]:
    """The set of normalised words of a text, for Jaccard similarity."""
    return frozenset(normalise(text).split())


def jaccard(a: str, b: str) -> float:
    """Jaccard similarity of the normalised word sets of two texts (1.0 for two empty texts)."""
    words_a, words_b = word_set(a), word_set(b)
    if not words_a and not words_b:
        return 1.0
    return len(words_a & words_b) / len(words_a | words_b)
