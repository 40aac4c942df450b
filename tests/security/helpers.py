"""Helpers for the security tests: the poisoned pack, a real service per backend, DB reads."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg

from checkpoints import open_persistence
from graphs.support import build_graph
from nodes.context import SupportContext
from supportgraph.app.graph import SupportGraph
from supportgraph.app.service import SupportService
from supportgraph.settings import PROJECT_ROOT

POISONED_PACK = PROJECT_ROOT / "tests" / "packs" / "poisoned"


@asynccontextmanager
async def open_service(backend: dict[str, Any], context: SupportContext) -> AsyncIterator[Any]:
    """The real service on the backend's database: graph, checkpointer, store, audit."""
    async with open_persistence(
        database_url=backend.get("database_url"), sqlite_path=Path(backend["sqlite_path"])
    ) as persistence:
        store = persistence.store
        yield SupportService(
            graph=SupportGraph(build_graph().compile(checkpointer=persistence.saver)),
            context=replace(context, requests=store, audit=store),
            store=store,
            retention=persistence.retention,
        )


def sql(backend: dict[str, Any], statement: str, params: tuple[Any, ...] = ()) -> list[tuple]:
    """Run one statement on the test database (``%s`` placeholders), outside the app."""
    if backend.get("database_url"):
        with psycopg.connect(backend["database_url"], autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []
    with sqlite3.connect(backend["sqlite_path"]) as conn:
        return conn.execute(statement.replace("%s", "?"), params).fetchall()


def audit_rows(backend: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row of sg_audit, as dicts, oldest first."""
    columns = (
        "action",
        "subject_sha256",
        "actor",
        "kind",
        "outcome",
        "reason",
        "record_ref",
        "request_id",
    )
    rows = sql(backend, f"SELECT {', '.join(columns)} FROM sg_audit ORDER BY id")
    return [dict(zip(columns, row, strict=True)) for row in rows]
