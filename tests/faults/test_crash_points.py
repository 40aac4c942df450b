"""A process killed at each write boundary of a turn, of an agent's action and of a webhook
delivery: after a restart nothing acknowledged is lost or doubled, and nothing stays locked.

The kill is the service's own crash point (``SUPPORTGRAPH_FAULT_CRASH_AT``): the real process
exits on the spot as under ``kill -9``. A real receiver on loopback takes the webhooks. What
the database kept is read straight from it afterwards.

Invariants checked after every crash and restart:

- every message stored is in the transcript exactly once, with exactly one ``message`` event;
- a message stored before the crash is never dropped: the next turn of its session reads it
  (it is folded into that turn), so the hand-off it asked for still happens;
- the escalation has exactly one outbox row, delivered at least once, always under one id;
- no session is left locked: the next turn runs, and the lease is free after it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from supportgraph.domain.webhooks import IDEMPOTENCY_HEADER
from tests.faults.conftest import service_env
from tests.handoff.helpers import agent_token
from tests.handoff.test_webhooks import SECRET, Receiver, receiver
from tests.utils.db import fresh_schema
from tests.utils.servers import free_port
from tests.utils.servers import serve_process as serving

HUMAN = "I'd like to talk to a real person please"
SERVER_KEY = "crash-test-server-key"
LEASE_SECONDS = 1.0
TURN_POINTS = ["turn.message_stored", "turn.graph_done", "turn.in_commit", "turn.committed"]
AGENT_POINTS = ["agent.graph_done", "agent.in_commit", "agent.committed"]


@contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The service's database settings (environment) for ``kind``."""
    if kind == "sqlite":
        yield {}
    else:
        with fresh_schema() as url:
            yield {"SUPPORTGRAPH_DATABASE_URL": url}


def rows(kind: str, tmp_path: Path, db: dict[str, str], sql: str, *params: Any) -> list[Any]:
    """Query the service's database directly (``%s`` placeholders)."""
    if kind == "sqlite":
        with sqlite3.connect(tmp_path / "sg.sqlite") as conn:
            return conn.execute(sql.replace("%s", "?"), params).fetchall()
    with psycopg.connect(db["SUPPORTGRAPH_DATABASE_URL"]) as conn:
        return conn.execute(sql, params).fetchall()


