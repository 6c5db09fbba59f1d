"""minicc.quotation: what a reply adds to its request, and the share that only quotes it."""

import pytest

from minicc.quotation import QUOTED_SPAN, own_words, quoted_share


def test_own_words_cut_every_run_of_three_request_words_in_order() -> None:
    request = "How do I boil an egg?"
    assert own_words(request, "Sure! How do I boil an egg? Good question.") == (
        "sure good question"
    )
    assert own_words(request, "HOW DO I BOIL AN EGG ... how do i boil an egg") == ""
    # Part of the request: "boil an egg" is a run of three of its words.
    assert own_words(request, "Sure! Here is how to boil an egg") == "sure here is how to"
    # Two words in a row are no quotation; words of the request out of its order neither.
    assert QUOTED_SPAN == 3
    assert own_words(request, "To boil eggs, do I need salt?") == "to boil eggs do i need salt"
    assert own_words(request, "egg an boil I do how") == "egg an boil i do how"
    # A request shorter than a run has nothing to quote.
    assert own_words("Boil eggs.", "Boil eggs: boil them.") == "boil eggs boil them"


def test_quoted_share_counts_the_reply_words_inside_quotations_of_the_request() -> None:
    request = "How do I boil an egg?"
    # Six quoted words of nine: "how do i boil an egg" in "sure how do i boil an egg good
    # question".
    assert quoted_share(request, "Sure! How do I boil an egg? Good question.") == pytest.approx(
        6 / 9
    )
    assert quoted_share(request, "how do I boil an egg") == 1.0
    # A real answer restates a few words in its own order: no quotation.
    assert quoted_share("Who is Tom Hanks married to?", "Tom Hanks is married to Rita Wilson.") == 0
    assert quoted_share(request, "Sure! Here is how to boil an egg") == pytest.approx(3 / 8)
    assert quoted_share(request, "") == 0.0
    assert quoted_share(request, "!!!") == 0.0


def test_quoted_share_and_own_words_split_the_same_words() -> None:
    request = "What is the capital city of France?"
    reply = "The capital city of France is Paris, and the capital city of France is lovely."
    kept = len(own_words(request, reply).split())
    total = len(reply.split())
    assert quoted_share(request, reply) == pytest.approx(1 - kept / total)
