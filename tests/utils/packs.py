"""Pack helpers for tests."""

from __future__ import annotations

from supportgraph.domain.pack import FaqEntry, Pack


def faq_entry(pack: Pack, faq_id: str) -> FaqEntry | None:
    """The pack's FAQ entry with this id, if any."""
    return next((e for e in pack.faq if e.id == faq_id), None)
