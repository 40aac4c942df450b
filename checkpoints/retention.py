"""Retention: keep a thread's latest checkpoints, delete a session everywhere, reclaim space.

- :meth:`Retention.trim` keeps a thread's latest K checkpoints (with their pending writes and,
  on PostgreSQL, the channel blobs they reference) and deletes the older ones. The latest
  state is never touched, so a thread's storage stays flat however long it runs. Only the
  root namespace is trimmed (the support graph has no subgraphs).
- :meth:`Retention.delete_session` deletes every row of a session: the rows of every table
  with a ``thread_id`` or ``session_id`` column (checkpoints, writes, blobs, transcript,
  requests, and whatever later migrations add), then the session, and records the deletion
  in ``sg_audit`` under a pseudonymous id (the SHA-256 of the session id), in one
  transaction.
- :meth:`Retention.reclaim` gives freed pages back on SQLite (incremental vacuum; migration 3
  switched the file to incremental auto-vacuum); PostgreSQL's autovacuum reuses dead rows.

Callers hold the session's lease (the service does): a trim racing a turn of the same thread
on PostgreSQL could see the blobs of a checkpoint being written as unreferenced.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from psycopg import sql

from checkpoints.store import (
    PostgresStore,
    SqliteStore,
    SqlStore,
    unavailable_as_domain_error,
)
from supportgraph.domain.pii import pseudonym
from supportgraph.domain.ports import SessionNotFound, StoreUnavailable

log = logging.getLogger("supportgraph.retention")

T = TypeVar("T")

THREAD_COLUMNS = ("thread_id", "session_id")
"""Columns that name a conversation; a row with one of them belongs to that conversation."""


class Retention(ABC):
    """Trimming, deletion and space reclaim for one backend."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    @abstractmethod
    async def trim(self, thread_id: str, *, keep: int) -> int:
        """Delete all but the latest ``keep`` checkpoints of the thread; return how many went."""

    @abstractmethod
    async def delete_session(self, session_id: str, *, actor: str) -> bool:
        """Delete every row of the session and audit it; False when there was no session."""

    @abstractmethod
    async def reclaim(self) -> None:
        """Give freed space back to the file system where the backend needs to be asked."""

    async def stale_sessions(self, *, before: datetime, limit: int = 500) -> list[str]:
        """Sessions with no activity since ``before``, oldest first."""
        rows = await self.store._fetch(
            "SELECT id FROM sg_sessions WHERE updated_at < %s ORDER BY updated_at, id LIMIT %s",
            (self.store._ts(before), limit),
        )
        return [str(r["id"]) for r in rows]

    async def threads_over(self, keep: int, *, limit: int = 1000) -> list[str]:
        """Threads holding more than ``keep`` checkpoints."""
        rows = await self.store._fetch(
            "SELECT thread_id FROM checkpoints WHERE checkpoint_ns = '' GROUP BY thread_id"
            " HAVING COUNT(*) > %s LIMIT %s",
            (keep, limit),
        )
        return [str(r["thread_id"]) for r in rows]


class SqliteRetention(Retention):
    """SQLite: each operation is one job on the shared connection's worker thread.

    The connection is shared by every coroutine in autocommit mode; a multi-statement
    transaction must not let another coroutine's statement in between, so it runs as a single
    job queued to aiosqlite's worker thread.
    """

    store: SqliteStore

    async def _job(self, fn: Callable[..., T], *args: Any) -> T:
        conn = self.store.conn
        async with self.store.lock, unavailable_as_domain_error():
            # aiosqlite runs queued jobs one at a time on its thread, in order.
            return await conn._execute(lambda: fn(conn._conn, *args))

    async def trim(self, thread_id: str, *, keep: int) -> int:
        """Delete all but the latest ``keep`` checkpoints and their writes."""
        return await self._job(_sqlite_trim, thread_id, max(keep, 1))

    async def delete_session(self, session_id: str, *, actor: str) -> bool:
        """Delete the session's rows in every table, then the session; audit it."""
        return await self._job(_sqlite_delete, session_id, actor)

    async def reclaim(self) -> None:
        """Incremental vacuum: free pages go back to the file system (the file shrinks).

        Best effort: it cannot run while another coroutine's statement is open on the shared
        connection (SQLite says "database table is locked"). The deletion before it has
        committed, so its caller must not fail for this: the pages stay free in the file for
        reuse, and the next reclaim returns them.
        """
        try:
            await self._job(_sqlite_reclaim)
        except StoreUnavailable as exc:
            log.warning("space reclaim deferred", extra={"error": str(exc)[:200]})


