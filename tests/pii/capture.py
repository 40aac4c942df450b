"""What the PII tests read back: the app's own log lines, and every byte the database holds."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from supportgraph.logs import app_handler


@contextmanager
def app_log_lines() -> Iterator[io.StringIO]:
    """The app's log output (its real handler, filter and formatter) into a buffer.

    Enter it after the app is created: ``create_app`` configures logging.
    """
    handler = app_handler()
    assert handler is not None, "the app configured no log handler"
    buffer = io.StringIO()
    previous = handler.stream
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        handler.setStream(previous)


def json_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    """The buffer's lines, each parsed as the one JSON object it must be."""
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False).encode()
    return str(value).encode()


def database_bytes(backend: dict[str, Any]) -> dict[str, bytes]:
    """Every table of the backend's database (checkpoints and blobs too) as raw bytes.

    Checkpoint blobs are msgpack, which stores strings as their UTF-8 bytes, so searching the
    raw bytes finds a value wherever the serializer put it. For SQLite the database files
    themselves (main file and write-ahead log) are included as ``<file>`` entries.
    """
    tables: dict[str, bytes] = {}
    if "database_url" in backend:
        with psycopg.connect(backend["database_url"]) as conn:
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
                )
            ]
            for name in names:
                rows = conn.execute(f'SELECT * FROM "{name}"').fetchall()
                tables[name] = b"\n".join(b"\t".join(_as_bytes(v) for v in row) for row in rows)
        return tables
    path = Path(backend["sqlite_path"])
    with sqlite3.connect(path) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for name in names:
            rows = conn.execute(f'SELECT * FROM "{name}"').fetchall()
            tables[name] = b"\n".join(b"\t".join(_as_bytes(v) for v in row) for row in rows)
    for file in (path, path.with_name(path.name + "-wal")):
        if file.exists():
            tables[f"<file {file.name}>"] = file.read_bytes()
    return tables


def where(needle: str, haystacks: dict[str, bytes]) -> list[str]:
    """The names of the haystacks holding ``needle`` (as UTF-8 bytes)."""
    raw = needle.encode()
    return [name for name, data in haystacks.items() if raw in data]
