"""The upgrade from the release before session leases: conversations it left mid-way carry on.

``legacy/a1ca2bb/`` holds databases that release wrote over HTTP and its CLI (awaiting a
value, a stated refund waiting for a yes, a free-text question, resolved, and with a person
who claimed the conversation and replied), at schema version 4. There the hand-off packet
lives only in the checkpoint; the session row gets a column for it in version 5. Opening them
with today's code applies migration 5, and each conversation must go on where it stood.

Written with ``legacy/make_legacy.py --bin <a1ca2bb>/.venv/bin/supportgraph --out
tests/persistence/legacy/a1ca2bb``, then ``gzip -9n`` on the SQLite file and the dump (they
shrink about tenfold).
"""

from __future__ import annotations

import gzip
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest

from tests.conftest import make_settings, running_app
from tests.handoff.helpers import AgentClient, agent_token
from tests.persistence.test_legacy_checkpoints import Customer
from tests.test_retention import sql
from tests.utils.db import base_url, require_postgres

LEGACY = Path(__file__).parent / "legacy" / "a1ca2bb"
MANIFEST = json.loads((LEGACY / "manifest.json").read_text())
SECRET = MANIFEST["secret_key"]
LEASE_COLUMNS = {"lease_owner", "lease_token", "lease_expires_at", "escalation"}


@contextmanager
def legacy_database(backend: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Settings overrides for a fresh copy of the legacy database of ``backend``."""
    if backend == "sqlite":
        path = tmp_path / "sg.sqlite"
        path.write_bytes(gzip.decompress((LEGACY / "legacy.sqlite.gz").read_bytes()))
        yield {"sqlite_path": path, "secret_key": SECRET}
        return
    require_postgres()
    schema = "sgupgrade_" + secrets.token_hex(6)
    dump = gzip.decompress((LEGACY / "legacy_postgres.sql.gz").read_bytes()).decode()
    # psql's meta-commands (\restrict) are not SQL.
    script = "\n".join(
        line
        for line in dump.replace("__SCHEMA__", schema).splitlines()
        if not line.startswith("\\")
    )
    with psycopg.connect(base_url(), autocommit=True) as conn:
        conn.execute(script.encode())
    url = f"{base_url()}?options={quote(f'-csearch_path={schema}')}"
    try:
        yield {"database_url": url, "sqlite_path": tmp_path / "unused.sqlite", "secret_key": SECRET}
    finally:
        with psycopg.connect(base_url(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def schema_state(overrides: dict[str, Any]) -> tuple[list[int], set[str]]:
    """The recorded migration versions, and which of version 5's session columns exist."""
    versions = sorted(r[0] for r in sql(overrides, "SELECT version FROM sg_schema_migrations"))
    if overrides.get("database_url"):
        rows = sql(
            overrides,
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = 'sg_sessions'",
        )
    else:
        rows = sql(overrides, "SELECT name FROM pragma_table_info('sg_sessions')")
    return versions, {r[0] for r in rows} & LEASE_COLUMNS


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_conversations_left_by_the_previous_release_carry_on(
    backend: str, tmp_path: Path
) -> None:
    sessions = MANIFEST[backend]
    with legacy_database(backend, tmp_path) as overrides:
        assert schema_state(overrides) == ([1, 2, 3, 4], set()), "not a version 4 database"
        async with running_app(make_settings(**overrides)) as client:
            assert schema_state(overrides) == ([1, 2, 3, 4, 5], LEASE_COLUMNS)

            # Asked for the email: the order number given last time is still there.
            waiting = Customer(client, sessions["awaiting_email"], secret=SECRET)
            before = await waiting.session()
            assert (before["status"], before["slots"]) == (
                "awaiting_info",
                {"order_number": "1042"},
            )
            out = await waiting.say("caleb.hughes@example.org")
            assert out["status"] == "resolved", out
            assert out["route"] == ["classify_intent", "collect_info", "resolve"]
            assert "1042" in out["reply"] and "delivered" in out["reply"]
            assert not out["reply"].startswith("Hi, welcome"), "greeted twice"

            # A refund was stated and waited for a yes: the yes carries it out, once.
            refund = Customer(client, sessions["pending_refund"], secret=SECRET)
            before = await refund.session()
            assert before["status"] == "awaiting_info"
            assert before["slots"]["order_number"] == "1044"
            out = await refund.say("yes")
            assert out["status"] == "resolved", out
            assert out["route"] == ["classify_intent", "resolve"]
            assert "R-" in out["reply"]
            requests = sql(
                overrides,
                "SELECT kind FROM sg_requests WHERE session_id = %s",
                (sessions["pending_refund"],),
            )
            assert len(requests) == 1, requests

            # A free-text question was asked: the answer is taken, then confirmed.
            ticket = Customer(client, sessions["awaiting_question"], secret=SECRET)
            out = await ticket.say("does the oak bench come in walnut?")
            assert out["status"] == "awaiting_info" and "?" in out["reply"], out
            out = await ticket.say("yes please")
            assert out["status"] == "resolved", out

            # A resolved conversation: the next message is a new topic.
            resolved = Customer(client, sessions["resolved"], secret=SECRET)
            out = await resolved.say("how much is shipping?")
            assert out["status"] == "active" and out["citations"], out
            assert out["route"] == ["classify_intent", "handle_faq"]

            await _escalated_carries_on(client, overrides, sessions["escalated"])


async def _escalated_carries_on(
    client: httpx.AsyncClient, overrides: dict[str, Any], session_id: str
) -> None:
    """With a person who claimed it: still theirs, the packet visible, the bot quiet."""
    alice = AgentClient(client, agent_token(overrides, "legacy-alice"))
    bob = AgentClient(client, agent_token(overrides, "bob"))
    customer = Customer(client, session_id, secret=SECRET)

    view = await alice.get(f"/sessions/{session_id}")
    assert view["status"] == "escalated"
    assert view["claimed_by"] == "legacy-alice" and view["claimed_at"]
    assert view["escalation_reason"] == "requested_human"
    packet = view["escalation"]
    assert packet and packet["reason"] == "requested_human" and packet["summary"], view
    assert view["summary"] == packet["summary"]
    assert (await customer.session())["escalation"] == packet
    queue = await alice.get("/sessions", status="escalated")
    [entry] = [e for e in queue["items"] if e["session_id"] == session_id]
    assert entry["claimed_by"] == "legacy-alice"

    out = await customer.say("thanks Alice")
    assert out["status"] == "escalated" and out["reply"] == "", out
    after = await alice.get(f"/sessions/{session_id}")
    assert after["status"] == "escalated"
    assert (after["claimed_by"], after["claimed_at"]) == ("legacy-alice", view["claimed_at"])
    assert after["escalation"] == packet
    assert (await customer.session())["escalation"] == packet

    await bob.post(f"/sessions/{session_id}/claim", expect=409)
    await alice.post(f"/sessions/{session_id}/reply", {"text": "Back again, one moment."})
    await alice.post(f"/sessions/{session_id}/hand-back")
    out = await customer.say("where is my order 1042?")
    assert out["status"] == "awaiting_info" and out["intent"] == "order_status", out
    roles = [m["role"] for m in (await customer.session())["messages"]]
    assert roles == [
        "customer",
        "assistant",
        "customer",
        "agent",
        "customer",
        "agent",
        "customer",
        "assistant",
    ]
