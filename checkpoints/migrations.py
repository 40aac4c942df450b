"""Versioned migrations for our own tables (sessions, transcript, requests), per backend.

Each migration runs once, in order, recorded in ``sg_schema_migrations``. Add a new version at
the end; never edit one that has shipped.
"""

from __future__ import annotations

MIGRATIONS_SQLITE: list[tuple[int, str, list[str]]] = [
    (
        1,
        "sessions, transcript and requests",
        [
            """CREATE TABLE IF NOT EXISTS sg_sessions (
                id TEXT PRIMARY KEY,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                status TEXT NOT NULL,
                intent TEXT,
                pack_name TEXT NOT NULL,
                pack_version TEXT NOT NULL,
                turns INTEGER NOT NULL DEFAULT 0
            )""",
            """CREATE TABLE IF NOT EXISTS sg_messages (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                session_id TEXT NOT NULL REFERENCES sg_sessions(id) ON DELETE CASCADE,
                role TEXT NOT NULL CHECK (role IN ('customer', 'assistant', 'agent')),
                content TEXT NOT NULL,
                created_at TEXT NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS sg_messages_session ON sg_messages(session_id, id)",
            """CREATE TABLE IF NOT EXISTS sg_requests (
                id TEXT PRIMARY KEY,
                session_id TEXT NOT NULL REFERENCES sg_sessions(id) ON DELETE CASCADE,
                kind TEXT NOT NULL,
                data TEXT NOT NULL,
                status TEXT NOT NULL DEFAULT 'open',
                idempotency_key TEXT NOT NULL UNIQUE,
                created_at TEXT NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS sg_requests_session ON sg_requests(session_id)",
        ],
    ),
]

MIGRATIONS_POSTGRES: list[tuple[int, str, list[str]]] = [
    (
        1,
        "sessions, transcript and requests",
        [
            """CREATE TABLE IF NOT EXISTS sg_sessions (
                id TEXT PRIMARY KEY,
                created_at TIMESTAMPTZ NOT NULL,
                updated_at TIMESTAMPTZ NOT NULL,
                status TEXT NOT NULL,
                intent TEXT,
                pack_name TEXT NOT NULL,
                pack_version TEXT NOT NULL,
                turns INTEGER NOT NULL DEFAULT 0
            )""",
            """CREATE TABLE IF NOT EXISTS sg_messages (
                id BIGSERIAL PRIMARY KEY,
                session_id TEXT NOT NULL REFERENCES sg_sessions(id) ON DELETE CASCADE,
                role TEXT NOT NULL CHECK (role IN ('customer', 'assistant', 'agent')),
                content TEXT NOT NULL,
                created_at TIMESTAMPTZ NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS sg_messages_session ON sg_messages(session_id, id)",
            """CREATE TABLE IF NOT EXISTS sg_requests (
                id TEXT PRIMARY KEY,
                session_id TEXT NOT NULL REFERENCES sg_sessions(id) ON DELETE CASCADE,
                kind TEXT NOT NULL,
                data JSONB NOT NULL,
                status TEXT NOT NULL DEFAULT 'open',
                idempotency_key TEXT NOT NULL UNIQUE,
                created_at TIMESTAMPTZ NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS sg_requests_session ON sg_requests(session_id)",
        ],
    ),
]
