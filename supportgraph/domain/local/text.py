"""Offline readings of a customer message: sentiment and yes/no answers, from the pack's words."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

_WORD = re.compile(r"[\w']+", re.UNICODE)
_NEGATION = re.compile(r"\b(?:not|never|no|nope|nah)\b|n't\b|n’t\b")


def _phrases(text: str) -> str:
    return " " + " ".join(_WORD.findall(text.casefold())) + " "


def _has_any(text: str, words: Sequence[str]) -> bool:
    padded = _phrases(text)
    return any(f" {' '.join(_WORD.findall(w.casefold()))} " in padded for w in words if w.strip())


def sentiment(text: str, negative_words: Sequence[str]) -> Literal["negative", "neutral"]:
    """Negative when the message uses one of the pack's negative words or is shouted."""
    letters = [c for c in text if c.isalpha()]
    shouting = len(letters) >= 12 and sum(c.isupper() for c in letters) / len(letters) > 0.8
    return "negative" if shouting or _has_any(text, negative_words) else "neutral"


def confirmation(
    text: str, *, yes: Sequence[str], no: Sequence[str]
) -> Literal["yes", "no", "none"]:
    """How a message answers a yes/no question: only an unambiguous, short answer counts."""
    words = _WORD.findall(text.casefold())
    if not words or len(words) > 8:
        return "none"
    said_no = _has_any(text, no)
    said_yes = _has_any(text, yes)
    if said_yes and said_no:
        return "none"
    if said_no:
        return "no"
    if said_yes and not (_NEGATION.search(text.casefold()) or text.rstrip().endswith("?")):
        # "absolutely not", "that's not ok", "sure?": never a yes, whatever the pack lists.
        return "yes"
    return "none"
