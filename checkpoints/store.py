"""Our own tables beside the checkpoints: sessions, the append-only transcript, requests.

One class per backend behind the same methods; the SQL is shared and written with ``%s``
placeholders (translated for SQLite).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiosqlite
import psycopg
import psycopg_pool
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from checkpoints.migrations import MIGRATIONS_POSTGRES, MIGRATIONS_SQLITE


class StoreUnavailable(RuntimeError):
    """The database cannot be reached."""


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


@dataclass(frozen=True)
class SessionRow:
    """A conversation's record."""

    id: str
    status: str
    intent: str | None
    pack_name: str
    pack_version: str
    turns: int
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class MessageRow:
    """One transcript line."""

    id: int
    role: str
    content: str
    created_at: str


def _now() -> datetime:
    return datetime.now(UTC)


def _text(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


class Store(ABC):
    """Sessions, transcript and requests, whatever the backend."""

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
    async def session_lock(self, session_id: str) -> AsyncIterator[None]:
        """Hold the session across processes (a no-op where one process owns the database)."""
        yield

    async def create_session(self, session_id: str, *, pack_name: str, pack_version: str) -> None:
        """Record a new conversation."""
        now = _now()
        await self._execute(
            "INSERT INTO sg_sessions (id, created_at, updated_at, status, intent, pack_name,"
            " pack_version, turns) VALUES (%s, %s, %s, 'active', NULL, %s, %s, 0)",
            (session_id, self._ts(now), self._ts(now), pack_name, pack_version),
        )

    async def get_session(self, session_id: str) -> SessionRow | None:
        """The conversation's record, if it exists."""
        rows = await self._fetch(
            "SELECT id, status, intent, pack_name, pack_version, turns, created_at, updated_at"
            " FROM sg_sessions WHERE id = %s",
            (session_id,),
        )
        if not rows:
            return None
        r = rows[0]
        return SessionRow(
            id=r["id"],
            status=r["status"],
            intent=r["intent"],
            pack_name=r["pack_name"],
            pack_version=r["pack_version"],
            turns=int(r["turns"]),
            created_at=_text(r["created_at"]),
            updated_at=_text(r["updated_at"]),
        )

    async def finish_turn(self, session_id: str, *, status: str, intent: str | None) -> None:
        """Record where the conversation stands after a turn."""
        await self._execute(
            "UPDATE sg_sessions SET status = %s, intent = %s, updated_at = %s, turns = turns + 1"
            " WHERE id = %s",
            (status, intent, self._ts(_now()), session_id),
        )

    async def append_message(self, session_id: str, *, role: str, content: str) -> int:
        """Append one line to the transcript; return its id."""
        return await self._insert_returning_id(
            "INSERT INTO sg_messages (session_id, role, content, created_at)"
            " VALUES (%s, %s, %s, %s)",
            (session_id, role, content, self._ts(_now())),
        )

    async def list_messages(self, session_id: str) -> list[MessageRow]:
        """The whole transcript, oldest first."""
        rows = await self._fetch(
            "SELECT id, role, content, created_at FROM sg_messages WHERE session_id = %s"
            " ORDER BY id",
            (session_id,),
        )
        return [
            MessageRow(int(r["id"]), r["role"], r["content"], _text(r["created_at"])) for r in rows
        ]

    async def create_request(
        self, *, session_id: str, kind: str, data: dict[str, Any], idempotency_key: str
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

    async def list_requests(self, session_id: str | None = None) -> list[dict[str, Any]]:
        """Requests the actions created, oldest first (for one session, or all)."""
        where, params = ("WHERE session_id = %s", (session_id,)) if session_id else ("", ())
        rows = await self._fetch(
            f"SELECT id, session_id, kind, data, status, created_at FROM sg_requests {where}"
            " ORDER BY created_at, id",
            params,
        )
        out = []
        for r in rows:
            data = r["data"] if isinstance(r["data"], dict) else json.loads(r["data"])
            out.append({**r, "data": data, "created_at": _text(r["created_at"])})
        return out

    def _ts(self, value: datetime) -> Any:
        return value


class SqliteStore(Store):
    """The embedded default: one SQLite file (WAL), shared with the checkpoint saver."""

    backend = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    @staticmethod
    def _q(sql: str) -> str:
        return sql.replace("%s", "?")

    def _ts(self, value: datetime) -> Any:
        return value.isoformat()

    async def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        async with unavailable_as_domain_error():
            await self.conn.execute(self._q(sql), params)
            await self.conn.commit()

    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        async with unavailable_as_domain_error(), self.conn.execute(self._q(sql), params) as cur:
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]

    async def _insert_returning_id(self, sql: str, params: tuple[Any, ...]) -> int:
        cur = await self.conn.execute(self._q(sql), params)
        await self.conn.commit()
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


class PostgresStore(Store):
    """PostgreSQL over a ``psycopg_pool`` pool shared with the checkpoint saver."""

    backend = "postgres"

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        async with unavailable_as_domain_error(), self.pool.connection() as conn:
            await conn.execute(sql, params)

    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        async with (
            unavailable_as_domain_error(),
            self.pool.connection() as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.execute(sql, params)
            return list(await cur.fetchall())

    @asynccontextmanager
    async def session_lock(self, session_id: str) -> AsyncIterator[None]:
        """A PostgreSQL advisory lock on the session, held on its own pooled connection.

        Callers take the per-process lock first, so at most one connection per session and
        process waits here, and waiters cannot exhaust the pool.
        """
        async with unavailable_as_domain_error(), self.pool.connection() as conn:
            await conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (session_id,))
            try:
                yield
            finally:
                await conn.execute(
                    "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (session_id,)
                )

    async def _insert_returning_id(self, sql: str, params: tuple[Any, ...]) -> int:
        rows = await self._fetch(sql + " RETURNING id", params)
        return int(rows[0]["id"])

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
