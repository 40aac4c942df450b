"""A revision that fails half-way leaves the database as it was, and the next start works.

A revision is a set of statements recorded under one Alembic revision id: either all of them
and the id are in the database, or none. Otherwise a failed upgrade leaves a table that the
fixed revision's ``CREATE TABLE`` then trips over, and the service never starts again.
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
import sqlalchemy.exc
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from checkpoints import open_persistence
from checkpoints.migrations import LEGACY_TABLE, MIGRATIONS_POSTGRES, MIGRATIONS_SQLITE
from checkpoints.schema import head
from checkpoints.store import PostgresStore, SqliteStore
from tests.utils.db import fresh_schema

# The table is created before the statement that fails, so a revision that is not atomic
# leaves it behind.
REVISION = """from alembic import op

revision = "sg_half"
down_revision = {down!r}


def upgrade() -> None:
    op.execute("CREATE TABLE sg_half (x INTEGER)")
{rest}
"""
BROKEN = '    op.execute("THIS IS NOT SQL")'
FIXED = ""


def revisions(directory: Path, rest: str) -> Path:
    """A directory holding one revision on top of the package's head."""
    directory.mkdir()
    (directory / "sg_half.py").write_text(REVISION.format(down=head(), rest=rest))
    return directory


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
    """Every table and index with its SQL, and the recorded revisions and numbered versions."""
    with sqlite3.connect(path) as db:
        objects = db.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            " ORDER BY type, name"
        ).fetchall()
        versions = db.execute("SELECT version FROM sg_schema_migrations ORDER BY 1").fetchall()
        revision = db.execute("SELECT version_num FROM alembic_version").fetchall()
    return [*objects, *versions, *revision]


def sqlite_revision(path: Path) -> list[str]:
    """The revision Alembic recorded."""
    with sqlite3.connect(path) as db:
        return [r[0] for r in db.execute("SELECT version_num FROM alembic_version")]


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
        with pytest.raises(sqlalchemy.exc.OperationalError, match="syntax error") as failed:
            await store.migrate(version_locations=[revisions(tmp_path / "broken", BROKEN)])
        assert isinstance(failed.value.orig, sqlite3.OperationalError)
        # The connection is shared by every coroutine of the service: a transaction left
        # open on it would take in their statements.
        assert not store.conn.in_transaction

    # Each earlier revision is committed on its own; the failed one left nothing.
    assert "sg_half" not in sqlite_tables(path)
    assert sqlite_revision(path) == [head()]
    assert sqlite_schema(path) == sqlite_schema(reference)

    async with sqlite_store(path) as store:
        await store.migrate(version_locations=[revisions(tmp_path / "fixed", FIXED)])
    assert "sg_half" in sqlite_tables(path)
    assert sqlite_revision(path) == ["sg_half"]
    # A release that does not know the revision (one rolled back to) still starts.
    async with open_persistence(database_url=None, sqlite_path=path) as persistence:
        await persistence.store.ping()


def postgres_schema(url: str) -> list[tuple[Any, ...]]:
    """Every column and index of our tables (``sg_``), and the recorded revisions and
    numbered versions."""
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
            versions += conn.execute("SELECT version_num FROM alembic_version").fetchall()
    return [*columns, *indexes, *versions]


async def postgres_migrate(url: str, version_locations: list[Path]) -> None:
    """Upgrade the database as the service does, with extra revisions."""
    async with AsyncConnectionPool(
        url,
        min_size=1,
        open=False,
        connection_class=AsyncConnection[DictRow],
        kwargs={"row_factory": dict_row},
    ) as pool:
        await PostgresStore(pool, url).migrate(version_locations=version_locations)


@pytest.mark.parametrize("start", ["empty", "current"])
async def test_postgres_migration_failing_half_way_leaves_the_database_as_it_was(
    tmp_path: Path, start: str
) -> None:
    unused = tmp_path / "unused.sqlite"
    with fresh_schema() as url:
        if start == "current":
            async with open_persistence(database_url=url, sqlite_path=unused):
                pass
        before = postgres_schema(url)
        with pytest.raises(sqlalchemy.exc.ProgrammingError) as raised:
            await postgres_migrate(url, [revisions(tmp_path / "broken", BROKEN)])
        assert isinstance(raised.value.orig, psycopg.errors.SyntaxError)
        failed = postgres_schema(url)

        await postgres_migrate(url, [revisions(tmp_path / "fixed", FIXED)])
        # A release that does not know the revision (one rolled back to) still starts.
        async with open_persistence(database_url=url, sqlite_path=unused) as persistence:
            await persistence.store.ping()
        after = postgres_schema(url)
        with psycopg.connect(url) as conn:
            revision = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
    assert not any(row[0] == "sg_half" for row in failed)
    assert failed == before
    assert ("sg_half", "x", "integer", "YES", None) in after
    assert revision == ["sg_half"]


def legacy_sqlite(path: Path, upto: int) -> None:
    """A file as an earlier release left it: the numbered migrations up to ``upto``."""
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(LEGACY_TABLE["sqlite"])
        for version, name, statements in MIGRATIONS_SQLITE[:upto]:
            db.execute("BEGIN IMMEDIATE")
            for statement in statements:
                if statement != "VACUUM":
                    db.execute(statement)
            db.execute("INSERT INTO sg_schema_migrations VALUES (?, ?, '')", (version, name))
            db.execute("COMMIT")
            if "VACUUM" in statements:
                db.execute("VACUUM")


@pytest.mark.parametrize("upto", [2, 3, 4])
async def test_sqlite_database_of_an_earlier_release_gets_the_schema_of_a_new_one(
    tmp_path: Path, upto: int
) -> None:
    legacy, fresh = tmp_path / "legacy.sqlite", tmp_path / "fresh.sqlite"
    legacy_sqlite(legacy, upto)
    for path in (legacy, fresh):
        async with open_persistence(database_url=None, sqlite_path=path) as persistence:
            await persistence.store.ping()
    assert sqlite_revision(legacy) == [head()]
    assert sqlite_schema(legacy) == sqlite_schema(fresh)
    with sqlite3.connect(legacy) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental


@pytest.mark.parametrize("upto", [2, 3, 4])
async def test_postgres_database_of_an_earlier_release_gets_the_schema_of_a_new_one(
    tmp_path: Path, upto: int
) -> None:
    unused = tmp_path / "unused.sqlite"
    with fresh_schema() as legacy, fresh_schema() as fresh:
        with psycopg.connect(legacy) as conn:
            conn.execute(LEGACY_TABLE["postgresql"])
            for version, name, statements in MIGRATIONS_POSTGRES[:upto]:
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO sg_schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )
        for url in (legacy, fresh):
            async with open_persistence(database_url=url, sqlite_path=unused) as persistence:
                await persistence.store.ping()
        with psycopg.connect(legacy) as conn:
            revision = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
        got, want = unqualified(legacy), unqualified(fresh)
    assert revision == [head()]
    assert got == want


def unqualified(url: str) -> list[tuple[str, ...]]:
    """:func:`postgres_schema` without the schema's name (index definitions carry it)."""
    schema = url.rsplit("search_path%3D", 1)[-1]
    return [tuple(str(c).replace(schema, "<schema>") for c in row) for row in postgres_schema(url)]
