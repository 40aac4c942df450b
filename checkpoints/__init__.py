"""Persistence: open the configured checkpoint saver and our tables, migrate, and close.

SQLite (a file under ``./data/``) is the embedded default; PostgreSQL is used when a database
URL is set. The rest of the code sees only :class:`Persistence`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from checkpoints.store import (
    PostgresStore,
    SqliteStore,
    Store,
    StoreUnavailable,
    unavailable_as_domain_error,
)

__all__ = [
    "Persistence",
    "Store",
    "StoreUnavailable",
    "open_persistence",
    "unavailable_as_domain_error",
]


@dataclass
class Persistence:
    """A checkpoint saver and our own tables, on one database."""

    saver: BaseCheckpointSaver
    store: Store
    backend: str


@asynccontextmanager
async def open_persistence(
    *,
    database_url: str | None,
    sqlite_path: Path,
    pool_min_size: int = 1,
    pool_max_size: int = 10,
    pool_timeout: float = 5.0,
) -> AsyncIterator[Persistence]:
    """Open, set up and migrate the configured backend; close it on exit."""
    if database_url:
        async with _postgres(database_url, pool_min_size, pool_max_size, pool_timeout) as p:
            yield p
    else:
        async with _sqlite(sqlite_path) as p:
            yield p


@asynccontextmanager
async def _sqlite(path: Path) -> AsyncIterator[Persistence]:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(str(path), isolation_level=None)
    try:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        store = SqliteStore(conn)
        await store.migrate()
        yield Persistence(saver=saver, store=store, backend="sqlite")
    finally:
        await conn.close()


@asynccontextmanager
async def _postgres(
    url: str, min_size: int, max_size: int, timeout: float
) -> AsyncIterator[Persistence]:
    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=timeout,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        check=AsyncConnectionPool.check_connection,
        max_idle=300,
        max_lifetime=1800,
    )
    try:
        await pool.open(wait=True, timeout=10)
    except Exception as exc:  # noqa: BLE001 - the pool raises PoolTimeout and driver errors
        await pool.close()
        raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
    try:
        saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
        await saver.setup()
        store = PostgresStore(pool)
        await store.migrate()
        yield Persistence(saver=saver, store=store, backend="postgres")
    finally:
        await pool.close()
