"""Retry once on a fresh connection when PostgreSQL ended the pooled one under us.

A database restart, ``pg_terminate_backend``, a proxy or an idle timeout can end a session
the pool still holds. The pool's check catches most such connections before lending them,
but not one ended a moment ago, and the customer's turn would fail with a 503 for it. So an
operation that failed because its connection was lost runs once more on another connection,
where that is safe:

- reads, and writes that are idempotent (the checkpoint saver's upserts), always;
- other writes only when the server said it ended the session (``AdminShutdown``, SQLSTATE
  57P01). PostgreSQL sends that error only from the points where a backend checks for
  interrupts, never between a commit and its reply, so a statement (or a transaction's
  ``COMMIT``) answered with it did not commit. A connection that simply vanished
  (``kill -9``, an immediate shutdown, a network cut) leaves the write in doubt: no retry.

A second failure, or a pool that cannot lend a connection at all (the database is down), is
raised as it is (the API answers 503).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
import psycopg_pool

log = logging.getLogger("supportgraph.db")

T = TypeVar("T")

_SESSION_ENDED = ("57P01", "57P02", "57P03", "57P05")
"""Operator intervention codes that end the session (shutdown, crash, idle timeout)."""


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection itself is gone, not that the statement failed."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    if isinstance(exc, psycopg_pool.PoolTimeout | psycopg_pool.PoolClosed):
        return False  # no connection to be had: retrying only doubles the wait
    state = exc.sqlstate
    # No SQLSTATE: libpq's own error (the socket closed or broke); class 08: connection errors.
    return state is None or state.startswith("08") or state in _SESSION_ENDED


def did_not_commit(exc: BaseException) -> bool:
    """Whether the server ended the session before the statement that got ``exc`` committed."""
    return isinstance(exc, psycopg.errors.AdminShutdown)


async def retry_once(
    attempt: Callable[[], Awaitable[T]], *, repeatable: bool, what: str = "query"
) -> T:
    """Run ``attempt``; if its connection was lost and running it again is safe, run it again.

    ``repeatable``: the operation reads, or writes idempotently, so a second run is harmless
    even if the first one committed.
    """
    try:
        return await attempt()
    except psycopg.OperationalError as exc:
        if not connection_lost(exc) or not (repeatable or did_not_commit(exc)):
            raise
        log.warning(
            "database connection lost; retrying once on another connection",
            extra={"operation": what, "error": f"{type(exc).__name__}: {str(exc)[:120]}"},
        )
    return await attempt()


def is_read(sql: str) -> bool:
    """Whether a statement only reads (a ``SELECT`` without a data-modifying clause)."""
    head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    return head == "SELECT" and " FOR UPDATE" not in sql.upper()
