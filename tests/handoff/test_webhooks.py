"""Escalation webhooks from the durable outbox: signed, retried with backoff, at least once,
delivered across a restart."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from supportgraph.domain.webhooks import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify
from tests.handoff.helpers import agent_token, live_server
from tests.utils.db import fresh_schema
from tests.utils.servers import clean_env, free_port, serve_process

SECRET = "webhook-secret-shared-with-the-receiver"
HUMAN = "I'd like to talk to a real person please"


@dataclass
class Received:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver on loopback that fails its first ``fail_first`` requests."""

    fail_first: int = 0
    requests: list[Received] = field(default_factory=list)
    url: str = ""

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Block until ``count`` successful deliveries arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len([r for r in self.requests if r.answered == 200]) >= count:
                return self.requests
            time.sleep(0.05)
        raise AssertionError(f"only {len(self.requests)} webhook requests arrived")


@contextmanager
def receiver(fail_first: int = 0) -> Iterator[Receiver]:
    """Run a :class:`Receiver` in a thread."""
    state = Receiver(fail_first=fail_first)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                code = 500 if len(state.requests) < state.fail_first else 200
                state.requests.append(Received(dict(self.headers), body, code))
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def webhook_settings(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "webhook_urls": [url],
        "webhook_secret": SECRET,
        "webhook_backoff_initial": 0.2,
        "webhook_backoff_max": 1.0,
        "webhook_poll_seconds": 0.2,
        "webhook_timeout": 2.0,
        **extra,
    }


def assert_genuine(request: Received) -> None:
    assert request.headers["Content-Type"] == "application/json"
    assert verify(SECRET, request.body, request.headers[SIGNATURE_HEADER])
    assert not verify("another-secret", request.body, request.headers[SIGNATURE_HEADER])
    assert request.headers[IDEMPOTENCY_HEADER] == request.payload["id"]


@pytest.mark.slow
def test_failed_deliveries_are_retried_until_they_succeed(sqlite_backend: dict[str, Any]) -> None:
    with receiver(fail_first=2) as hooks:
        events = ["escalated", "agent_reply", "resolved"]
        settings = {**sqlite_backend, **webhook_settings(hooks.url, webhook_events=events)}
        with live_server(**settings) as live:
            with httpx.Client(base_url=live.url, timeout=30) as client:
                first = client.post("/api/support/chat", json={"message": "where is my order?"})
                session = first.json()
                headers = {"Authorization": f"Bearer {session['session_token']}"}
                second = client.post(
                    "/api/support/chat",
                    json={"message": HUMAN, "session_id": session["session_id"]},
                    headers=headers,
                )
                assert second.json()["status"] == "escalated"
                got = hooks.wait_for(1)
                agent = {"Authorization": f"Bearer {agent_token(settings)}"}
                sid = session["session_id"]
                client.post(f"/api/agent/sessions/{sid}/reply", json={"text": "Hi"}, headers=agent)
                client.post(f"/api/agent/sessions/{sid}/resolve", headers=agent)
                got = hooks.wait_for(3)
        rows = _sqlite_outbox(sqlite_backend["sqlite_path"])

    attempts = [r for r in got if r.payload["type"] == "conversation.escalated"]
    assert [r.answered for r in attempts] == [500, 500, 200]
    assert len({r.headers[IDEMPOTENCY_HEADER] for r in attempts}) == 1, "same key every time"
    assert len({r.body for r in attempts}) == 1, "the same bytes every time"
    for request in got:
        assert_genuine(request)
    escalated = attempts[-1].payload
    assert escalated["session_id"] == sid
    assert escalated["data"]["escalation"]["reason"] == "requested_human"
    assert escalated["data"]["escalation"]["summary"]
    types = [r.payload["type"] for r in got if r.answered == 200]
    assert types == [
        "conversation.escalated",
        "conversation.agent_reply",
        "conversation.resolved",
    ]
    assert [(r["event_type"], r["status"], r["attempts"]) for r in rows] == [
        ("escalated", "delivered", 3),
        ("agent_reply", "delivered", 1),
        ("resolved", "delivered", 1),
    ]


@pytest.mark.slow
def test_undeliverable_webhooks_expire(sqlite_backend: dict[str, Any]) -> None:
    with receiver(fail_first=10**6) as hooks:
        settings = {**sqlite_backend, **webhook_settings(hooks.url, webhook_max_age_hours=0.0005)}
        with live_server(**settings) as live, httpx.Client(base_url=live.url) as client:
            client.post("/api/support/chat", json={"message": HUMAN})
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                rows = _sqlite_outbox(sqlite_backend["sqlite_path"])
                if rows and rows[0]["status"] == "expired":
                    break
                time.sleep(0.1)
    assert rows[0]["status"] == "expired"
    assert rows[0]["last_error"] == "HTTP 500"
    assert 2 <= len(hooks.requests) == rows[0]["attempts"]


@pytest.mark.slow
def test_delivery_survives_a_restart_on_postgres(tmp_path: Path) -> None:
    with receiver(fail_first=2) as hooks, fresh_schema() as url:
        env = {
            "SUPPORTGRAPH_DATABASE_URL": url,
            "SUPPORTGRAPH_WEBHOOK_URLS": json.dumps([hooks.url]),
            "SUPPORTGRAPH_WEBHOOK_SECRET": SECRET,
            "SUPPORTGRAPH_WEBHOOK_BACKOFF_INITIAL": "2",
            "SUPPORTGRAPH_WEBHOOK_BACKOFF_MAX": "3",
            "SUPPORTGRAPH_WEBHOOK_POLL_SECONDS": "0.2",
            "SUPPORTGRAPH_WEBHOOK_TIMEOUT": "2",
        }
        with serve_process(tmp_path, free_port(), env=clean_env(tmp_path, **env)) as base:
            reply = httpx.post(f"{base}/api/support/chat", json={"message": HUMAN}, timeout=30)
            assert reply.json()["status"] == "escalated"
            row = _wait_for_pg_row(url, lambda r: r["attempts"] == 1 and r["locked_until"] is None)
            assert row["status"] == "pending" and row["last_error"] == "HTTP 500"
        # Killed (SIGKILL) with the retry still pending; a new process takes over.
        assert len(hooks.requests) == 1
        with serve_process(tmp_path, free_port(), env=clean_env(tmp_path, **env)):
            row = _wait_for_pg_row(url, lambda r: r["status"] == "delivered", timeout=30)
    assert row["attempts"] == 3
    assert [r.answered for r in hooks.requests] == [500, 500, 200]
    assert len({r.headers[IDEMPOTENCY_HEADER] for r in hooks.requests}) == 1
    for request in hooks.requests:
        assert_genuine(request)
    assert hooks.requests[-1].payload["type"] == "conversation.escalated"
    assert hooks.requests[-1].payload["session_id"] == reply.json()["session_id"]


def _sqlite_outbox(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM sg_outbox ORDER BY id")]


def _wait_for_pg_row(url: str, done: Any, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    row: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        with psycopg.connect(url, row_factory=dict_row) as conn:
            row = conn.execute("SELECT * FROM sg_outbox ORDER BY id LIMIT 1").fetchone()
        if row is not None and done(row):
            return row
        time.sleep(0.1)
    raise AssertionError(f"the outbox row never got there: {row}")
