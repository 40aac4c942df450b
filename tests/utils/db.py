"""Real PostgreSQL for tests: one fresh schema per test, dropped afterwards."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import psycopg

from tests.utils.ci import require

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def base_url() -> str:
    """The test database from ``TEST_DATABASE_URL``, or the local default."""
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_URL)


def postgres_available() -> bool:
    """Whether the test database answers."""
    try:
        with psycopg.connect(base_url(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def require_postgres() -> None:
    """Fail loudly under CI when PostgreSQL is missing; skip only on a developer's laptop."""
    require(
        postgres_available(),
        f"PostgreSQL is not reachable at {base_url()}",
        needed_by="the PostgreSQL tests",
        hint="set TEST_DATABASE_URL",
    )


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A database URL whose search_path is a new, empty schema; the schema is dropped after."""
    require_postgres()
    schema = "sgtest_" + secrets.token_hex(6)
    with psycopg.connect(base_url(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base_url() else "?"
    url = f"{base_url()}{sep}options={quote(f'-csearch_path={schema}')}"
    try:
        yield url
    finally:
        with psycopg.connect(base_url(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
