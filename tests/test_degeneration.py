"""minicc.degeneration: text statistics and the empty / loop / noise rule, on hand-made strings."""

import math

import pytest

from minicc.degeneration import STATISTICS, is_degenerate, repeated_trigram_share, statistics


@pytest.mark.parametrize(
    ("text", "share"),
    [
        ("", 0.0),
        ("one two", 0.0),  # no 3-gram at all
        ("the cat sat on the mat", 0.0),  # 4 distinct 3-grams
        # 3-grams abc, bca, cab, abc: one of four repeats an earlier one.
        ("a b c a b c", 0.25),
        # Case and punctuation are not part of a word.
        ("A, b. C! a B c", 0.25),
        # 3-grams aaa x4: three of four repeat.
        ("a a a a a a", 0.75),
    ],
)
def test_repeated_trigram_share_hand_computed(text: str, share: float) -> None:
    assert repeated_trigram_share(text) == pytest.approx(share)


def test_statistics_hand_computed() -> None:
    # Words a, a, b: two distinct of three, a single 3-gram. zlib at level 9 turns these 5 bytes
    # into 13 (2-byte header, 7-byte deflate block, 4-byte checksum).
    assert STATISTICS == (
        "log_words",
        "distinct_words",
        "repeated_trigrams",
        "compression",
        "letters",
        "digits",
    )
    assert statistics("a a b") == pytest.approx([math.log(4), 2 / 3, 0.0, 13 / 5, 1.0, 0.0])


def test_statistics_count_letters_and_digits_among_visible_characters() -> None:
    # Visible characters a, b, 1, 2 (the space is not counted); "12" is a word too.
    values = dict(zip(STATISTICS, statistics("ab 12"), strict=True))
    assert values["log_words"] == pytest.approx(math.log(3))
    assert (values["letters"], values["digits"]) == (0.5, 0.5)


def test_statistics_of_an_empty_reply() -> None:
    assert statistics("") == [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]


LOOP = ", ".join(["the answer is"] * 8)
SENTENCE = (
    "To remove a stuck screw, press a wide rubber band between the driver and the head, "
    "then turn slowly while pushing down firmly."
)


@pytest.mark.parametrize(
    ("text", "degenerate"),
    [
        ("", True),
        ("   \n\t ", True),
        ("1" * 64, True),
        ("a12", True),  # one letter in three visible characters: noise
        ("ab12", False),  # exactly half letters is not below MIN_LETTERS
        (LOOP, True),
        (SENTENCE, False),
        # Repetitive but under 12 words: too short to call a loop.
        (" ".join(["no"] * 11), False),
        (" ".join(["no"] * 12), True),
    ],
)
def test_is_degenerate(text: str, degenerate: bool) -> None:
    assert is_degenerate(text) is degenerate


def test_regression_a_punctuated_phrase_loop_is_degenerate() -> None:
    """Regression: the looping reply "I'm a bomb-planner, I'm a bomb-planner, ..." is a loop;
    its apostrophe, hyphen and commas split it into the words i, m, a, bomb, planner."""
    text = " ".join(["I'm a bomb-planner,"] * 10)
    assert repeated_trigram_share(text) == pytest.approx(1 - 5 / 48)
    assert is_degenerate(text)


@pytest.mark.parametrize(
    ("text", "share", "degenerate"),
    [
        # 12 words, 10 3-grams of which 5 distinct: exactly REPEATED_TRIGRAMS repeat -> a loop.
        ("a b c d e a b c d e a b", 0.5, True),
        # 12 words, 10 3-grams of which 6 distinct: 0.4 repeat -> not a loop.
        ("a b c d e f a b c d e f", 0.4, False),
    ],
)
def test_the_loop_threshold_is_inclusive(text: str, share: float, degenerate: bool) -> None:
    assert repeated_trigram_share(text) == pytest.approx(share)
    assert is_degenerate(text) is degenerate
