"""Webhook dispatchers on one PostgreSQL outbox, as several processes run them.

A receiver that accepts a connection and never answers holds its delivery until the timeout;
no other receiver may wait for it, and no delivery may go out twice because two dispatchers
claimed it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from checkpoints import Persistence, open_persistence
from connectors.webhooks import WebhookDispatcher
from supportgraph.domain.webhooks import IDEMPOTENCY_HEADER, WebhookConfig
from tests.utils.db import fresh_schema

TIMEOUT = 2.0
EVENTS = 4
SESSION = "hooks-test"


@dataclass
class Healthy:
    """A receiver that answers 200 at once, noting each delivery's key and when it came."""

    url: str = ""
    arrivals: list[tuple[str, float]] = field(default_factory=list)

    def keys(self) -> Counter[str]:
        return Counter(key for key, _ in self.arrivals)


@contextmanager
def healthy_receiver() -> Iterator[Healthy]:
    """Run a :class:`Healthy` receiver on loopback in a thread."""
    state = Healthy()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                state.arrivals.append((self.headers[IDEMPOTENCY_HEADER], time.monotonic()))
            self.send_response(200)
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


@dataclass
class Dead:
    """A receiver that accepts connections and never answers."""

    url: str = ""
    accepted: int = 0


@contextmanager
def dead_receiver() -> Iterator[Dead]:
    """Accept connections on loopback in a thread and hold them, silent, until the end."""
    state = Dead()
    listener = socket.create_server(("127.0.0.1", 0))
    state.url = f"http://127.0.0.1:{listener.getsockname()[1]}/hooks"
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)
            state.accepted += 1

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        listener.close()
        for conn in held:
            conn.close()


def config_for(*urls: str) -> WebhookConfig:
    """Webhooks to ``urls``: retries far off and no polling, so each row is tried once."""
    return WebhookConfig(
        urls=urls,
        secret="webhook-secret-shared-with-the-receiver",
        events=frozenset({"escalated"}),
        max_age=timedelta(hours=1),
        timeout=TIMEOUT,
        backoff_initial=600.0,
        backoff_max=600.0,
        poll_seconds=600.0,
    )


@asynccontextmanager
async def processes(url: str, tmp_path: Path, count: int) -> AsyncIterator[list[Persistence]]:
    """``count`` persistences on one database, each with its own pool, as processes have."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                open_persistence(database_url=url, sqlite_path=tmp_path / "unused.sqlite")
            )
            for _ in range(count)
        ]


async def enqueue(persistence: Persistence, config: WebhookConfig) -> list[str]:
    """``EVENTS`` escalations, each a delivery to every URL; return their keys."""
    store = persistence.store
    await store.create_session(SESSION, pack_name="store", pack_version="1")
    keys = []
    for n in range(EVENTS):
        items = config.outbox_items("escalated", session_id=SESSION, data={"n": n})
        await store.append_event(
            SESSION, kind="escalated", audience="all", data={"n": n}, outbox=items
        )
        keys.append(items[0].idempotency_key)
    return keys


async def until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Wait for ``condition()`` to hold, polling."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(0.02)


def outbox_rows(url: str) -> list[dict[str, Any]]:
    """Every outbox row as it stands, read on a connection of its own."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT url, idempotency_key, status, attempts, last_error FROM sg_outbox"
        ).fetchall()


async def test_a_dead_receiver_delays_no_one_else_and_each_delivery_goes_out_once(
    tmp_path: Path,
) -> None:
    with (
        fresh_schema() as db,
        dead_receiver() as dead,
        healthy_receiver() as one,
        healthy_receiver() as two,
        healthy_receiver() as three,
    ):
        healthy = [one, two, three]
        # The dead receiver comes first in every event, so its rows are due before the others.
        config = config_for(dead.url, *(h.url for h in healthy))
        async with processes(db, tmp_path, 2) as persistences:
            keys = await enqueue(persistences[0], config)
            dispatchers = [
                WebhookDispatcher(p.store, config, wake=asyncio.Event()) for p in persistences
            ]
            started = time.monotonic()
            for dispatcher in dispatchers:
                await dispatcher.start()
            try:
                await until(
                    lambda: all(len(h.arrivals) >= EVENTS for h in healthy),
                    timeout=3 * TIMEOUT * EVENTS,
                    what="every healthy delivery",
                )
                # The dead receiver's attempts end at its timeout and are recorded as failed.
                await until(
                    lambda: sum(r["last_error"] is not None for r in outbox_rows(db)) == EVENTS,
                    timeout=3 * TIMEOUT,
                    what="every dead delivery failing",
                )
            finally:
                for dispatcher in dispatchers:
                    await dispatcher.stop()
        rows = outbox_rows(db)

    slowest = max(at for h in healthy for _, at in h.arrivals) - started
    assert slowest < TIMEOUT / 2, (
        f"a healthy receiver got its last delivery after {slowest:.2f} s, behind the dead "
        f"receiver's {TIMEOUT} s timeout"
    )
    for receiver in healthy:
        assert receiver.keys() == Counter(keys), "a delivery went out twice, or not at all"
    assert dead.accepted == EVENTS, "each dead delivery was tried exactly once"
    assert all(r["attempts"] == 1 for r in rows), rows
    assert sorted(r["status"] for r in rows if r["url"] != dead.url) == ["delivered"] * (
        EVENTS * len(healthy)
    )


async def test_a_claim_takes_the_next_row_while_another_claim_holds_the_first(
    tmp_path: Path,
) -> None:
    config = config_for("http://127.0.0.1:9/hooks")
    with fresh_schema() as db:
        async with processes(db, tmp_path, 1) as (persistence,):
            keys = await enqueue(persistence, config)
            async with await psycopg.AsyncConnection.connect(db) as other:
                # Another process's claim of the first due row, caught before it commits.
                await other.execute(
                    "UPDATE sg_outbox SET locked_until = %s, attempts = attempts + 1"
                    " WHERE idempotency_key = %s",
                    (datetime.now(UTC) + timedelta(minutes=5), keys[0]),
                )
                claim = asyncio.create_task(
                    persistence.store.claim_due_webhook(now=datetime.now(UTC), lease=60)
                )
                done, _ = await asyncio.wait({claim}, timeout=TIMEOUT)
                await other.commit()
            row = await asyncio.wait_for(claim, TIMEOUT)

    assert done, "the claim waited for the row another claim was taking"
    assert row is not None, "the claim found nothing while other rows were due"
    assert row.idempotency_key == keys[1]
