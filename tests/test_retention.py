"""Retention: deleting a session leaves no row of it, prune keeps live threads, space comes back."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.test_cli import run
from tests.utils.chat import Customer, app_of
from tests.utils.orders import order
from tests.utils.servers import clean_env as cli_env

ADMIN = "admin-token-for-tests-0123456789"
PLACED = order("placed")
DELIVERED = order("delivered")


def _mentions(value: Any, needle: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bytes | bytearray | memoryview):
        return needle.encode() in bytes(value)
    if isinstance(value, str):
        return needle in value
    return needle in json.dumps(value, default=str)


def rows_mentioning(backend: dict[str, Any], needle: str) -> dict[str, int]:
    """Rows of every table with ``needle`` in any column (text, JSON or bytes), by table."""
    found: dict[str, int] = {}
    if backend.get("database_url"):
        with psycopg.connect(backend["database_url"]) as conn:
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
                )
            ]
            for table in tables:
                rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
                hits = sum(any(_mentions(v, needle) for v in row) for row in rows)
                if hits:
                    found[table] = hits
        return found
    with sqlite3.connect(backend["sqlite_path"]) as conn:
        tables = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not r[0].startswith("sqlite_")
        ]
        for table in tables:
            rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
            hits = sum(any(_mentions(v, needle) for v in row) for row in rows)
            if hits:
                found[table] = hits
    return found


def sql(backend: dict[str, Any], statement: str, params: tuple[Any, ...] = ()) -> list[tuple]:
    """Run one statement on the test database (``%s`` placeholders)."""
    if backend.get("database_url"):
        with psycopg.connect(backend["database_url"], autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []
    with sqlite3.connect(backend["sqlite_path"]) as conn:
        return conn.execute(statement.replace("%s", "?"), params).fetchall()


def checkpoints_of(backend: dict[str, Any], thread_id: str) -> int:
    """How many checkpoints the thread has."""
    return sql(backend, "SELECT COUNT(*) FROM checkpoints WHERE thread_id = %s", (thread_id,))[0][0]


async def _refund_requested(customer: Customer) -> None:
    await customer.say(f"I want a refund for order {DELIVERED['order_id']}")
    await customer.say(DELIVERED["email"])
    await customer.say("it arrived damaged")
    done = await customer.say("yes please")
    assert done["status"] == "resolved"


async def test_delete_leaves_no_row_of_the_session(
    app_factory: Any, backend: dict[str, Any]
) -> None:
    async with app_factory(**backend) as client:
        gone, kept = Customer(client), Customer(client)
        await _refund_requested(gone)
        await gone.say("I want to talk to a person")
        await kept.say("how much is shipping?")
        await kept.say(f"where is my order {PLACED['order_id']}")
        assert gone.session_id is not None
        assert rows_mentioning(backend, gone.session_id)  # transcript, checkpoints, requests...
        headers = {"Authorization": f"Bearer {gone.token}"}
        response = await client.delete(f"/api/support/sessions/{gone.session_id}", headers=headers)
        assert response.status_code == 204, response.text
        assert rows_mentioning(backend, gone.session_id) == {}
        # Actions the assistant took are audited too (tests/security/test_audit.py).
        audit = sql(
            backend,
            "SELECT action, subject_sha256, actor FROM sg_audit WHERE action = 'session_deleted'",
        )
        digest = hashlib.sha256(gone.session_id.encode()).hexdigest()
        assert [tuple(r) for r in audit] == [("session_deleted", digest, "customer")]

        again = await client.get(f"/api/support/sessions/{gone.session_id}", headers=headers)
        assert again.status_code == 404
        assert (
            await client.delete(f"/api/support/sessions/{gone.session_id}", headers=headers)
        ).status_code == 404
        await gone.say("hello?", expect=404)

        # The other conversation is untouched and goes on.
        done = await kept.say(PLACED["email"])
        assert done["status"] == "resolved"
        assert len((await kept.transcript())["messages"]) == 6


async def test_delete_needs_the_session_token_or_the_admin_token(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    async with app_factory(**sqlite_backend, admin_token=ADMIN) as client:
        mine, other = Customer(client), Customer(client)
        await mine.say("hello")
        await other.say("hello")
        url = f"/api/support/sessions/{mine.session_id}"
        assert (await client.delete(url)).status_code == 401
        wrong = await client.delete(url, headers={"Authorization": "Bearer not-the-admin-token"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "unauthorized"
        foreign = await client.delete(url, headers={"Authorization": f"Bearer {other.token}"})
        assert foreign.status_code == 404
        admin = await client.delete(url, headers={"Authorization": f"Bearer {ADMIN}"})
        assert admin.status_code == 204
        assert (
            await client.delete(url, headers={"Authorization": f"Bearer {ADMIN}"})
        ).status_code == 404
        actors = sql(sqlite_backend, "SELECT actor FROM sg_audit")
    assert actors == [("admin",)]


async def test_without_an_admin_token_setting_no_bearer_is_admin(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    async with app_factory(**sqlite_backend) as client:
        customer = Customer(client)
        await customer.say("hello")
        url = f"/api/support/sessions/{customer.session_id}"
        for token in ("", "None", "null"):
            response = await client.delete(url, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code in (401, 403), response.text
        assert (await customer.transcript())["messages"]


async def test_sqlite_gives_the_space_of_a_deleted_session_back(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    path = sqlite_backend["sqlite_path"]
    async with app_factory(**sqlite_backend, keep_checkpoints=0) as client:
        big = Customer(client)
        for i in range(15):
            await big.say(f"question {i}: how much is shipping? " + "details " * 450)
        with sqlite3.connect(path) as conn:
            pages_before = conn.execute("PRAGMA page_count").fetchone()[0]
            assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
        response = await client.delete(
            f"/api/support/sessions/{big.session_id}",
            headers={"Authorization": f"Bearer {big.token}"},
        )
        assert response.status_code == 204
        with sqlite3.connect(path) as conn:
            pages_after = conn.execute("PRAGMA page_count").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    assert free == 0
    assert pages_after < pages_before / 2, (pages_before, pages_after)


async def test_checkpoints_are_trimmed_to_the_latest_k_and_the_thread_goes_on(
    app_factory: Any, backend: dict[str, Any]
) -> None:
    async with app_factory(**backend, keep_checkpoints=2, durability="sync") as client:
        customer = Customer(client)
        for text in ("hi", "how much is shipping?", "do you ship abroad?"):
            await customer.say(text)
        await customer.say(f"where is my order {PLACED['order_id']}")
        assert customer.session_id is not None
        assert checkpoints_of(backend, customer.session_id) == 2, "trimmed after turn 4"
        done = await customer.say(PLACED["email"])
        session = await customer.transcript()
    assert done["status"] == "resolved", "the slots survived the trim"
    assert len(session["messages"]) == 10, "the transcript keeps every message"


async def test_prune_deletes_idle_sessions_and_keeps_the_state_of_live_ones(
    app_factory: Any, backend: dict[str, Any], tmp_path: Path
) -> None:
    env = cli_env(tmp_path)
    if backend.get("database_url"):
        env["SUPPORTGRAPH_DATABASE_URL"] = backend["database_url"]
    else:
        env["SUPPORTGRAPH_SQLITE_PATH"] = str(backend["sqlite_path"])
    async with app_factory(**backend, keep_checkpoints=0, durability="sync") as client:
        idle, live = Customer(client), Customer(client)
        await idle.say("how much is shipping?")
        for text in ("hi", "how much is shipping?", "do you ship abroad?"):
            await live.say(text)
        await live.say(f"where is my order {PLACED['order_id']}")
        assert idle.session_id is not None and live.session_id is not None
        service = app_of(client).state.service
        state_before = await service.graph.values(live.session_id)
        transcript_before = await live.transcript()
        assert checkpoints_of(backend, live.session_id) > 3
        long_ago = datetime.now(UTC) - timedelta(days=40)
        stamp = long_ago.isoformat() if not backend.get("database_url") else long_ago
        sql(
            backend,
            "UPDATE sg_sessions SET updated_at = %s WHERE id = %s",
            (stamp, idle.session_id),
        )

        dry = run(["prune", "--older-than", "30d", "--dry-run"], env)
        assert dry.returncode == 0, dry.stderr
        assert "would delete 1 session" in dry.stdout
        assert rows_mentioning(backend, idle.session_id)

        result = run(["prune", "--older-than", "30d", "--keep-checkpoints", "2"], env)
        assert result.returncode == 0, result.stderr
        assert "deleted 1 session" in result.stdout

        assert rows_mentioning(backend, idle.session_id) == {}
        assert checkpoints_of(backend, live.session_id) == 2
        assert await service.graph.values(live.session_id) == state_before
        assert await live.transcript() == transcript_before
        done = await live.say(PLACED["email"])
    assert done["status"] == "resolved"


def test_prune_refuses_a_duration_it_cannot_read(tmp_path: Path) -> None:
    result = run(["prune", "--older-than", "thirty days"], cli_env(tmp_path))
    assert result.returncode == 2
    assert "not a duration" in result.stderr


@pytest.mark.parametrize("text", ["30d", "12h", "90m", "2w", "45s"])
def test_durations(text: str) -> None:
    from supportgraph.cli import parse_age

    seconds = {"d": 86400, "h": 3600, "m": 60, "w": 604800, "s": 1}[text[-1]]
    assert parse_age(text) == timedelta(seconds=int(text[:-1]) * seconds)
