"""PostgreSQL ends the service's connections (``pg_terminate_backend``): the pool recovers.

A connection ended a moment ago can be lent before its end is visible; the persistence
layer then runs the operation once more on another connection where that is safe
(``checkpoints/retry.py``). Between turns the customer sees nothing; during a burst a turn
may fail with a 503, but no acknowledged turn is lost or stored twice, and the pool is back
to its size afterwards.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from checkpoints.retry import retry_once
from tests.faults.cluster import Cluster
from tests.faults.conftest import (
    Conversation,
    backends,
    lost_turns,
    service_env,
    terminate_backends,
    wait_ready,
)
from tests.utils.servers import free_port
from tests.utils.servers import serve_process as serving

POOL_MAX = 6
QUESTIONS = (
    "how much is shipping?",
    "do you ship abroad?",
    "how long does delivery take?",
    "can I pick up my order in a store?",
)


async def _pool(database: str) -> AsyncConnectionPool:
    pool = AsyncConnectionPool(
        database, min_size=1, max_size=2, open=False, timeout=5, kwargs={"autocommit": True}
    )
    await pool.open(wait=True)
    async with pool.connection() as conn:
        await conn.execute("CREATE TABLE lines (v text)")
    return pool


async def _count(pool: AsyncConnectionPool) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT count(*) FROM lines")).fetchone()
    return int(row[0]) if row else 0


async def test_a_write_is_retried_only_when_it_cannot_have_committed(
    cluster: Cluster, database: str
) -> None:
    """Real errors from a real server: the rule ``retry_once`` applies to writes."""
    pool = await _pool(database)
    try:
        # The server ends the session while the INSERT runs (AdminShutdown): rolled back,
        # so the write runs again and is stored once.
        attempts = 0

        async def slow_insert() -> None:
            nonlocal attempts
            attempts += 1
            pause = 30 if attempts == 1 else 0
            async with pool.connection() as conn:
                await conn.execute("INSERT INTO lines SELECT 'a' FROM pg_sleep(%s)", (pause,))

        def kill_the_sleeper() -> None:
            deadline = time.monotonic() + 20
            with psycopg.connect(cluster.url(), autocommit=True) as admin:
                while time.monotonic() < deadline:
                    row = admin.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE query LIKE 'INSERT INTO lines%%' AND state = 'active'"
                    ).fetchone()
                    if row and row[0]:
                        return
                    time.sleep(0.05)

        killer = threading.Thread(target=kill_the_sleeper)
        killer.start()
        start = time.monotonic()
        await retry_once(slow_insert, repeatable=False)
        killer.join()
        assert attempts == 2 and time.monotonic() - start < 25
        assert await _count(pool) == 1

        # The connection vanishes without a word from the server: the write may or may not
        # have committed, so it is not repeated (the caller answers 503) ...
        attempts = 0

        async def insert_on_a_cut_connection() -> None:
            nonlocal attempts
            attempts += 1
            async with pool.connection() as conn:
                socket.socket(fileno=os.dup(conn.fileno())).shutdown(socket.SHUT_RDWR)
                await conn.execute("INSERT INTO lines VALUES ('b')")

        with pytest.raises(psycopg.OperationalError) as lost:
            await retry_once(insert_on_a_cut_connection, repeatable=False)
        assert lost.value.sqlstate is None and attempts == 1

        # ... but a read (or an idempotent write) is.
        attempts = 0

        async def read_on_a_cut_connection() -> int:
            nonlocal attempts
            attempts += 1
            async with pool.connection() as conn:
                if attempts == 1:
                    socket.socket(fileno=os.dup(conn.fileno())).shutdown(socket.SHUT_RDWR)
                row = await (await conn.execute("SELECT count(*) FROM lines")).fetchone()
                return int(row[0]) if row else -1

        assert await retry_once(read_on_a_cut_connection, repeatable=True) == 1
        assert attempts == 2
    finally:
        await pool.close()


async def _kill_now_and_then(admin_url: str, stop: asyncio.Event, every: float) -> int:
    """Terminate every session of the service, every ``every`` seconds, until ``stop``."""
    killed = 0
    while not stop.is_set():
        killed += await asyncio.to_thread(terminate_backends, admin_url)
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass
    return killed


@pytest.mark.slow
async def test_connections_killed_between_turns_and_during_a_burst(
    cluster: Cluster, database: str, tmp_path: Path
) -> None:
    admin = cluster.url()
    env = service_env(
        tmp_path,
        SUPPORTGRAPH_DATABASE_URL=database,
        SUPPORTGRAPH_POOL_MAX_SIZE=str(POOL_MAX),
        SUPPORTGRAPH_POOL_TIMEOUT="5",
    )
    with serving(tmp_path, free_port(), env=env) as base:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
            # Between turns: every session of the service ended just before each request.
            calm = [Conversation(client) for _ in range(3)]
            killed_between = 0
            reads = []
            for round_ in range(6):
                for i, talk in enumerate(calm):
                    killed_between += terminate_backends(admin)
                    await talk.say(f"{QUESTIONS[(round_ + i) % len(QUESTIONS)]} (#{round_})")
                killed_between += terminate_backends(admin)
                reads.append(
                    (
                        await client.get(
                            f"/api/support/sessions/{calm[0].session_id}",
                            headers=calm[0].headers(),
                        )
                    ).status_code
                )
            between = [s for talk in calm for s in talk.statuses]

            # During a burst: 8 customers post while every session is ended every 0.2 s.
            busy = [Conversation(client) for _ in range(8)]
            stop = asyncio.Event()
            killer = asyncio.create_task(_kill_now_and_then(admin, stop, 0.2))

            async def customer(n: int, talk: Conversation) -> None:
                for turn in range(6):
                    await talk.say(f"{QUESTIONS[(n + turn) % len(QUESTIONS)]} ({n}.{turn})")

            await asyncio.gather(*(customer(n, t) for n, t in enumerate(busy)))
            stop.set()
            killed_during = await killer

            # Afterwards: ready, turns answered, and the pool back within its size.
            await wait_ready(client, timeout=30)
            for talk in (*calm, *busy):
                if talk.session_id is None:
                    continue
                assert (await talk.say("thanks, that's all")).status_code == 200
            lost, twice = {}, []
            for talk in (*calm, *busy):
                if talk.session_id is None:
                    continue
                messages = await talk.transcript()
                lost[talk.session_id] = lost_turns(talk.acknowledged, messages)
                said = [text for role, text in messages if role == "customer"]
                twice += [text for text in set(said) if said.count(text) > 1]
            sessions_now = len(backends(admin))

    during = [s for talk in busy for s in talk.statuses[:6]]
    print(
        f"between turns: {killed_between} sessions ended, statuses {sorted(set(between))};"
        f" burst: {killed_during} ended, {during.count(200)}/{len(during)} answered 200,"
        f" others {sorted(s for s in during if s != 200)}; sessions after: {sessions_now}"
    )
    assert killed_between >= 18 and killed_during >= 5, "the fault was injected"
    assert set(between) == {200} and set(reads) == {200}, "between turns: nothing seen"
    assert set(during) <= {200, 503}, "a lost connection is a 503, never a 500"
    assert during.count(200) >= len(during) // 2
    assert all(not turns for turns in lost.values()), lost
    assert twice == [], "no message stored twice (a retried write had not committed)"
    assert sessions_now <= POOL_MAX + 1, "no leaked connections (the pool and the listener)"
