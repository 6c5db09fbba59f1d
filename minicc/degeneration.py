"""Text statistics of degenerate replies (empty, loops, noise), and the rule that names them.

Model-free and deterministic, so they can measure a model without asking any critic: the
degeneration rate of evaluation, and six of the critic probe's features.
"""

import math
import re
import zlib
from collections import Counter
from collections.abc import Callable

_WORD = re.compile(r"\w+", flags=re.UNICODE)

REPEATED_TRIGRAMS = 0.5
"""A reply of 12 words or more is a loop when at least this share of its word 3-grams repeat
an earlier one."""
MIN_LETTERS = 0.5
"""A reply is noise when fewer than this share of its non-space characters are letters."""
STATISTICS = (
    "log_words",
    "distinct_words",
    "repeated_trigrams",
    "compression",
    "letters",
    "digits",
)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def repeated_trigram_share(text: str) -> float:
    """Share of word 3-grams that repeat an earlier 3-gram of the same text (0 below 3 words)."""
    words = _words(text)
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def _visible_share(text: str, kind: Callable[[str], bool]) -> float:
    """Share of the non-space characters that are of `kind` (0.0 when there are none)."""
    visible = [c for c in text if not c.isspace()]
    return sum(kind(c) for c in visible) / len(visible) if visible else 0.0


def statistics(text: str) -> list[float]:
    """The STATISTICS of one reply: log(1 + words), then shares in [0, 1], then the zlib
    compression ratio (above 1 for short texts), then the letter and digit shares."""
    words = _words(text)
    raw = text.encode("utf-8")
    return [
        math.log1p(len(words)),
        len(Counter(words)) / len(words) if words else 1.0,
        repeated_trigram_share(text),
        len(zlib.compress(raw, 9)) / len(raw) if raw else 1.0,
        _visible_share(text, str.isalpha),
        _visible_share(text, str.isdigit),
    ]


def is_degenerate(text: str) -> bool:
    """The degeneration rule, used for the degeneration rate of evaluation and summarize.

    A reply is degenerate when any of these holds:
    - empty: no visible (non-whitespace) character;
    - noise: fewer than MIN_LETTERS (half) of its visible characters are letters (exactly half
      is not noise);
    - a loop: it has at least 12 words (`\\w+` runs, case-folded) and at least
      REPEATED_TRIGRAMS (half) of its word 3-grams repeat an earlier one
      (`repeated_trigram_share`). Shorter replies are never called loops: a few repeated words
      ("no no no") are too little evidence.
    """
    if _visible_share(text, str.isalpha) < MIN_LETTERS:  # 0.0 for an empty reply
        return True
    return len(_words(text)) >= 12 and repeated_trigram_share(text) >= REPEATED_TRIGRAMS