def _transaction(db: sqlite3.Connection, work: Callable[[], T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        out = work()
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return out


def _sqlite_trim(db: sqlite3.Connection, thread_id: str, keep: int) -> int:
    def work() -> int:
        row = db.execute(
            "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ''"
            " ORDER BY checkpoint_id DESC LIMIT 1 OFFSET ?",
            (thread_id, keep - 1),
        ).fetchone()
        if row is None:
            return 0
        oldest = row[0]
        where = "thread_id = ? AND checkpoint_ns = '' AND checkpoint_id < ?"
        gone = db.execute(f"DELETE FROM checkpoints WHERE {where}", (thread_id, oldest)).rowcount
        db.execute(f"DELETE FROM writes WHERE {where}", (thread_id, oldest))
        db.execute(
            "UPDATE checkpoints SET parent_checkpoint_id = NULL"
            " WHERE thread_id = ? AND checkpoint_ns = '' AND checkpoint_id = ?",
            (thread_id, oldest),
        )
        return int(gone)

    return _transaction(db, work)


def _sqlite_tables(db: sqlite3.Connection) -> list[tuple[str, str]]:
    marks = ", ".join("?" for _ in THREAD_COLUMNS)
    return db.execute(
        "SELECT m.name, p.name FROM sqlite_master AS m, pragma_table_info(m.name) AS p"
        f" WHERE m.type = 'table' AND p.name IN ({marks}) ORDER BY m.name",
        THREAD_COLUMNS,
    ).fetchall()


def _sqlite_delete(db: sqlite3.Connection, session_id: str, actor: str) -> bool:
    def work() -> bool:
        found = db.execute("SELECT 1 FROM sg_sessions WHERE id = ?", (session_id,)).fetchone()
        for table, column in _sqlite_tables(db):
            db.execute(f'DELETE FROM "{table}" WHERE "{column}" = ?', (session_id,))
        db.execute("DELETE FROM sg_sessions WHERE id = ?", (session_id,))
        if found:
            db.execute(
                "INSERT INTO sg_audit (action, subject_sha256, actor, at) VALUES (?, ?, ?, ?)",
                ("session_deleted", pseudonym(session_id), actor, datetime.now(UTC).isoformat()),
            )
        return found is not None

    return _transaction(db, work)


def _sqlite_reclaim(db: sqlite3.Connection) -> None:
    # Each step of this pragma frees one page, and ``execute`` steps once: ``executescript``
    # runs it to the end. The file shrinks when the WAL is next checkpointed; a passive
    # checkpoint does it now unless readers are busy.
    db.executescript("PRAGMA incremental_vacuum;")
    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


class PostgresRetention(Retention):
    """PostgreSQL: each operation is one transaction on a pooled connection."""

    store: PostgresStore

    async def trim(self, thread_id: str, *, keep: int) -> int:
        """Delete all but the latest ``keep`` checkpoints, their writes and orphaned blobs."""
        keep = max(keep, 1)
        async with (
            unavailable_as_domain_error(),
            self.store.pool.connection() as conn,
            conn.transaction(),
        ):
            cur = await conn.execute(
                "SELECT checkpoint_id FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = ''"
                " ORDER BY checkpoint_id DESC OFFSET %s LIMIT 1",
                (thread_id, keep - 1),
            )
            row = await cur.fetchone()
            if row is None:
                return 0
            oldest = row["checkpoint_id"]
            where = "thread_id = %s AND checkpoint_ns = '' AND checkpoint_id < %s"
            cur = await conn.execute(f"DELETE FROM checkpoints WHERE {where}", (thread_id, oldest))
            gone = cur.rowcount
            await conn.execute(f"DELETE FROM checkpoint_writes WHERE {where}", (thread_id, oldest))
            await conn.execute(
                "UPDATE checkpoints SET parent_checkpoint_id = NULL"
                " WHERE thread_id = %s AND checkpoint_ns = '' AND checkpoint_id = %s",
                (thread_id, oldest),
            )
            # A blob is a channel's value at one version; kept checkpoints name theirs.
            await conn.execute(
                "DELETE FROM checkpoint_blobs AS b WHERE b.thread_id = %s AND b.checkpoint_ns = ''"
                " AND NOT EXISTS (SELECT 1 FROM checkpoints AS c WHERE c.thread_id = b.thread_id"
                " AND c.checkpoint_ns = b.checkpoint_ns"
                " AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)",
                (thread_id,),
            )
            return int(gone)

    async def delete_session(self, session_id: str, *, actor: str) -> bool:
        """Delete the session's rows in every table, then the session; audit it."""
        async with (
            unavailable_as_domain_error(),
            self.store.pool.connection() as conn,
            conn.transaction(),
        ):
            cur = await conn.execute(
                "SELECT c.table_name AS tbl, c.column_name AS col"
                " FROM information_schema.columns AS c JOIN information_schema.tables AS t"
                " ON t.table_schema = c.table_schema AND t.table_name = c.table_name"
                " WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'"
                " AND c.column_name = ANY(%s) ORDER BY c.table_name",
                (list(THREAD_COLUMNS),),
            )
            tables = [(r["tbl"], r["col"]) for r in await cur.fetchall()]
            cur = await conn.execute(
                "SELECT 1 FROM sg_sessions WHERE id = %s FOR UPDATE", (session_id,)
            )
            found = await cur.fetchone() is not None
            for table, column in tables:
                await conn.execute(
                    sql.SQL("DELETE FROM {} WHERE {} = %s").format(
                        sql.Identifier(table), sql.Identifier(column)
                    ),
                    (session_id,),
                )
            await conn.execute("DELETE FROM sg_sessions WHERE id = %s", (session_id,))
            if found:
                await conn.execute(
                    "INSERT INTO sg_audit (action, subject_sha256, actor, at)"
                    " VALUES ('session_deleted', %s, %s, now())",
                    (pseudonym(session_id), actor),
                )
            return found

    async def reclaim(self) -> None:
        """Nothing to do: autovacuum makes deleted rows' space reusable."""


def retention_for(store: SqlStore) -> Retention:
    """The retention operations of the store's backend."""
    if isinstance(store, PostgresStore):
        return PostgresRetention(store)
    if isinstance(store, SqliteStore):
        return SqliteRetention(store)
    raise TypeError(f"no retention for {type(store).__name__}")


@dataclass(frozen=True)
class PruneReport:
    """What :func:`prune` did (or, for a dry run, would do)."""

    deleted: int
    trimmed_threads: int
    checkpoints_removed: int


async def prune(
    store: SqlStore,
    *,
    older_than: timedelta,
    keep: int,
    dry_run: bool = False,
    hold: Callable[[str], AbstractAsyncContextManager[Any]] | None = None,
) -> PruneReport:
    """Delete sessions idle for ``older_than``; trim every other thread to its latest ``keep``.

    A live thread keeps its latest state: only its older checkpoints go. Each session is
    handled under ``hold(session_id)`` (default: the store's cross-process session lock), and
    one that became active again meanwhile is left alone.
    """
    retention = retention_for(store)
    hold = hold or store.hold
    cutoff = datetime.now(UTC) - older_than
    deleted = trimmed = removed = 0
    seen: set[str] = set()
    while batch := [s for s in await retention.stale_sessions(before=cutoff) if s not in seen]:
        if dry_run:
            deleted += len(batch)
            break
        seen.update(batch)
        for session_id in batch:
            with contextlib.suppress(SessionNotFound):  # deleted meanwhile
                async with hold(session_id):
                    row = await store.get_session(session_id)
                    if row is None or datetime.fromisoformat(row.updated_at) >= cutoff:
                        continue
                    deleted += await retention.delete_session(session_id, actor="prune")
    if keep > 0:
        for thread_id in await retention.threads_over(keep, limit=10_000_000):
            if dry_run:
                trimmed += 1
                continue
            try:
                async with hold(thread_id):
                    gone = await retention.trim(thread_id, keep=keep)
            except SessionNotFound:
                # A thread with no session (a Studio run): no turn of ours writes to it.
                gone = await retention.trim(thread_id, keep=keep)
            trimmed += gone > 0
            removed += gone
    if not dry_run:
        await retention.reclaim()
    return PruneReport(deleted=deleted, trimmed_threads=trimmed, checkpoints_removed=removed)
