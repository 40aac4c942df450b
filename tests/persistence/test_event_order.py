"""Events become visible in id order, so a reader resuming after id N never misses one.

``Last-Event-ID`` streams read ``id > N``: an event whose id was drawn before N's but that
committed after a reader saw N would never be sent. On PostgreSQL the insert takes a
transaction lock before drawing its id (in one statement when no webhook rides along).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from checkpoints import open_persistence
from supportgraph.domain.types import OutboxItem

WRITERS = 40
EACH = 5


@pytest.mark.parametrize("webhooks", [False, True], ids=["event-alone", "with-outbox"])
async def test_a_polling_reader_sees_every_event_once_and_in_order(
    backend: dict[str, Any], webhooks: bool
) -> None:
    async with open_persistence(
        database_url=backend.get("database_url"),
        sqlite_path=Path(backend["sqlite_path"]),
        pool_max_size=12,
    ) as persistence:
        store = persistence.store
        sessions = [f"order-test-{i}" for i in range(WRITERS)]
        for sid in sessions:
            await store.create_session(sid, pack_name="store", pack_version="1")
        seen: list[int] = []
        done = asyncio.Event()

        async def write(sid: str) -> list[int]:
            ids = []
            for n in range(EACH):
                outbox = [_outbox(sid, n)] if webhooks else None
                ids.append(
                    await store.append_event(
                        sid, kind="message", audience="all", data={"n": n}, outbox=outbox
                    )
                )
            return ids

        async def read() -> None:
            while True:
                finished = done.is_set()
                rows = await store.events_after(seen[-1] if seen else 0, limit=1000)
                seen.extend(r.id for r in rows)
                if finished:
                    return
                await asyncio.sleep(0)

        reader = asyncio.create_task(read())
        written = await asyncio.gather(*(write(s) for s in sessions))
        done.set()
        await reader
    everything = sorted(i for ids in written for i in ids)
    assert len(everything) == WRITERS * EACH == len(set(everything))
    assert seen == everything, "the reader missed an event or saw one out of order"


def _outbox(session_id: str, n: int) -> OutboxItem:
    return OutboxItem(
        event_type="message",
        url="https://hooks.example.com/support",
        idempotency_key=f"{session_id}-{n}",
        payload={"n": n},
        expires_at=datetime.now(UTC) + timedelta(days=1),
    )
