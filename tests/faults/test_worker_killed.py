"""``kill -9`` under load: every turn that got a 200 is kept, exactly once, after a restart.

Customers post to many sessions at once while a process is killed: one of two uvicorn
workers on PostgreSQL (the supervisor starts another; the load goes on), or the single
process on SQLite. Afterwards the service is killed and started again and every session's
transcript is read back. (``tests/test_durability.py`` kills an idle server after a
conversation; here the kill lands in the middle of turns.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.faults.cluster import Cluster
from tests.faults.conftest import (
    Conversation,
    busiest_worker,
    lost_turns,
    server_pids,
    service_env,
)
from tests.utils.servers import free_port
from tests.utils.servers import serve_process as serving

CUSTOMERS = 12
QUESTIONS = (
    "how much is shipping?",
    "do you ship abroad?",
    "how long does delivery take?",
    "can I pick up my order in a store?",
    "how many days do I have to return something?",
)


async def _load(base: str, seconds: float, kill: asyncio.Event) -> list[Conversation]:
    """Customers post turn after turn for ``seconds``; ``kill`` is set a third of the way in."""
    client = httpx.AsyncClient(base_url=base, timeout=30, limits=httpx.Limits(max_connections=40))
    talks = [Conversation(client) for _ in range(CUSTOMERS)]
    deadline = time.monotonic() + seconds

    async def customer(n: int, talk: Conversation) -> None:
        turn = len(talk.statuses)
        while time.monotonic() < deadline:
            response = await talk.say(f"{QUESTIONS[(n + turn) % len(QUESTIONS)]} [{n}.{turn}]")
            turn += 1
            if response.status_code != 200:
                await asyncio.sleep(0.2)  # the worker is gone: try again in a moment

    async def trigger() -> None:
        await asyncio.sleep(seconds / 3)
        kill.set()

    async with client:
        await asyncio.gather(trigger(), *(customer(n, t) for n, t in enumerate(talks)))
    return talks


async def _check_after_restart(base: str, talks: list[Conversation]) -> dict[str, list[str]]:
    """Every session read back from the restarted service: the acknowledged turns missing."""
    lost = {}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for talk in talks:
            if talk.session_id is None:
                continue
            talk.client = client
            lost[talk.session_id] = lost_turns(talk.acknowledged, await talk.transcript())
            assert (await talk.say("thanks, that's all")).status_code == 200, "it goes on"
    return lost


@pytest.mark.slow
async def test_kill_9_of_a_worker_under_load_on_postgres(
    cluster: Cluster, database: str, tmp_path: Path
) -> None:
    port = free_port()
    env = service_env(tmp_path, SUPPORTGRAPH_DATABASE_URL=database)
    kill = asyncio.Event()
    with serving(tmp_path, port, "--workers", "2", env=env) as base:
        master, workers = server_pids(port)
        assert len(workers) == 2, workers

        async def kill_one_worker() -> int:
            await kill.wait()
            victim = busiest_worker(port, workers)
            os.kill(victim, signal.SIGKILL)
            return victim

        killer = asyncio.create_task(kill_one_worker())
        talks = await _load(base, 6, kill)
        victim = await killer
        # The supervisor replaces the worker (it notices within a second or so, and the new one
        # takes seconds to start on a busy machine) and keeps serving.
        deadline = time.monotonic() + 60
        after_master, after_workers = server_pids(port)
        while len(after_workers) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            after_master, after_workers = server_pids(port)
        assert after_master == master and victim not in after_workers
        assert len(after_workers) == 2
        before_restart = await _check_after_restart(base, talks)
    with serving(tmp_path, port, env=env) as base:
        after_restart = await _check_after_restart(base, talks)

    statuses = [s for talk in talks for s in talk.statuses]
    acknowledged = sum(len(talk.acknowledged) for talk in talks)
    print(
        f"postgres, 2 workers, one killed: {len(statuses)} posts, {acknowledged} acknowledged,"
        f" not answered: {len(statuses) - statuses.count(200)}"
        f" ({sorted(set(statuses) - {200})})"
    )
    assert set(statuses) <= {0, 200, 503}, "no 500s: a dead worker's requests simply get no answer"
    assert statuses.count(0) >= 1, "the kill landed on turns in flight"
    assert acknowledged >= 2 * CUSTOMERS
    assert all(not turns for turns in before_restart.values()), before_restart
    assert all(not turns for turns in after_restart.values()), after_restart


@pytest.mark.slow
async def test_kill_9_under_load_on_sqlite(tmp_path: Path) -> None:
    port = free_port()
    env = service_env(tmp_path)
    kill = asyncio.Event()
    with serving(tmp_path, port, env=env) as base:
        master, _ = server_pids(port)

        async def kill_the_server() -> None:
            await kill.wait()
            os.kill(master, signal.SIGKILL)

        killer = asyncio.create_task(kill_the_server())
        talks = await _load(base, 4, kill)
        await killer
    with serving(tmp_path, port, env=env) as base:
        lost = await _check_after_restart(base, talks)

    statuses = [s for talk in talks for s in talk.statuses]
    acknowledged = sum(len(talk.acknowledged) for talk in talks)
    print(
        f"sqlite, one process killed: {len(statuses)} posts, {acknowledged} acknowledged,"
        f" not answered: {len(statuses) - statuses.count(200)}"
    )
    assert set(statuses) <= {0, 200}
    assert statuses.count(0) >= 1, "the kill landed during the load"
    assert acknowledged >= CUSTOMERS
    assert all(not turns for turns in lost.values()), lost
