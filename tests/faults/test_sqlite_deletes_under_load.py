"""Found by the soak: on SQLite, a DELETE among concurrent turns answered 503 once in five.

The session was deleted (its transaction had committed); the space reclaim after it (an
incremental vacuum) cannot run while another turn's statement is open on the shared
connection. Reclaiming is housekeeping: it waits for the next delete, the customer gets 204.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.common import load_profile_settings
from tests.utils.chat import Customer


async def test_deletes_among_concurrent_turns_answer_204_on_sqlite(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    async with app_factory(**sqlite_backend, **load_profile_settings()) as client:

        async def customer() -> list[tuple[int, int]]:
            outcomes = []
            for _ in range(4):
                talk = Customer(client)
                await talk.say("how much is shipping?")
                await talk.say("do you ship abroad?")
                auth = {"Authorization": f"Bearer {talk.token}"}
                path = f"/api/support/sessions/{talk.session_id}"
                deleted = await client.delete(path, headers=auth)
                after = await client.get(path, headers=auth)
                outcomes.append((deleted.status_code, after.status_code))
            return outcomes

        results = await asyncio.gather(*(customer() for _ in range(6)))
    outcomes = [o for per_customer in results for o in per_customer]
    assert outcomes == [(204, 404)] * len(outcomes), outcomes
