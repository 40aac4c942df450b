"""Persistence: open the configured checkpoint saver and our tables, migrate, and close.

SQLite (a file under ``./data/``) is the embedded default; PostgreSQL is used when a database
URL is set. The rest of the code sees only :class:`Persistence`.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import aiosqlite
import psycopg
from langgraph.checkpoint.base import BaseCheckpointSaver
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from checkpoints.retention import Retention, retention_for
from checkpoints.savers import PostgresSaver, SqliteSaver
from checkpoints.serde import strict_serializer
from checkpoints.store import LEASE_SECONDS, Pool, PostgresStore, SqliteStore, SqlStore
from supportgraph.domain.ports import StoreUnavailable

__all__ = ["Persistence", "open_persistence"]


@dataclass
class Persistence:
    """A checkpoint saver, our own tables and their retention, on one database."""

    saver: BaseCheckpointSaver[Any]
    store: SqlStore
    retention: Retention
    backend: str


@asynccontextmanager
async def open_persistence(
    *,
    database_url: str | None,
    sqlite_path: Path,
    pool_min_size: int = 1,
    pool_max_size: int = 10,
    pool_timeout: float = 5.0,
    pool_max_idle: float = 300.0,
    pool_max_lifetime: float = 1800.0,
    lease_seconds: float = LEASE_SECONDS,
) -> AsyncIterator[Persistence]:
    """Open, set up and migrate the configured backend; close it on exit."""
    if database_url:
        async with _postgres(
            database_url,
            pool_min_size,
            pool_max_size,
            pool_timeout,
            max_idle=pool_max_idle,
            max_lifetime=pool_max_lifetime,
            lease_seconds=lease_seconds,
        ) as p:
            yield p
    else:
        async with _sqlite(sqlite_path, lease_seconds) as p:
            yield p


@asynccontextmanager
async def _sqlite(path: Path, lease_seconds: float) -> AsyncIterator[Persistence]:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(str(path), isolation_level=None)
    try:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        saver = SqliteSaver(conn, serde=strict_serializer())
        await saver.setup()
        store = SqliteStore(conn, lock=saver.lock, serde=saver.serde, lease_seconds=lease_seconds)
        await store.migrate()
        try:
            yield Persistence(
                saver=saver, store=store, retention=retention_for(store), backend="sqlite"
            )
        finally:
            await store.aclose()
    finally:
        await conn.close()


@asynccontextmanager
async def _postgres(
    url: str,
    min_size: int,
    max_size: int,
    timeout: float,
    *,
    max_idle: float = 300.0,
    max_lifetime: float = 1800.0,
    lease_seconds: float = LEASE_SECONDS,
) -> AsyncIterator[Persistence]:
    pool = _FreshPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=timeout,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        max_idle=max_idle,
        max_lifetime=max_lifetime,
    )
    try:
        await pool.open(wait=True, timeout=10)
    except Exception as exc:  # noqa: BLE001 - the pool raises PoolTimeout and driver errors
        await pool.close()
        raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
    try:
        saver = PostgresSaver(pool, serde=strict_serializer())
        await _setup_once(pool, saver)
        store = PostgresStore(pool, url, serde=saver.serde, lease_seconds=lease_seconds)
        await store.migrate()
        try:
            yield Persistence(
                saver=saver, store=store, retention=retention_for(store), backend="postgres"
            )
        finally:
            await store.aclose()
    finally:
        await pool.close()


class _Freshness:
    """Try a connection before lending it, when it may be dead.

    A database restart, a proxy or a firewall can drop idle connections; a round-trip check
    on every loan would cost a turn dearly. So a connection is tried only when it
    sat idle for a while or its socket has something to read (a server that ends a session
    says so, or closes the socket); one returned moments ago and quiet is lent as it is.
    """

    def __init__(self, after: float = 2.0) -> None:
        self.after = after
        self.returned: WeakKeyDictionary[AsyncConnection[DictRow], float] = WeakKeyDictionary()

    async def reset(self, conn: AsyncConnection[DictRow]) -> None:
        """Note when the connection came back to the pool."""
        self.returned[conn] = time.monotonic()

    async def alive(self, conn: AsyncConnection[DictRow]) -> bool:
        """False if the connection is closed, or idle for a while and not answering."""
        if conn.closed or conn.broken:
            return False
        idle = time.monotonic() - self.returned.get(conn, 0.0)
        if idle <= self.after:
            # A selector, not select.select(): that raises for a descriptor numbered 1024 or
            # more, which a busy process's connections get.
            with selectors.DefaultSelector() as readable:
                readable.register(conn.fileno(), selectors.EVENT_READ)
                if not readable.select(0):
                    return True
        try:
            await AsyncConnectionPool.check_connection(conn)
        except psycopg.Error:
            return False
        return True


class _FreshPool(AsyncConnectionPool[AsyncConnection[DictRow]]):
    """A pool that lends only connections that look alive, dropping dead ones at once.

    psycopg_pool's own ``check`` waits 1 s, then 2 s, 4 s... after each connection that fails
    it (against a busy loop), so after a restart of the database, whose every idle connection
    fails, a request waits seconds or times out. Here a dead connection goes back to the pool
    (which discards and replaces it) and the next one is tried at once, within the timeout.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.freshness = _Freshness()
        super().__init__(*args, reset=self.freshness.reset, **kwargs)

    async def getconn(self, timeout: float | None = None) -> AsyncConnection[DictRow]:
        """A connection that looks alive; :class:`PoolTimeout` after ``timeout`` seconds."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PoolTimeout(f"couldn't get a live connection after {limit:.2f} sec")
            conn = await super().getconn(left)
            try:
                alive = await self.freshness.alive(conn)
            except BaseException:
                await self.putconn(conn)  # cancelled mid-check: give the connection back
                raise
            if alive:
                return conn
            await self.putconn(conn)


async def _setup_once(pool: Pool, saver: PostgresSaver) -> None:
    """Run the saver's setup while no other replica runs it (it is not safe twice at once).

    The lock is polled, not awaited: a replica blocked in ``pg_advisory_lock`` would hold a
    transaction id that the setup's ``CREATE INDEX CONCURRENTLY`` waits for, a deadlock.
    """
    async with pool.connection() as conn:
        while True:
            cur = await conn.execute(
                "SELECT pg_try_advisory_lock(hashtext('sg_saver_setup')) AS held"
            )
            row = await cur.fetchone()
            if row and row["held"]:
                break
            await asyncio.sleep(0.1)
        try:
            await saver.setup()
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext('sg_saver_setup'))")
