"""The session lease: turns of one session one at a time, in message order, across processes.

Two persistence objects on one database stand in for two processes (each has its own pool or
connection, its own wake-ups and, on PostgreSQL, its own LISTEN connection); a real
subprocess stands in for a process that dies holding a lease.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from checkpoints import Persistence, open_persistence
from checkpoints.store import SqlStore
from supportgraph.domain.ports import LeaseLost, SessionNotFound

SESSION = "lease-session"


@asynccontextmanager
async def processes(
    backend: dict[str, Any], count: int = 2, *, lease_seconds: float = 15.0
) -> AsyncIterator[list[SqlStore]]:
    """``count`` stores on the backend's database, as separate processes would open it."""
    async with AsyncExitStack() as stack:
        opened: list[Persistence] = []
        for _ in range(count):
            opened.append(
                await stack.enter_async_context(
                    open_persistence(
                        database_url=backend.get("database_url"),
                        sqlite_path=Path(backend["sqlite_path"]),
                        lease_seconds=lease_seconds,
                    )
                )
            )
        await opened[0].store.create_session(SESSION, pack_name="store", pack_version="1")
        yield [p.store for p in opened]


async def lease_row(store: SqlStore) -> dict[str, Any]:
    rows = await store._fetch(
        "SELECT lease_owner, lease_token, lease_expires_at FROM sg_sessions WHERE id = %s",
        (SESSION,),
    )
    return rows[0]


async def free(store: SqlStore) -> bool:
    """Whether another holder could take the session now."""
    async with store.hold(SESSION, wait=False) as lease:
        return lease is not None


async def test_turns_run_in_the_order_their_messages_were_stored(
    backend: dict[str, Any],
) -> None:
    async with processes(backend) as (a, b):
        first = await a.append_message(SESSION, role="customer", content="1", pending_owner="o1")
        second = await b.append_message(SESSION, role="customer", content="2", pending_owner="o2")
        third = await a.append_message(SESSION, role="customer", content="3", pending_owner="o3")
        ran: list[str] = []

        async def turn(store: SqlStore, message_id: int, owner: str) -> None:
            async with store.hold(SESSION, message_id=message_id, owner=owner) as lease:
                assert lease is not None
                ran.append(owner)
                await asyncio.sleep(0.05)  # the model thinking
                async with store.transaction(lease) as tx:
                    await tx.answered([message_id])

        # The waiters arrive in the opposite order to their messages.
        third_turn = asyncio.create_task(turn(a, third, "o3"))
        await asyncio.sleep(0.05)
        second_turn = asyncio.create_task(turn(b, second, "o2"))
        await asyncio.sleep(0.05)
        await asyncio.gather(turn(a, first, "o1"), second_turn, third_turn)
        assert ran == ["o1", "o2", "o3"]
        assert await a.pending_turns(SESSION) == 0
        assert (await lease_row(a))["lease_owner"] is None


async def test_a_waiter_in_another_process_starts_on_the_let_go_not_on_its_next_poll(
    backend: dict[str, Any],
) -> None:
    """On PostgreSQL a NOTIFY wakes the other process at once (it polls only every
    second as a safety net); SQLite has no notifications, and another process (the CLI) looks
    again every 0.1 s."""
    async with processes(backend) as (a, b):
        started_at: list[float] = []

        async def waiter() -> None:
            async with b.hold(SESSION) as lease:
                assert lease is not None
                started_at.append(time.monotonic())

        async with a.hold(SESSION) as held:
            assert held is not None
            waiting = asyncio.create_task(waiter())
            await asyncio.sleep(0.3)  # the waiter tried, and is listening
            assert not started_at
        let_go_at = time.monotonic()
        await waiting
        delay = started_at[0] - let_go_at
        # Half PostgreSQL's poll: only the notification can have woken it this soon.
        limit = b._poll / 2 if b.backend == "postgres" else b._poll + 0.1
        assert delay < limit, f"the waiter started {delay * 1000:.0f} ms after the let-go"


async def test_a_lease_is_renewed_across_a_slow_model_call(backend: dict[str, Any]) -> None:
    async with processes(backend, lease_seconds=0.6) as (a, b):
        async with a.hold(SESSION) as lease:
            assert lease is not None
            for _ in range(5):  # 1.5 s: two and a half lease lengths
                await asyncio.sleep(0.3)
                assert not await free(b), "another process took a lease that was being renewed"
            async with a.transaction(lease) as tx:
                await tx.touch_session(SESSION)


