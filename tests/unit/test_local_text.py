"""Local-mode readings of a message: sentiment, and yes/no answers to a confirmation."""

from __future__ import annotations

import pytest

from supportgraph.domain.local.text import confirmation, sentiment
from supportgraph.domain.pack import (
    DEFAULT_NEGATIVE_WORDS,
    DEFAULT_NO_WORDS,
    DEFAULT_YES_WORDS,
    Pack,
)


def answer(pack: Pack, text: str) -> str:
    """How ``text`` answers a yes/no question with the pack's words."""
    words = pack.spec.confirmation
    return confirmation(text, yes=words.yes, no=words.no)


@pytest.mark.parametrize(
    "text",
    [
        "this is terrible",
        "I will sue you",
        "you are incompetent",
        "I'm fed up",
        "fed-up with waiting",
        "Complaint!",
        "what a RIPOFF",
        "THIS IS NOT OK AT ALL",
    ],
)
def test_negative(store_pack: Pack, text: str) -> None:
    assert sentiment(text, store_pack.spec.escalation.negative_words) == "negative"


@pytest.mark.parametrize(
    "text",
    [
        "I have an issue with my order",
        "terribly sorry to bother you",
        "where is my order",
        "Where Is My Order",
        "WHERE IS IT",
        "OK THANKS",
        "123456789012345 !!!!",
        "",
    ],
)
def test_neutral(store_pack: Pack, text: str) -> None:
    assert sentiment(text, store_pack.spec.escalation.negative_words) == "neutral"


def test_sentiment_uses_the_words_given() -> None:
    assert sentiment("this is hopeless", ["hopeless"]) == "negative"
    assert sentiment("this is hopeless", DEFAULT_NEGATIVE_WORDS) == "neutral"
    assert sentiment("this is terrible", []) == "neutral"
    assert sentiment("this is terrible", ["  "]) == "neutral", "a blank word matches nothing"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes", "yes"),
        ("Yes!", "yes"),
        ("YES PLEASE", "yes"),
        ("y", "yes"),
        ("sure, go ahead", "yes"),
        ("ok do it", "yes"),
        ("sounds good", "yes"),
        ("yes 👍", "yes"),
        ("no", "no"),
        ("No.", "no"),
        ("nope", "no"),
        ("no thanks", "no"),
        ("don't", "no"),
        ("do not do that", "no"),
        ("yes, cancel it", "yes"),
        ("yes no", "none"),
        ("no, yes", "none"),
        ("hmm", "none"),
        ("maybe", "none"),
        ("yesterday", "none"),
        ("nothing", "none"),
        ("I know", "none"),
        ("👍", "none"),
        ("", "none"),
        ("   ", "none"),
    ],
)
def test_confirmation_with_the_store_words(store_pack: Pack, text: str, expected: str) -> None:
    assert answer(store_pack, text) == expected


def test_only_short_answers_count(store_pack: Pack) -> None:
    assert answer(store_pack, " ".join(["yes"] * 8)) == "yes"
    assert answer(store_pack, " ".join(["yes"] * 9)) == "none"
    long = "yes but actually I am not sure whether I want this at all"
    assert answer(store_pack, long) == "none"
    assert answer(store_pack, "yes " + "x" * 10_000) == "yes", "one long word is still short"


def test_pack_words_replace_the_defaults(store_pack: Pack) -> None:
    # The store pack drops "cancel" from the no-words so that "cancel it" can be confirmed.
    assert confirmation("cancel it", yes=DEFAULT_YES_WORDS, no=DEFAULT_NO_WORDS) == "no"
    assert answer(store_pack, "cancel it") == "none"
    assert confirmation("oui", yes=DEFAULT_YES_WORDS, no=DEFAULT_NO_WORDS) == "yes"


@pytest.mark.parametrize("text", ["not sure", "I'm not sure", "that's not correct"])
def test_store_pack_lists_negated_yes_words(store_pack: Pack, text: str) -> None:
    # "sure" and "correct" are yes-words; negated they are at best unclear, never a go-ahead.
    assert answer(store_pack, text) == "none"


@pytest.mark.parametrize("text", ["absolutely not", "that's not ok"])
def test_a_negated_yes_word_is_never_a_yes(store_pack: Pack, text: str) -> None:
    assert answer(store_pack, text) in ("no", "none")


def test_not_sure_is_not_a_yes_with_the_default_words() -> None:
    # The defaults apply to every pack without its own lists (the ISP pack, for one).
    assert confirmation("I'm not sure", yes=DEFAULT_YES_WORDS, no=DEFAULT_NO_WORDS) == "none"
