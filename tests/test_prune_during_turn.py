"""``supportgraph prune`` on SQLite while a turn of an idle session runs in the service.

The CLI is another process on the same file: it takes each session's lease from the shared
database, so it waits for the running turn, then sees that the turn made the session active
again and leaves it (with the reply the turn stored) alone.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.test_retention import sql
from tests.utils.chat import Customer, hold_turns
from tests.utils.orders import order
from tests.utils.servers import BIN
from tests.utils.servers import clean_env as cli_env

PLACED = order("placed")
PRUNE = ("prune", "--older-than", "30d", "--keep-checkpoints", "0")


async def start_prune(env: dict[str, str]) -> asyncio.subprocess.Process:
    """``supportgraph prune`` in its own process, not waited for."""
    return await asyncio.create_subprocess_exec(
        str(BIN),
        *PRUNE,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(process: asyncio.subprocess.Process) -> str:
    """Wait for the process; its output, once it exited successfully."""
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


async def test_prune_waits_for_the_turn_and_keeps_the_session_it_made_active(
    app_factory: Any,
    sqlite_backend: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {**cli_env(tmp_path), "SUPPORTGRAPH_SQLITE_PATH": str(sqlite_backend["sqlite_path"])}
    async with app_factory(**sqlite_backend) as client:
        customer = Customer(client)
        asked = await customer.say(f"where is my order {PLACED['order_id']}")
        assert asked["status"] == "awaiting_info", asked
        session_id = customer.session_id
        assert session_id is not None

        # How long a prune with nothing to wait for takes here (start-up included): "still
        # running" well past that means waiting for the turn, not starting slowly.
        started = time.monotonic()
        assert "deleted 0 session(s)" in await finish(await start_prune(env))
        alone = time.monotonic() - started

        long_ago = (datetime.now(UTC) - timedelta(days=40)).isoformat()
        sql(
            sqlite_backend,
            "UPDATE sg_sessions SET updated_at = %s WHERE id = %s",
            (long_ago, session_id),
        )
        gate = hold_turns(client, monkeypatch)
        turn = asyncio.create_task(customer.say(PLACED["email"]))
        await asyncio.wait_for(gate.entered.wait(), timeout=30)

        prune = await start_prune(env)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(prune.wait(), timeout=1.5 * alone + 1)
        lease = "SELECT lease_owner IS NOT NULL, lease_token FROM sg_sessions WHERE id = %s"
        [(held, token)] = sql(sqlite_backend, lease, (session_id,))
        assert held, "the turn holds the session's lease"

        gate.release.set()
        answer = await asyncio.wait_for(turn, timeout=30)
        assert answer["status"] == "resolved", answer
        # The session was idle when prune listed it; under the lease (taken once more, after
        # the turn's) it reads the turn's commit and leaves the session alone.
        assert "deleted 0 session(s)" in await finish(prune)
        assert sql(sqlite_backend, lease, (session_id,)) == [(0, token + 1)]

        session = await customer.transcript()
        assert [m["role"] for m in session["messages"]] == [
            "customer",
            "assistant",
            "customer",
            "assistant",
        ]
        assert session["messages"][-1]["content"] == answer["reply"]
        assert session["status"] == "resolved"
        assert (
            sql(
                sqlite_backend,
                "SELECT COUNT(*) FROM checkpoints WHERE thread_id = %s",
                (session_id,),
            )[0][0]
            > 0
        )
        assert sql(
            sqlite_backend, "SELECT COUNT(*) FROM sg_audit WHERE action = 'session_deleted'"
        ) == [(0,)]
        again = await customer.say("how much is shipping?")
        assert again["session_id"] == session_id