async def test_a_turn_that_lost_its_lease_writes_nothing(backend: dict[str, Any]) -> None:
    """A holder stalled past its lease's expiry (its renewals never reached the database)
    is taken over; its commit is refused at the fence, and nothing of its turn is stored:
    not the reply, not the request, not the checkpoint."""
    async with processes(backend) as (a, b):
        async with a.hold(SESSION) as stalled:
            assert stalled is not None
            # The stall: the lease runs out as if no renewal had got through.
            await a._execute(
                "UPDATE sg_sessions SET lease_expires_at = %s WHERE id = %s",
                (a._ts(datetime(2000, 1, 1, tzinfo=UTC)), SESSION),
            )
            async with b.hold(SESSION, wait=False) as taken:
                assert taken is not None, "an expired lease is taken over"
                with a.deferring() as deferred:
                    request_id = await a.create_request(
                        session_id=SESSION, kind="refund", data={}, idempotency_key="lost-1"
                    )
                with pytest.raises(LeaseLost):
                    async with a.transaction(stalled, deferred) as tx:
                        await tx.append_message(SESSION, role="assistant", content="too late")
                        await tx.finish_turn(SESSION, status="active", intent="faq")
                async with b.transaction(taken) as tx:
                    await tx.touch_session(SESSION)
        assert request_id.startswith("R-")
        assert await a.list_requests(SESSION) == []
        assert await a.list_messages(SESSION) == []
        session = await a.get_session(SESSION)
        assert session is not None and session.turns == 0
        assert (await lease_row(a))["lease_owner"] is None, "the stalled holder's exit let go"


async def test_cancelled_at_any_point_a_hold_leaves_nothing_held(
    backend: dict[str, Any],
) -> None:
    """Cancel a hold at a spread of moments: while it tries, right after the database granted
    it, while it waits behind another holder, just as that holder lets go, and while it lets
    go itself. Each time the session must be free again as soon as the shielded let-go ran."""
    delays = [0.0, 0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.008, 0.012, 0.02, 0.05]
    async with processes(backend) as (a, b):

        async def hold_forever(store: SqlStore) -> None:
            async with store.hold(SESSION):
                await asyncio.Event().wait()

        async def settle() -> None:
            for store in (a, b):
                await store.aclose()  # let-goes still in flight finish

        for delay in delays:
            # Uncontended: cancelled while acquiring, or after it holds.
            task = asyncio.create_task(hold_forever(b))
            await asyncio.sleep(delay)
            task.cancel()
            async with asyncio.timeout(20):
                await asyncio.gather(task, return_exceptions=True)
            await settle()
            assert await free(a), f"left held after a cancel at {delay * 1000:.1f} ms"

            # Contended: cancelled while waiting, or just after the holder let go.
            holder = asyncio.create_task(hold_forever(a))
            await asyncio.sleep(0.02)
            waiter = asyncio.create_task(hold_forever(b))
            await asyncio.sleep(0.05)
            holder.cancel()
            await asyncio.sleep(delay)
            waiter.cancel()
            # A cancellation the hold swallowed would leave it holding forever: fail instead.
            async with asyncio.timeout(20):
                await asyncio.gather(holder, waiter, return_exceptions=True)
            await settle()
            assert await free(a), f"left held after a cancel {delay * 1000:.1f} ms after let-go"
        assert (await lease_row(a))["lease_owner"] is None


async def test_holding_a_session_that_does_not_exist_says_so(backend: dict[str, Any]) -> None:
    async with processes(backend, count=1) as (a,):
        with pytest.raises(SessionNotFound):
            async with a.hold("no-such-session"):
                pass


HOLDER = """
import asyncio, sys
from pathlib import Path
from checkpoints import open_persistence

async def main():
    url = sys.argv[1] or None
    async with open_persistence(
        database_url=url, sqlite_path=Path(sys.argv[2]), lease_seconds=float(sys.argv[3])
    ) as p:
        async with p.store.hold(sys.argv[4]) as lease:
            print("held", lease.token, flush=True)
            await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_holder_that_died_loses_its_lease_at_expiry(backend: dict[str, Any]) -> None:
    lease_seconds = 1.5
    async with processes(backend, count=1, lease_seconds=lease_seconds) as (a,):
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                HOLDER,
                backend.get("database_url") or "",
                str(backend["sqlite_path"]),
                str(lease_seconds),
                SESSION,
            ],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        try:
            assert holder.stdout is not None
            line = await asyncio.to_thread(holder.stdout.readline)
            assert line.startswith(b"held"), line
            os.kill(holder.pid, signal.SIGKILL)
            died_at = time.monotonic()
            holder.wait(timeout=10)
            assert not await free(a), "a dead holder's lease lasts until it expires"
            async with a.hold(SESSION) as lease:
                assert lease is not None
                waited = time.monotonic() - died_at
                assert lease.token == int(line.split()[1]) + 1
        finally:
            holder.kill()
            holder.wait(timeout=10)
        assert waited <= lease_seconds + 1.5, f"took {waited:.1f} s to take over"
