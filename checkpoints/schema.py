"""Bring our tables' schema up to date with Alembic, on SQLite or PostgreSQL.

The revisions live in ``checkpoints/alembic/versions``; the first, :data:`BASELINE`, creates
what the numbered migrations of :mod:`checkpoints.migrations` (versions 1 to 5) created. A
database those migrations set up (``sg_schema_migrations`` but no ``alembic_version``) first
gets the versions it lacks, then is stamped at the baseline; every database then upgrades to
the head. Both run on a sync SQLAlchemy engine, so callers run them in a thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from checkpoints.migrations import LEGACY_MIGRATIONS, LEGACY_TABLE

__all__ = ["BASELINE", "apply_legacy", "head", "upgrade_postgres", "upgrade_sqlite"]

log = logging.getLogger(__name__)

SCRIPTS = Path(__file__).parent / "alembic"
BASELINE = "sg0005_baseline"
# Set in ``Config.attributes`` by a revision whose SQLite statements asked for a VACUUM, which
# cannot run inside the revision's transaction: it runs once that has committed.
VACUUM = "sqlite_vacuum"
# The key ``checkpoints/alembic/env.py`` reads the connection to migrate from.
CONNECTION = "connection"
# Alembic's ``context`` and ``op`` are module-level proxies, one environment at a time: two
# databases migrated at once in one process (two stores, two threads) would swap them.
_ALEMBIC = threading.Lock()


def head(version_locations: Sequence[Path] = ()) -> str | None:
    """The newest revision, counting the extra version directories."""
    return _scripts(_config(None, version_locations)).get_current_head()


def apply_legacy(conn: Connection, version: int, name: str, statements: list[str]) -> bool:
    """Run one numbered migration and record it, in the caller's transaction.

    Returns whether it asked for a ``VACUUM``, for the caller to run after the commit.
    """
    dialect = conn.dialect.name
    conn.exec_driver_sql(LEGACY_TABLE[dialect])
    for statement in statements:
        if statement != "VACUUM":
            conn.exec_driver_sql(statement)
    if dialect == "sqlite":
        conn.execute(
            text("INSERT INTO sg_schema_migrations VALUES (:version, :name, :at)"),
            {"version": version, "name": name, "at": datetime.now(UTC).isoformat()},
        )
    else:
        conn.execute(
            text("INSERT INTO sg_schema_migrations (version, name) VALUES (:version, :name)"),
            {"version": version, "name": name},
        )
    return "VACUUM" in statements


def upgrade_sqlite(path: Path, version_locations: Sequence[Path] = ()) -> None:
    """Upgrade the SQLite file at ``path`` to the head, each revision in its own transaction."""
    engine = _sqlite_engine(path)
    try:
        with _ALEMBIC, engine.connect() as conn:
            legacy = _legacy_versions(conn)
            conn.rollback()  # ends the read's transaction: the migrations begin their own
            if legacy is not None:
                _complete_legacy_sqlite(conn, legacy)
            cfg = _config(conn, version_locations)
            if not _ahead_of_code(conn, cfg):
                if legacy is not None:
                    command.stamp(cfg, BASELINE)
                command.upgrade(cfg, "head")
            if cfg.attributes.get(VACUUM):
                _vacuum(conn)
    finally:
        engine.dispose()


def upgrade_postgres(conninfo: str, version_locations: Sequence[Path] = ()) -> None:
    """Upgrade the PostgreSQL database at ``conninfo`` (a libpq URL or key=value string) to
    the head in one transaction, under the advisory lock every replica (and every earlier
    release) takes to migrate, so replicas starting at once migrate one after another.

    ``alembic_version`` is created unqualified, so it lands beside our tables in the first
    schema of the connection's ``search_path``.
    """
    # The app's own connection string, untouched: its options (search_path,
    # application_name, TLS) apply here as they do to the pool.
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(conninfo), poolclass=NullPool
    )
    try:
        with _ALEMBIC, engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('sg_migrations'))")
            legacy = _legacy_versions(conn)
            if legacy is not None:
                for version, name, statements in LEGACY_MIGRATIONS["postgresql"]:
                    if version not in legacy:
                        apply_legacy(conn, version, name, statements)
            cfg = _config(conn, version_locations)
            if not _ahead_of_code(conn, cfg):
                if legacy is not None:
                    command.stamp(cfg, BASELINE)
                command.upgrade(cfg, "head")
    finally:
        engine.dispose()


def _config(conn: Connection | None, version_locations: Sequence[Path]) -> Config:
    """Alembic's configuration, without an ini file: the script directory in this package."""
    cfg = Config()
    # ConfigParser interpolates ``%``: a path holding one must say ``%%``.
    cfg.set_main_option("script_location", str(SCRIPTS).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    locations = [SCRIPTS / "versions", *version_locations]
    cfg.set_main_option(
        "version_locations", os.pathsep.join(str(p) for p in locations).replace("%", "%%")
    )
    cfg.attributes[CONNECTION] = conn
    return cfg


def _scripts(cfg: Config) -> ScriptDirectory:
    return ScriptDirectory.from_config(cfg)


def _legacy_versions(conn: Connection) -> set[int] | None:
    """The numbered versions of a database Alembic has not taken over yet, else None."""
    tables = inspect(conn)
    if not tables.has_table("sg_schema_migrations") or tables.has_table("alembic_version"):
        return None
    rows = conn.exec_driver_sql("SELECT version FROM sg_schema_migrations").all()
    return {int(row[0]) for row in rows}


def _complete_legacy_sqlite(conn: Connection, done: set[int]) -> None:
    """Apply the numbered versions the file lacks, each atomic and checked again under the
    write lock (another process may be applying them too)."""
    for version, name, statements in LEGACY_MIGRATIONS["sqlite"]:
        if version in done:
            continue
        with conn.begin():
            recorded = conn.execute(
                text("SELECT 1 FROM sg_schema_migrations WHERE version = :version"),
                {"version": version},
            ).first()
            vacuum = recorded is None and apply_legacy(conn, version, name, statements)
        if vacuum:
            _vacuum(conn)


def _ahead_of_code(conn: Connection, cfg: Config) -> bool:
    """Whether the database carries a revision this code does not know (a newer release
    migrated it): it is left as it is, as the numbered migrations left unknown versions."""
    current = MigrationContext.configure(conn).get_current_heads()
    known = {script.revision for script in _scripts(cfg).walk_revisions()}
    unknown = [revision for revision in current if revision not in known]
    if unknown:
        log.warning(
            "database schema is newer than this release; not migrating",
            extra={"revisions": unknown},
        )
    # The read above began a transaction; on SQLite Alembic's own per-revision ones follow.
    if conn.dialect.name == "sqlite":
        conn.rollback()
    return bool(unknown)


def _vacuum(conn: Connection) -> None:
    """Run ``VACUUM`` on the connection that migrated, once its work is committed: SQLite
    refuses it inside a transaction, and a ``PRAGMA auto_vacuum`` set before it holds only
    for that connection."""
    if conn.in_transaction():
        conn.commit()
    dbapi = conn.connection.driver_connection
    assert dbapi is not None
    dbapi.execute("VACUUM")


def _sqlite_engine(path: Path) -> Engine:
    """A sync engine on the file, in SQLAlchemy's explicit-BEGIN recipe for pysqlite."""
    engine = create_engine(URL.create("sqlite", database=str(path)), poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling would commit before DDL; switched off, the BEGIN
        # below makes each revision, DDL included, one transaction.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA busy_timeout=5000")
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock up front: a second process starting on the same file
        # waits for it (busy_timeout) instead of failing to upgrade a read lock.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
