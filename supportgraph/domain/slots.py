"""Slot values: find candidates in text with the pack's patterns, normalise and validate them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from supportgraph.domain.pack import Slot


@dataclass(frozen=True)
class Checked:
    """A candidate value after validation: ``error`` says why it was rejected."""

    value: str
    error: str | None = None


def normalize(slot: Slot, value: str) -> str:
    """Apply the slot's normalisation to a raw value."""
    value = " ".join(value.split())
    if slot.normalize == "lower":
        return value.lower()
    if slot.normalize == "upper":
        return value.upper()
    if slot.normalize == "strip_hash":
        return value.lstrip("#")
    return value


def validate(slot: Slot, raw: str) -> Checked:
    """Normalise and check a value against the slot's pattern."""
    value = normalize(slot, raw)
    if not value:
        return Checked(value, slot.invalid)
    if slot.pattern_re is not None and not slot.pattern_re.fullmatch(value):
        return Checked(value, slot.invalid)
    return Checked(value)


def find_candidate(slot: Slot, text: str) -> str | None:
    """The first value the slot's ``extract`` pattern (or its strict pattern) finds in ``text``."""
    finder = slot.extract_re or slot.pattern_re
    if finder is None:
        return None
    match = finder.search(text)
    if match is None:
        return None
    value = match.group(1) if match.groups() else match.group(0)
    return value.strip() if value and value.strip() else None


def extract_from(
    slots: Mapping[str, Slot], names: Iterable[str], texts: list[str]
) -> dict[str, str]:
    """Candidates for ``names`` from customer texts (oldest first; a later text wins)."""
    found: dict[str, str] = {}
    for text in texts:
        for name in names:
            candidate = find_candidate(slots[name], text)
            if candidate is not None:
                found[name] = candidate
    return found


def free_text(text: str, values: Iterable[str]) -> str | None:
    """The message as a free-text answer, without the identifiers it also gave.

    "caleb@example.org, it arrived broken" answers the email and the reason at once; a
    message that is only identifiers ("1042") is no free-text answer.
    """
    rest = text
    for value in values:
        rest = rest.replace(value, " ")
    rest = re.sub(r"^[\s,;:.#-]+|[\s,;:-]+$", "", " ".join(rest.split()))
    return rest if len(re.findall(r"\w+", rest)) >= 2 else None
