"""Request ids are primary keys a customer reads out: unguessable, and never colliding.

An id of 32 random bits collides within a few tens of thousands of requests (the birthday
bound) and can be guessed; at least 96 bits keep both out of reach.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from checkpoints import open_persistence

COUNT = 300
READABLE = re.compile(r"R-[A-Z0-9]+")


async def test_request_ids_are_distinct_readable_and_carry_96_random_bits(
    backend: dict[str, Any],
) -> None:
    async with open_persistence(
        database_url=backend.get("database_url"), sqlite_path=Path(backend["sqlite_path"])
    ) as persistence:
        store = persistence.store
        await store.create_session("ids-test", pack_name="store", pack_version="1")
        ids = [
            await store.create_request(
                session_id="ids-test", kind="refund", data={}, idempotency_key=f"ids-test-{n}"
            )
            for n in range(COUNT)
        ]
        stored = {r["id"] for r in await store.list_requests("ids-test")}

    assert len(set(ids)) == COUNT, "two requests got the same id"
    assert stored == set(ids)
    for request_id in ids:
        assert READABLE.fullmatch(request_id), f"{request_id!r}: not letters and digits after R-"
    bodies = [i.removeprefix("R-") for i in ids]
    lengths = {len(b) for b in bodies}
    assert len(lengths) == 1, f"ids of different lengths: {sorted(lengths)}"
    # Hundreds of ids use every symbol of their alphabet, so this is its size.
    alphabet = set("".join(bodies))
    bits = lengths.pop() * math.log2(len(alphabet))
    assert bits >= 96, f"{ids[0]!r}: {bits:.0f} random bits, fewer than 96"
