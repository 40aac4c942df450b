"""A migration that fails half-way leaves the database as it was, and the next start works.

A migration is a list of statements recorded under one version: either all of them and the
version are in the database, or none. Otherwise a failed upgrade leaves a table that the
fixed migration's ``CREATE TABLE`` then trips over, and the service never starts again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import psycopg
import pytest

import checkpoints.store
from checkpoints import open_persistence
from checkpoints.migrations import MIGRATIONS_POSTGRES, MIGRATIONS_SQLITE
from checkpoints.store import SqliteStore
from tests.utils.db import fresh_schema

Migration = tuple[int, str, list[str]]

# The table is created before the statement that fails, so a migration that is not atomic
# leaves it behind.
BROKEN: Migration = (99, "half", ["CREATE TABLE sg_half (x INTEGER)", "THIS IS NOT SQL"])
FIXED: Migration = (99, "half", ["CREATE TABLE sg_half (x INTEGER)"])


@asynccontextmanager
async def sqlite_store(path: Path) -> AsyncIterator[SqliteStore]:
    """Our tables on the file, on a connection set up as the service sets up its own."""
    conn = await aiosqlite.connect(str(path), isolation_level=None)
    try:
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=5000",
        ):
            await conn.execute(pragma)
        yield SqliteStore(conn)
    finally:
        await conn.close()


def sqlite_schema(path: Path) -> list[tuple[Any, ...]]:
    """Every table and index with its SQL, and the recorded migration versions."""
    with sqlite3.connect(path) as db:
        objects = db.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            " ORDER BY type, name"
        ).fetchall()
        versions = db.execute("SELECT version FROM sg_schema_migrations ORDER BY 1").fetchall()
    return [*objects, *versions]


def sqlite_versions(path: Path) -> list[int]:
    """The recorded migration versions."""
    with sqlite3.connect(path) as db:
        return [r[0] for r in db.execute("SELECT version FROM sg_schema_migrations ORDER BY 1")]


def sqlite_tables(path: Path) -> set[str]:
    """The names of the file's tables."""
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


@pytest.mark.parametrize("start", ["empty", "current"])
async def test_sqlite_migration_failing_half_way_leaves_the_database_as_it_was(
    tmp_path: Path, start: str
) -> None:
    path, reference = tmp_path / "sg.sqlite", tmp_path / "reference.sqlite"
    if start == "current":
        for file in (path, reference):
            async with open_persistence(database_url=None, sqlite_path=file):
                pass
    async with sqlite_store(reference) as store:
        await store.migrate()

    async with sqlite_store(path) as store:
        with pytest.raises(sqlite3.OperationalError, match="syntax error"):
            await store.migrate(migrations=[*MIGRATIONS_SQLITE, BROKEN])
        # The connection is shared by every coroutine of the service: a transaction left
        # open on it would take in their statements.
        assert not store.conn.in_transaction

    # Each earlier migration is committed on its own; the failed one left nothing.
    assert "sg_half" not in sqlite_tables(path)
    assert 99 not in sqlite_versions(path)
    assert sqlite_schema(path) == sqlite_schema(reference)

    async with sqlite_store(path) as store:
        await store.migrate(migrations=[*MIGRATIONS_SQLITE, FIXED])
    assert "sg_half" in sqlite_tables(path)
    assert sqlite_versions(path) == [*(v for v, _, _ in MIGRATIONS_SQLITE), 99]
    async with open_persistence(database_url=None, sqlite_path=path) as persistence:
        await persistence.store.ping()


def postgres_schema(url: str) -> list[tuple[Any, ...]]:
    """Every column and index of our tables (``sg_``), and the recorded migration versions."""
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name LIKE 'sg\\_%' ORDER BY 1, 2"
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
            " AND tablename LIKE 'sg\\_%' ORDER BY 1"
        ).fetchall()
        versions: list[tuple[Any, ...]] = []
        if columns:
            versions = conn.execute(
                "SELECT version FROM sg_schema_migrations ORDER BY 1"
            ).fetchall()
    return [*columns, *indexes, *versions]


@pytest.mark.parametrize("start", ["empty", "current"])
async def test_postgres_migration_failing_half_way_leaves_the_database_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    unused = tmp_path / "unused.sqlite"
    with fresh_schema() as url:
        if start == "current":
            async with open_persistence(database_url=url, sqlite_path=unused):
                pass
        before = postgres_schema(url)
        # PostgresStore.migrate takes no list of its own: it applies the module's.
        broken = [*MIGRATIONS_POSTGRES, BROKEN]
        monkeypatch.setattr(checkpoints.store, "MIGRATIONS_POSTGRES", broken)
        with pytest.raises(psycopg.errors.SyntaxError):
            async with open_persistence(database_url=url, sqlite_path=unused):
                pass
        failed = postgres_schema(url)

        fixed = [*MIGRATIONS_POSTGRES, FIXED]
        monkeypatch.setattr(checkpoints.store, "MIGRATIONS_POSTGRES", fixed)
        async with open_persistence(database_url=url, sqlite_path=unused) as persistence:
            await persistence.store.ping()
        after = postgres_schema(url)
        with psycopg.connect(url) as conn:
            versions = [r[0] for r in conn.execute("SELECT version FROM sg_schema_migrations")]
    assert not any(row[0] == "sg_half" for row in failed)
    assert failed == before
    assert ("sg_half", "x", "integer", "YES", None) in after
    assert sorted(versions) == [v for v, _, _ in fixed]
