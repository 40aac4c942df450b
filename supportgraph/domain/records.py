"""The pack's own data files as a record source (orders in ``data/orders.csv``)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from supportgraph.domain.pack import Pack
from supportgraph.domain.ports import Found, NotFound, RecordResult


def same(a: str, b: str) -> bool:
    """Whether two values are equal ignoring case and outer spaces, in constant time."""
    return hmac.compare_digest(a.strip().casefold().encode(), b.strip().casefold().encode())


class PackRecords:
    """Records of one data file of the pack (CSV, JSON or YAML list), read once."""

    def __init__(self, pack: Pack, name: str) -> None:
        self.pack = pack
        self.name = name

    async def lookup(self, key: Mapping[str, str]) -> RecordResult:
        """The first record whose fields equal ``key``."""
        for record in self.pack.records(self.name):
            if all(same(record.get(f, ""), v) for f, v in key.items()):
                return Found(record)
        return NotFound()
