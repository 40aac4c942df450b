"""Our own tables beside the checkpoints: sessions, the append-only transcript, requests.

One class per backend behind the same methods; the SQL is shared and written with ``%s``
placeholders (translated for SQLite).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import aiosqlite
import psycopg
import psycopg_pool
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from checkpoints.migrations import MIGRATIONS_POSTGRES, MIGRATIONS_SQLITE
from checkpoints.retry import connection_lost, is_read, retry_once
from supportgraph.domain.pii import pseudonym
from supportgraph.domain.ports import StoreUnavailable
from supportgraph.domain.types import (
    Audience,
    AuditEntry,
    Delivery,
    Event,
    Message,
    Note,
    OutboxItem,
    QueueEntry,
    RequestRecord,
    Role,
    Session,
    SessionFilter,
    Status,
)


def is_unavailable(exc: BaseException) -> bool:
    """Whether a driver error means the database is down or unreachable (not a bug of ours)."""
    return isinstance(
        exc,
        psycopg.OperationalError
        | psycopg_pool.PoolTimeout
        | psycopg_pool.PoolClosed
        | sqlite3.OperationalError
        | ConnectionError,
    )


@asynccontextmanager
async def unavailable_as_domain_error() -> AsyncIterator[None]:
    """Turn driver errors that mean 'database down' into :class:`StoreUnavailable`."""
    try:
        yield
    except StoreUnavailable:
        raise
    except Exception as exc:
        if is_unavailable(exc):
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        raise


Pool = AsyncConnectionPool[AsyncConnection[DictRow]]
"""A PostgreSQL pool whose connections return rows as dicts."""

EVENTS_CHANNEL = "sg_events"
"""PostgreSQL NOTIFY channel: payload ``"<event id> <session id>"``, ids only."""

_SESSION_COLUMNS = (
    "id, status, intent, pack_name, pack_version, turns, created_at, updated_at, customer_id,"
    " tokens_valid_after, claimed_by, claimed_at, escalation_reason"
)
_OUTBOX_COLUMNS = (
    "id, session_id, event_type, url, idempotency_key, payload, status, attempts, created_at,"
    " expires_at, last_error, delivered_at"
)


def _now() -> datetime:
    return datetime.now(UTC)


def _text(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _opt_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _json(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else json.loads(value)


def _session_row(r: dict[str, Any]) -> Session:
    return Session(
        id=r["id"],
        status=r["status"],
        intent=r["intent"],
        pack_name=r["pack_name"],
        pack_version=r["pack_version"],
        turns=int(r["turns"]),
        created_at=_text(r["created_at"]),
        updated_at=_text(r["updated_at"]),
        customer_id=r["customer_id"],
        tokens_valid_after=int(r["tokens_valid_after"] or 0),
        claimed_by=r["claimed_by"],
        claimed_at=_opt_text(r["claimed_at"]),
        escalation_reason=r["escalation_reason"],
    )


def _outbox_row(r: dict[str, Any]) -> Delivery:
    return Delivery(
        id=int(r["id"]),
        session_id=r["session_id"],
        event_type=r["event_type"],
        url=r["url"],
        idempotency_key=r["idempotency_key"],
        payload=_json(r["payload"]),
        status=r["status"],
        attempts=int(r["attempts"]),
        created_at=_text(r["created_at"]),
        expires_at=_text(r["expires_at"]),
        last_error=r["last_error"],
        delivered_at=_opt_text(r["delivered_at"]),
    )


class SqlStore(ABC):
    """Our tables (the :class:`~supportgraph.domain.ports.Store` port), whatever the backend."""

    backend: str

    @abstractmethod
    async def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> None: ...

    @abstractmethod
    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def _insert_returning_id(self, sql: str, params: tuple[Any, ...]) -> int: ...

    @abstractmethod
    async def migrate(self) -> None:
        """Apply pending migrations."""

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers."""
        try:
            await self._fetch("SELECT 1 AS ok")
        except StoreUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - any driver error means not ready
            raise StoreUnavailable(str(exc)) from exc

    @asynccontextmanager
    async def session_lock(self, session_id: str, *, wait: bool = True) -> AsyncIterator[bool]:
        """Hold the session across processes (a no-op where one process owns the database).

        Yields whether the lock is held: with ``wait=False`` a session another process holds
        yields False at once instead of waiting.
        """
        yield True

    async def create_session(
        self,
        session_id: str,
        *,
        pack_name: str,
        pack_version: str,
        customer_id: str | None = None,
    ) -> None:
        """Record a new conversation (``customer_id``: the company's own id for its customer)."""
        now = _now()
        await self._execute(
            "INSERT INTO sg_sessions (id, created_at, updated_at, status, intent, pack_name,"
            " pack_version, turns, customer_id) VALUES (%s, %s, %s, 'active', NULL, %s, %s, 0, %s)",
            (session_id, self._ts(now), self._ts(now), pack_name, pack_version, customer_id),
        )

    async def get_session(self, session_id: str) -> Session | None:
        """The conversation's record, if it exists."""
        rows = await self._fetch(
            f"SELECT {_SESSION_COLUMNS} FROM sg_sessions WHERE id = %s", (session_id,)
        )
        return _session_row(rows[0]) if rows else None

    async def finish_turn(self, session_id: str, *, status: Status, intent: str | None) -> None:
        """Record where the conversation stands after a turn."""
        await self._execute(
            "UPDATE sg_sessions SET status = %s, intent = %s, updated_at = %s, turns = turns + 1"
            " WHERE id = %s",
            (status, intent, self._ts(_now()), session_id),
        )

    async def append_message(
        self, session_id: str, *, role: Role, content: str, author: str | None = None
    ) -> int:
        """Append one line to the transcript (``author``: the agent who wrote it); return its id."""
        return await self._insert_returning_id(
            "INSERT INTO sg_messages (session_id, role, content, created_at, author)"
            " VALUES (%s, %s, %s, %s, %s)",
            (session_id, role, content, self._ts(_now()), author),
        )

    async def get_message(self, message_id: int) -> Message | None:
        """One transcript line by id."""
        rows = await self._fetch(
            "SELECT id, role, content, created_at, author FROM sg_messages WHERE id = %s",
            (message_id,),
        )
        return self._message_rows(rows)[0] if rows else None

    async def list_messages(self, session_id: str) -> list[Message]:
        """The whole transcript, oldest first."""
        rows = await self._fetch(
            "SELECT id, role, content, created_at, author FROM sg_messages WHERE session_id = %s"
            " ORDER BY id",
            (session_id,),
        )
        return self._message_rows(rows)

    @staticmethod
    def _message_rows(rows: list[dict[str, Any]]) -> list[Message]:
        return [
            Message(int(r["id"]), r["role"], r["content"], _text(r["created_at"]), r.get("author"))
            for r in rows
        ]

    async def create_request(
        self, *, session_id: str, kind: str, data: dict[str, str], idempotency_key: str
    ) -> str:
        """Store a request once per idempotency key; return its id (the existing one on replay)."""
        existing = await self._fetch(
            "SELECT id FROM sg_requests WHERE idempotency_key = %s", (idempotency_key,)
        )
        if existing:
            return str(existing[0]["id"])
        request_id = "R-" + secrets.token_hex(4).upper()
        await self._execute(
            "INSERT INTO sg_requests (id, session_id, kind, data, status, idempotency_key,"
            " created_at) VALUES (%s, %s, %s, %s, 'open', %s, %s)"
            " ON CONFLICT (idempotency_key) DO NOTHING",
            (request_id, session_id, kind, json.dumps(data), idempotency_key, self._ts(_now())),
        )
        rows = await self._fetch(
            "SELECT id FROM sg_requests WHERE idempotency_key = %s", (idempotency_key,)
        )
        return str(rows[0]["id"])

    async def list_requests(self, session_id: str | None = None) -> list[RequestRecord]:
        """Requests the actions created, oldest first (for one session, or all)."""
        where, params = ("WHERE session_id = %s", (session_id,)) if session_id else ("", ())
        rows = await self._fetch(
            f"SELECT id, session_id, kind, data, status, created_at FROM sg_requests {where}"
            " ORDER BY created_at, id",
            params,
        )
        return [
            RequestRecord(
                id=str(r["id"]),
                session_id=r["session_id"],
                kind=r["kind"],
                data=_json(r["data"]),
                status=r["status"],
                created_at=_text(r["created_at"]),
            )
            for r in rows
        ]

    async def audit_action(
        self,
        *,
        session_id: str,
        action: str,
        kind: str,
        outcome: str,
        reason: str,
        record_ref: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Audit an action the assistant took or refused, under the session's pseudonym."""
        await self._execute(
            "INSERT INTO sg_audit (action, subject_sha256, actor, at, kind, outcome, reason,"
            " record_ref, request_id) VALUES (%s, %s, 'assistant', %s, %s, %s, %s, %s, %s)",
            (
                action,
                pseudonym(session_id),
                self._ts(_now()),
                kind,
                outcome,
                reason,
                record_ref,
                request_id,
            ),
        )

    async def list_audit(self, session_id: str | None = None) -> list[AuditEntry]:
        """Audit entries, oldest first (for one session, found by its pseudonym, or all)."""
        where, params = (
            ("WHERE subject_sha256 = %s", (pseudonym(session_id),)) if session_id else ("", ())
        )
        rows = await self._fetch(
            "SELECT id, action, subject_sha256, actor, at, kind, outcome, reason, record_ref,"
            f" request_id FROM sg_audit {where} ORDER BY id",
            params,
        )
        return [cast(AuditEntry, {**r, "id": int(r["id"]), "at": _text(r["at"])}) for r in rows]

    # Hand-off: ownership, token revocation, the agents' queue, claims, notes, events, outbox.

    async def revoke_tokens(self, session_id: str, *, issued_before_us: int) -> None:
        """Make the session's tokens issued before this instant (µs since epoch) invalid."""
        await self._execute(
            "UPDATE sg_sessions SET tokens_valid_after = %s WHERE id = %s",
            (issued_before_us, session_id),
        )

    async def list_sessions(
        self,
        filters: SessionFilter,
        *,
        before: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> list[QueueEntry]:
        """Sessions, newest activity first; ``before`` is the (updated_at, id) to continue after."""
        where: list[str] = []
        params: list[Any] = []
        if filters.statuses:
            where.append("s.status IN (" + ", ".join(["%s"] * len(filters.statuses)) + ")")
            params += filters.statuses
        if filters.reason:
            where.append("s.escalation_reason = %s")
            params.append(filters.reason)
        if filters.unclaimed:
            where.append("s.claimed_by IS NULL")
        elif filters.claimed_by:
            where.append("s.claimed_by = %s")
            params.append(filters.claimed_by)
        if filters.updated_since is not None:
            where.append("s.updated_at >= %s")
            params.append(self._ts(filters.updated_since))
        if filters.customer_id is not None:
            where.append("s.customer_id = %s")
            params.append(filters.customer_id)
        if before is not None:
            where.append("(s.updated_at < %s OR (s.updated_at = %s AND s.id < %s))")
            params += [self._ts(before[0]), self._ts(before[0]), before[1]]
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        columns = ", ".join(f"s.{c.strip()}" for c in _SESSION_COLUMNS.split(","))
        rows = await self._fetch(
            f"SELECT {columns}, (SELECT m.content FROM sg_messages m WHERE m.session_id = s.id"
            f" ORDER BY m.id DESC LIMIT 1) AS last_message FROM sg_sessions s {clause}"
            " ORDER BY s.updated_at DESC, s.id DESC LIMIT %s",
            (*params, limit),
        )
        return [QueueEntry(_session_row(r), r["last_message"]) for r in rows]

    async def claim_session(self, session_id: str, *, agent: str, force: bool = False) -> bool:
        """Give an escalated session to ``agent`` unless another agent holds it (or ``force``)."""
        now = self._ts(_now())
        guard = "" if force else " AND (claimed_by IS NULL OR claimed_by = %s)"
        rows = await self._fetch(
            "UPDATE sg_sessions SET claimed_by = %s, claimed_at = %s, updated_at = %s"
            f" WHERE id = %s AND status = 'escalated'{guard} RETURNING id",
            (agent, now, now, session_id, *(() if force else (agent,))),
        )
        return bool(rows)

    async def release_session(self, session_id: str) -> None:
        """Nobody holds the session any more."""
        await self._execute(
            "UPDATE sg_sessions SET claimed_by = NULL, claimed_at = NULL, updated_at = %s"
            " WHERE id = %s",
            (self._ts(_now()), session_id),
        )

    async def set_status(
        self,
        session_id: str,
        *,
        status: Status,
        release: bool = False,
        reason: str | None = None,
    ) -> None:
        """Set the session's status (and the escalation reason); optionally drop the claim."""
        sets = ["status = %s", "updated_at = %s"]
        params: list[Any] = [status, self._ts(_now())]
        if reason is not None:
            sets.append("escalation_reason = %s")
            params.append(reason)
        if release:
            sets += ["claimed_by = NULL", "claimed_at = NULL"]
        await self._execute(
            f"UPDATE sg_sessions SET {', '.join(sets)} WHERE id = %s", (*params, session_id)
        )

    async def touch_session(self, session_id: str) -> None:
        """Record activity on the session (it moves up the agents' queue)."""
        await self._execute(
            "UPDATE sg_sessions SET updated_at = %s WHERE id = %s", (self._ts(_now()), session_id)
        )

    async def add_note(self, session_id: str, *, author: str, content: str) -> int:
        """Store an internal note (agents only; never part of the transcript)."""
        return await self._insert_returning_id(
            "INSERT INTO sg_notes (session_id, author, content, created_at)"
            " VALUES (%s, %s, %s, %s)",
            (session_id, author, content, self._ts(_now())),
        )

    async def list_notes(self, session_id: str) -> list[Note]:
        """The session's internal notes, oldest first."""
        rows = await self._fetch(
            "SELECT id, author, content, created_at FROM sg_notes WHERE session_id = %s"
            " ORDER BY id",
            (session_id,),
        )
        return [Note(int(r["id"]), r["author"], r["content"], _text(r["created_at"])) for r in rows]

    async def append_event(
        self,
        session_id: str,
        *,
        kind: str,
        audience: Audience,
        data: dict[str, Any],
        outbox: list[OutboxItem] | None = None,
    ) -> int:
        """Log an event (and the webhook deliveries it causes); return its id."""
        now = _now()
        event_id = await self._insert_returning_id(
            "INSERT INTO sg_events (session_id, kind, audience, data, created_at)"
            " VALUES (%s, %s, %s, %s, %s)",
            (session_id, kind, audience, json.dumps(data), self._ts(now)),
        )
        for item in outbox or ():
            await self._execute(*self._outbox_insert(session_id, item, now))
        return event_id

    def _outbox_insert(
        self, session_id: str, item: OutboxItem, now: datetime
    ) -> tuple[str, tuple[Any, ...]]:
        return (
            "INSERT INTO sg_outbox (session_id, event_type, url, idempotency_key, payload,"
            " next_attempt_at, created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (idempotency_key, url) DO NOTHING",
            (
                session_id,
                item.event_type,
                item.url,
                item.idempotency_key,
                json.dumps(item.payload),
                self._ts(now),
                self._ts(now),
                self._ts(item.expires_at),
            ),
        )

    async def events_after(
        self,
        after: int,
        *,
        session_id: str | None = None,
        audiences: tuple[Audience, ...] = ("all", "agents"),
        limit: int = 200,
    ) -> list[Event]:
        """Events with an id above ``after``, oldest first (one session's, or all)."""
        where = ["id > %s", "audience IN (" + ", ".join(["%s"] * len(audiences)) + ")"]
        params: list[Any] = [after, *audiences]
        if session_id is not None:
            where.append("session_id = %s")
            params.append(session_id)
        rows = await self._fetch(
            "SELECT id, session_id, kind, audience, data, created_at FROM sg_events"
            f" WHERE {' AND '.join(where)} ORDER BY id LIMIT %s",
            (*params, limit),
        )
        return [
            Event(
                id=int(r["id"]),
                session_id=r["session_id"],
                kind=r["kind"],
                audience=r["audience"],
                data=_json(r["data"]),
                created_at=_text(r["created_at"]),
            )
            for r in rows
        ]

    async def last_event_id(self) -> int:
        """The newest event's id (0 when there is none)."""
        rows = await self._fetch("SELECT MAX(id) AS last FROM sg_events")
        return int(rows[0]["last"] or 0)

    async def claim_due_webhook(self, *, now: datetime, lease: float) -> Delivery | None:
        """Lease the next due delivery for ``lease`` seconds and count the attempt."""
        ts = self._ts(now)
        free = "status = 'pending' AND (locked_until IS NULL OR locked_until <= %s)"
        rows = await self._fetch(
            f"UPDATE sg_outbox SET locked_until = %s, attempts = attempts + 1"
            f" WHERE id = (SELECT id FROM sg_outbox WHERE {free} AND next_attempt_at <= %s"
            f" ORDER BY next_attempt_at, id LIMIT 1) AND {free}"
            f" RETURNING {_OUTBOX_COLUMNS}",
            (self._ts(now + timedelta(seconds=lease)), ts, ts, ts),
        )
        return _outbox_row(rows[0]) if rows else None

    async def webhook_delivered(self, outbox_id: int) -> None:
        """The receiver took the delivery."""
        now = self._ts(_now())
        await self._execute(
            "UPDATE sg_outbox SET status = 'delivered', delivered_at = %s, locked_until = NULL,"
            " last_error = NULL WHERE id = %s",
            (now, outbox_id),
        )

    async def webhook_failed(
        self, outbox_id: int, *, error: str, next_attempt_at: datetime | None
    ) -> None:
        """An attempt failed: retry at ``next_attempt_at``, or give up (expired) when None."""
        if next_attempt_at is None:
            await self._execute(
                "UPDATE sg_outbox SET status = 'expired', locked_until = NULL, last_error = %s"
                " WHERE id = %s",
                (error[:500], outbox_id),
            )
            return
        await self._execute(
            "UPDATE sg_outbox SET next_attempt_at = %s, locked_until = NULL, last_error = %s"
            " WHERE id = %s",
            (self._ts(next_attempt_at), error[:500], outbox_id),
        )

    def listen(self) -> AbstractAsyncContextManager[AsyncIterator[tuple[int, str]]] | None:
        """No notifications: only this process writes to an embedded database."""
        return None

    def _ts(self, value: datetime) -> Any:
        return value


class SqliteStore(SqlStore):
    """The embedded default: one SQLite file (WAL), shared with the checkpoint saver."""

    backend = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    @staticmethod
    def _q(sql: str) -> str:
        return sql.replace("%s", "?")

    def _ts(self, value: datetime) -> Any:
        return value.isoformat()

    # The connection is in autocommit mode (``isolation_level=None``): a statement outside an
    # explicit transaction is committed when it runs. Each aiosqlite call is a round trip to
    # its thread, so a commit is sent only inside a transaction, and a cursor is not closed
    # by a call of its own once fetched.

    async def _commit_if_open(self) -> None:
        if self.conn.in_transaction:
            await self.conn.commit()

    async def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        async with unavailable_as_domain_error():
            await self.conn.execute(self._q(sql), params)
            await self._commit_if_open()

    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        async with unavailable_as_domain_error():
            cur = await self.conn.execute(self._q(sql), params)
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]

    async def _insert_returning_id(self, sql: str, params: tuple[Any, ...]) -> int:
        cur = await self.conn.execute(self._q(sql), params)
        await self._commit_if_open()
        return int(cur.lastrowid or 0)

    async def migrate(self) -> None:
        """Apply pending SQLite migrations."""
        await self.conn.execute(
            "CREATE TABLE IF NOT EXISTS sg_schema_migrations"
            " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        done = {r["version"] for r in await self._fetch("SELECT version FROM sg_schema_migrations")}
        for version, name, statements in MIGRATIONS_SQLITE:
            if version in done:
                continue
            for statement in statements:
                await self.conn.execute(statement)
            await self.conn.execute(
                "INSERT INTO sg_schema_migrations VALUES (?, ?, ?)",
                (version, name, _now().isoformat()),
            )
            await self.conn.commit()


class PostgresStore(SqlStore):
    """PostgreSQL over a ``psycopg_pool`` pool shared with the checkpoint saver."""

    backend = "postgres"

    def __init__(self, pool: Pool, conninfo: str) -> None:
        self.conninfo = conninfo
        self.pool = pool
        # Each held session lock pins a connection, and its turn needs another for queries:
        # with more locks than half the pool, every connection could be a lock whose turn
        # waits for a query connection (a deadlock until the pool timeout). Turns of other
        # sessions beyond that wait here, holding nothing.
        self._lock_slots = asyncio.Semaphore(max(1, (pool.max_size or 2) // 2))

    async def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        async def attempt() -> None:
            async with self.pool.connection() as conn:
                await conn.execute(sql, params)

        async with unavailable_as_domain_error():
            await retry_once(attempt, repeatable=is_read(sql))

    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        async def attempt() -> list[dict[str, Any]]:
            async with (
                self.pool.connection() as conn,
                conn.cursor(row_factory=dict_row) as cur,
            ):
                await cur.execute(sql, params)
                return list(await cur.fetchall())

        async with unavailable_as_domain_error():
            return await retry_once(attempt, repeatable=is_read(sql))

    @asynccontextmanager
    async def session_lock(self, session_id: str, *, wait: bool = True) -> AsyncIterator[bool]:
        """A PostgreSQL advisory lock on the session, held on its own pooled connection.

        Callers take the per-process lock first, so at most one connection per session and
        process waits here; and at most half the pool holds session locks at once, so the
        turns that hold them always find a connection for their queries. ``wait=False`` tries
        once and yields False when another process holds the session.
        """
        async with self._lock_slots, unavailable_as_domain_error():
            # A lock taken on a connection that was lost went with it: taking it again on
            # another connection is always safe.
            conn, held = await retry_once(
                lambda: self._lock(session_id, wait=wait), repeatable=True, what="session lock"
            )
            try:
                if not held:
                    yield False
                    return
                try:
                    yield True
                finally:
                    await self._unlock(conn, session_id)
            finally:
                await self.pool.putconn(conn)

    async def _lock(self, session_id: str, *, wait: bool) -> tuple[AsyncConnection[DictRow], bool]:
        """A pooled connection holding the session's lock (or not, when ``wait`` is False)."""
        conn = await self.pool.getconn()
        try:
            if wait:
                await conn.execute(
                    "SELECT pg_advisory_lock(hashtextextended(%s, 0))", (session_id,)
                )
                return conn, True
            cur = await conn.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0)) AS held", (session_id,)
            )
            row = await cur.fetchone()
            return conn, bool(row and row["held"])
        except BaseException:
            await self.pool.putconn(conn)
            raise

    async def _unlock(self, conn: AsyncConnection[DictRow], session_id: str) -> None:
        """Release the session's lock; a lost connection released it already."""
        if conn.broken or conn.closed:
            return
        try:
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (session_id,))
        except psycopg.OperationalError as exc:
            # The server ended the session, and with it the lock: the turn's work is stored,
            # so it must not fail for this.
            if not connection_lost(exc):
                raise

    async def _insert_returning_id(self, sql: str, params: tuple[Any, ...]) -> int:
        rows = await self._fetch(sql + " RETURNING id", params)
        return int(rows[0]["id"])

    async def append_event(
        self,
        session_id: str,
        *,
        kind: str,
        audience: Audience,
        data: dict[str, Any],
        outbox: list[OutboxItem] | None = None,
    ) -> int:
        """Log an event, its webhook deliveries and a NOTIFY carrying its id, in one transaction.

        A transaction lock makes events commit in id order, so a reader that has seen id N
        never sees a smaller id appear later (``Last-Event-ID`` resume would skip it).
        """
        now = _now()
        if not outbox:
            return await self._append_event_alone(session_id, kind, audience, data, now)

        async def attempt() -> int:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sg_events'))")
                cur = await conn.execute(
                    "INSERT INTO sg_events (session_id, kind, audience, data, created_at)"
                    " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                    (session_id, kind, audience, json.dumps(data), now),
                )
                row = await cur.fetchone()
                if row is None:
                    raise RuntimeError("INSERT ... RETURNING id returned no row")
                event_id = int(row["id"])
                for item in outbox or ():
                    await conn.execute(*self._outbox_insert(session_id, item, now))
                await conn.execute(
                    "SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, f"{event_id} {session_id}")
                )
            return event_id

        async with unavailable_as_domain_error():
            return await retry_once(attempt, repeatable=False, what="event")

    async def _append_event_alone(
        self, session_id: str, kind: str, audience: Audience, data: dict[str, Any], now: datetime
    ) -> int:
        """An event with no webhook deliveries: lock, insert and NOTIFY as one statement.

        Its own transaction, as the five round trips of the general case were (BEGIN, lock,
        insert, notify, COMMIT): the row is inserted from the lock's row, so the lock is held
        before the id is drawn and until the commit.
        """

        async def attempt() -> int:
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    "WITH locked AS (SELECT pg_advisory_xact_lock(hashtext('sg_events'))),"
                    " added AS (INSERT INTO sg_events (session_id, kind, audience, data,"
                    " created_at) SELECT %s, %s, %s, %s::jsonb, %s FROM locked RETURNING id)"
                    " SELECT id, pg_notify(%s, id::text || ' ' || %s) FROM added",
                    (session_id, kind, audience, json.dumps(data), now)
                    + (EVENTS_CHANNEL, session_id),
                )
                row = await cur.fetchone()
            if row is None:
                raise RuntimeError("INSERT ... RETURNING id returned no row")
            return int(row["id"])

        async with unavailable_as_domain_error():
            return await retry_once(attempt, repeatable=False, what="event")

    def listen(self) -> AbstractAsyncContextManager[AsyncIterator[tuple[int, str]]]:
        """LISTEN for events any process logs, on a dedicated connection."""
        return self._listen()

    @asynccontextmanager
    async def _listen(self) -> AsyncIterator[AsyncIterator[tuple[int, str]]]:
        """Yields (event id, session id) as NOTIFY delivers them."""
        conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        try:
            await conn.execute(f"LISTEN {EVENTS_CHANNEL}")

            async def notifications() -> AsyncIterator[tuple[int, str]]:
                async for note in conn.notifies():
                    event_id, _, session_id = note.payload.partition(" ")
                    if event_id.isdigit():
                        yield int(event_id), session_id

            yield notifications()
        finally:
            await conn.close()

    async def migrate(self) -> None:
        """Apply pending PostgreSQL migrations under an advisory lock (safe with many replicas)."""
        async with self.pool.connection() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sg_migrations'))")
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS sg_schema_migrations (version INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                cur = await conn.execute("SELECT version FROM sg_schema_migrations")
                done = {row["version"] for row in await cur.fetchall()}
                for version, name, statements in MIGRATIONS_POSTGRES:
                    if version in done:
                        continue
                    for statement in statements:
                        await conn.execute(statement)
                    await conn.execute(
                        "INSERT INTO sg_schema_migrations (version, name) VALUES (%s, %s)",
                        (version, name),
                    )