class Customer:
    """A customer of a session the company's backend created (so its id survives a crash)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.session_id = ""
        self.token = ""
        self.acknowledged: list[str] = []

    async def start(self) -> None:
        response = await self.client.post(
            "/api/support/sessions",
            headers={"X-API-Key": SERVER_KEY, "X-Customer-ID": "crash-customer"},
        )
        assert response.status_code == 201, response.text
        self.session_id = response.json()["session_id"]
        self.token = response.json()["session_token"]

    async def say(self, text: str) -> int:
        """Post a message; 0 when the process died before answering."""
        try:
            response = await self.client.post(
                "/api/support/chat",
                json={"message": text, "session_id": self.session_id},
                headers={"Authorization": f"Bearer {self.token}"},
            )
        except httpx.TransportError:
            return 0
        if response.status_code == 200:
            self.acknowledged.append(text)
        return response.status_code


def check_invariants(
    kind: str, tmp_path: Path, db: dict[str, str], customer: Customer, hooks: Receiver
) -> list[tuple[str, str]]:
    """The invariants of the module docstring; the transcript as (role, content)."""
    sid = customer.session_id
    messages = rows(
        kind,
        tmp_path,
        db,
        "SELECT id, role, content FROM sg_messages WHERE session_id = %s ORDER BY id",
        sid,
    )
    events = rows(
        kind,
        tmp_path,
        db,
        "SELECT data FROM sg_events WHERE session_id = %s AND kind = 'message'",
        sid,
    )
    logged = sorted(
        int((e[0] if isinstance(e[0], dict) else json.loads(e[0]))["message_id"]) for e in events
    )
    assert logged == sorted(int(m[0]) for m in messages), "one message event per message"
    said = [m[2] for m in messages if m[1] == "customer"]
    for text in {*customer.acknowledged, HUMAN}:
        assert said.count(text) == 1, f"{text!r} kept {said.count(text)} times"
    session = rows(
        kind, tmp_path, db, "SELECT status, lease_owner FROM sg_sessions WHERE id = %s", sid
    )
    assert session[0][1] is None, "the session's lease is free"
    assert session[0][0] == "escalated", "the hand-off asked for before the crash happened"
    outbox = rows(
        kind,
        tmp_path,
        db,
        "SELECT idempotency_key FROM sg_outbox WHERE session_id = %s AND event_type = 'escalated'",
        sid,
    )
    assert len(outbox) == 1, f"{len(outbox)} outbox rows for one escalation"
    delivered = [r for r in hooks.wait_for(1) if r.answered == 200]
    assert {r.headers[IDEMPOTENCY_HEADER] for r in delivered} == {outbox[0][0]}
    return [(m[1], m[2]) for m in messages]


def service(tmp_path: Path, db: dict[str, str], hooks: Receiver, **extra: str) -> dict[str, str]:
    return service_env(
        tmp_path,
        **db,
        SUPPORTGRAPH_LEASE_SECONDS=str(LEASE_SECONDS),
        SUPPORTGRAPH_SERVER_API_KEYS=json.dumps([SERVER_KEY]),
        SUPPORTGRAPH_WEBHOOK_URLS=json.dumps([hooks.url]),
        SUPPORTGRAPH_WEBHOOK_SECRET=SECRET,
        SUPPORTGRAPH_WEBHOOK_POLL_SECONDS="0.2",
        SUPPORTGRAPH_WEBHOOK_BACKOFF_INITIAL="0.2",
        SUPPORTGRAPH_WEBHOOK_TIMEOUT="1",
        **extra,
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("point", TURN_POINTS)
async def test_a_turn_killed_at_each_write_boundary(kind: str, point: str, tmp_path: Path) -> None:
    port = free_port()
    with database(kind, tmp_path) as db, receiver() as hooks:
        crashing = service(tmp_path, db, hooks, SUPPORTGRAPH_FAULT_CRASH_AT=json.dumps([point]))
        with serving(tmp_path, port, env=crashing) as base:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                customer = Customer(client)
                await customer.start()
                assert await customer.say(HUMAN) == 0, "the process died in the turn"
        with serving(tmp_path, port, env=service(tmp_path, db, hooks)) as base:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                customer.client = client
                # Waits for the dead turn's lease to expire, then reads its message too.
                assert await customer.say("are you there?") == 200
                assert await customer.say("hello?") == 200
            transcript = await asyncio.to_thread(
                check_invariants, kind, tmp_path, db, customer, hooks
            )
    said = [c for r, c in transcript if r == "customer"]
    assert said == [HUMAN, "are you there?", "hello?"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("point", AGENT_POINTS)
async def test_an_agent_reply_killed_at_each_write_boundary(
    kind: str, point: str, tmp_path: Path
) -> None:
    port = free_port()
    with database(kind, tmp_path) as db, receiver() as hooks:
        token = agent_token({"secret_key": service_env(tmp_path)["SUPPORTGRAPH_SECRET_KEY"]})
        agent = {"Authorization": f"Bearer {token}"}
        crashing = service(tmp_path, db, hooks, SUPPORTGRAPH_FAULT_CRASH_AT=json.dumps([point]))
        with serving(tmp_path, port, env=crashing) as base:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                customer = Customer(client)
                await customer.start()
                assert await customer.say(HUMAN) == 200
                with pytest.raises(httpx.TransportError):
                    await client.post(
                        f"/api/agent/sessions/{customer.session_id}/reply",
                        json={"text": "Alice here, first try"},
                        headers=agent,
                    )
        with serving(tmp_path, port, env=service(tmp_path, db, hooks)) as base:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                customer.client = client
                again = await client.post(
                    f"/api/agent/sessions/{customer.session_id}/reply",
                    json={"text": "Alice here, second try"},
                    headers=agent,
                )
                assert again.status_code == 200, again.text
                assert await customer.say("thank you") == 200
                view = await client.get(f"/api/agent/sessions/{customer.session_id}", headers=agent)
            transcript = await asyncio.to_thread(
                check_invariants, kind, tmp_path, db, customer, hooks
            )
    agent_lines = [c for r, c in transcript if r == "agent"]
    first_kept = point == "agent.committed"
    assert agent_lines == (["Alice here, first try"] if first_kept else []) + [
        "Alice here, second try"
    ]
    shown = [m["content"] for m in view.json()["messages"] if m["role"] == "agent"]
    assert shown == agent_lines, "the agent view and the database agree"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_webhook_taken_but_not_marked_delivered_is_sent_again_under_its_id(
    kind: str, tmp_path: Path
) -> None:
    port = free_port()
    with database(kind, tmp_path) as db, receiver() as hooks:
        crashing = service(
            tmp_path, db, hooks, SUPPORTGRAPH_FAULT_CRASH_AT=json.dumps(["webhook.sent"])
        )
        with serving(tmp_path, port, env=crashing) as base:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                customer = Customer(client)
                await customer.start()
                assert await customer.say(HUMAN) == 200
            await asyncio.to_thread(hooks.wait_for, 1)
        with serving(tmp_path, port, env=service(tmp_path, db, hooks)) as base:
            await asyncio.to_thread(hooks.wait_for, 2, 30.0)
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                customer.client = client
                assert await customer.say("still there?") == 200
            await asyncio.to_thread(check_invariants, kind, tmp_path, db, customer, hooks)
    ids = [r.headers[IDEMPOTENCY_HEADER] for r in hooks.requests]
    assert len(ids) >= 2 and len(set(ids)) == 1, ids
