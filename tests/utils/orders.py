"""Sample orders from the store pack's data file, picked by status."""

from __future__ import annotations

import csv
from functools import cache

from supportgraph.settings import PROJECT_ROOT

ORDERS = PROJECT_ROOT / "packs" / "store" / "data" / "orders.csv"


@cache
def _orders() -> list[dict[str, str]]:
    with ORDERS.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def order(status: str) -> dict[str, str]:
    """The first order of the store pack with this status."""
    return next(o for o in _orders() if o["status"] == status)
