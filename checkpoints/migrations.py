"""The numbered migrations (versions 1 to 5) that set up our tables before Alembic, per backend.

They are frozen: Alembic's baseline revision (``checkpoints/alembic/versions``) runs them on a
fresh database, and :mod:`checkpoints.schema` completes an older database with the versions it
lacks, each recorded in ``sg_schema_migrations`` as before. A change to the schema is a new
Alembic revision, never a version here.
"""

from __future__ import annotations

# The record of the numbered versions a database has, keyed by SQLAlchemy's dialect name.
LEGACY_TABLE = {
    "sqlite": "CREATE TABLE IF NOT EXISTS sg_schema_migrations"
    " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
    "postgresql": "CREATE TABLE IF NOT EXISTS sg_schema_migrations (version INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
}

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

# Version 2, human hand-off: who holds a conversation, token revocation, a company's own
# customer id, agents' authors and internal notes, the event log live updates replay from,
# and the webhook outbox.
_HANDOFF_SESSIONS = [
    "ALTER TABLE sg_sessions ADD COLUMN customer_id TEXT",
    "ALTER TABLE sg_sessions ADD COLUMN tokens_valid_after BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE sg_sessions ADD COLUMN claimed_by TEXT",
    "ALTER TABLE sg_sessions ADD COLUMN escalation_reason TEXT",
    "ALTER TABLE sg_messages ADD COLUMN author TEXT",
    "CREATE INDEX IF NOT EXISTS sg_sessions_activity ON sg_sessions(updated_at, id)",
    "CREATE INDEX IF NOT EXISTS sg_sessions_customer ON sg_sessions(customer_id, updated_at)",
]

MIGRATIONS_SQLITE.append(
    (
        2,
        "hand-off: claims, notes, events, webhook outbox",
        [
            *_HANDOFF_SESSIONS,
            "ALTER TABLE sg_sessions ADD COLUMN claimed_at TEXT",
            """CREATE TABLE IF NOT EXISTS sg_notes (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                session_id TEXT NOT NULL REFERENCES sg_sessions(id) ON DELETE CASCADE,
                author TEXT NOT NULL,
                content TEXT NOT NULL,
                created_at TEXT NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS sg_notes_session ON sg_notes(session_id, id)",
            """CREATE TABLE IF NOT EXISTS sg_events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                session_id TEXT NOT NULL REFERENCES sg_sessions(id) ON DELETE CASCADE,
                kind TEXT NOT NULL,
                audience TEXT NOT NULL CHECK (audience IN ('all', 'agents')),
                data TEXT NOT NULL,
                created_at TEXT NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS sg_events_session ON sg_events(session_id, id)",
            """CREATE TABLE IF NOT EXISTS sg_outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                session_id TEXT,
                event_type TEXT NOT NULL,
                url TEXT NOT NULL,
                idempotency_key TEXT NOT NULL,
                payload TEXT NOT NULL,
                status TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'expired')),
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at TEXT NOT NULL,
                locked_until TEXT,
                last_error TEXT,
                created_at TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                delivered_at TEXT,
                UNIQUE (idempotency_key, url)
            )""",
            "CREATE INDEX IF NOT EXISTS sg_outbox_due ON sg_outbox(status, next_attempt_at)",
            "CREATE INDEX IF NOT EXISTS sg_outbox_session ON sg_outbox(session_id)",
        ],
    )
)

MIGRATIONS_POSTGRES.append(
    (
        2,
        "hand-off: claims, notes, events, webhook outbox",
        [
            *_HANDOFF_SESSIONS,
            "ALTER TABLE sg_sessions ADD COLUMN claimed_at TIMESTAMPTZ",
            """CREATE TABLE IF NOT EXISTS sg_notes (
                id BIGSERIAL PRIMARY KEY,
                session_id TEXT NOT NULL REFERENCES sg_sessions(id) ON DELETE CASCADE,
                author TEXT NOT NULL,
                content TEXT NOT NULL,
                created_at TIMESTAMPTZ NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS sg_notes_session ON sg_notes(session_id, id)",
            """CREATE TABLE IF NOT EXISTS sg_events (
                id BIGSERIAL PRIMARY KEY,
                session_id TEXT NOT NULL REFERENCES sg_sessions(id) ON DELETE CASCADE,
                kind TEXT NOT NULL,
                audience TEXT NOT NULL CHECK (audience IN ('all', 'agents')),
                data JSONB NOT NULL,
                created_at TIMESTAMPTZ NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS sg_events_session ON sg_events(session_id, id)",
            """CREATE TABLE IF NOT EXISTS sg_outbox (
                id BIGSERIAL PRIMARY KEY,
                session_id TEXT,
                event_type TEXT NOT NULL,
                url TEXT NOT NULL,
                idempotency_key TEXT NOT NULL,
                payload JSONB NOT NULL,
                status TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'expired')),
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at TIMESTAMPTZ NOT NULL,
                locked_until TIMESTAMPTZ,
                last_error TEXT,
                created_at TIMESTAMPTZ NOT NULL,
                expires_at TIMESTAMPTZ NOT NULL,
                delivered_at TIMESTAMPTZ,
                UNIQUE (idempotency_key, url)
            )""",
            "CREATE INDEX IF NOT EXISTS sg_outbox_due ON sg_outbox(status, next_attempt_at)",
            "CREATE INDEX IF NOT EXISTS sg_outbox_session ON sg_outbox(session_id)",
        ],
    )
)

# Version 3, retention: an audit trail of deletions that keeps only a pseudonymous id (the
# SHA-256 of the session id), and on SQLite incremental auto-vacuum so deleted sessions give
# their space back (switching an existing file over takes one VACUUM, run once here).
MIGRATIONS_SQLITE.append(
    (
        3,
        "retention: deletion audit, incremental auto-vacuum",
        [
            """CREATE TABLE IF NOT EXISTS sg_audit (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                action TEXT NOT NULL,
                subject_sha256 TEXT NOT NULL,
                actor TEXT NOT NULL,
                at TEXT NOT NULL
            )""",
            "PRAGMA auto_vacuum = INCREMENTAL",
            "VACUUM",
        ],
    )
)

MIGRATIONS_POSTGRES.append(
    (
        3,
        "retention: deletion audit",
        [
            """CREATE TABLE IF NOT EXISTS sg_audit (
                id BIGSERIAL PRIMARY KEY,
                action TEXT NOT NULL,
                subject_sha256 TEXT NOT NULL,
                actor TEXT NOT NULL,
                at TIMESTAMPTZ NOT NULL
            )""",
        ],
    )
)

# Version 4, authorization audit: every action the assistant takes or refuses (a record
# lookup, a request) is a row of sg_audit, beside the deletions. The session is named only by
# its pseudonym (subject_sha256), so the rows outlive a deleted session without naming it;
# the record only by a keyed hash (record_ref, see supportgraph/actions.py).
_AUDIT_COLUMNS = [
    "ALTER TABLE sg_audit ADD COLUMN kind TEXT",
    "ALTER TABLE sg_audit ADD COLUMN outcome TEXT",
    "ALTER TABLE sg_audit ADD COLUMN reason TEXT",
    "ALTER TABLE sg_audit ADD COLUMN record_ref TEXT",
    "ALTER TABLE sg_audit ADD COLUMN request_id TEXT",
    "CREATE INDEX IF NOT EXISTS sg_audit_subject ON sg_audit(subject_sha256, id)",
]
MIGRATIONS_SQLITE.append((4, "authorization audit of actions", list(_AUDIT_COLUMNS)))
MIGRATIONS_POSTGRES.append((4, "authorization audit of actions", list(_AUDIT_COLUMNS)))

# Version 5, one turn and one commit: the session's lease (who runs its turn now, until when,
# and the fencing token its commit is checked against), the hand-off packet beside the status
# (the row is the one place both are kept), and the queue of stored customer messages waiting
# for their turn (``turn_state`` 'pending' while queued or running, 'failed' when the turn
# stored no reply; ``turn_owner`` renews ``turn_expires_at`` while it waits or runs).
MIGRATIONS_SQLITE.append(
    (
        5,
        "session leases, escalation packet, pending turns",
        [
            "ALTER TABLE sg_sessions ADD COLUMN lease_owner TEXT",
            "ALTER TABLE sg_sessions ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE sg_sessions ADD COLUMN lease_expires_at TEXT",
            "ALTER TABLE sg_sessions ADD COLUMN escalation TEXT",
            "ALTER TABLE sg_messages ADD COLUMN turn_state TEXT",
            "ALTER TABLE sg_messages ADD COLUMN turn_owner TEXT",
            "ALTER TABLE sg_messages ADD COLUMN turn_expires_at TEXT",
            "CREATE INDEX IF NOT EXISTS sg_messages_pending ON sg_messages(session_id, id)"
            " WHERE turn_state = 'pending'",
        ],
    )
)
MIGRATIONS_POSTGRES.append(
    (
        5,
        "session leases, escalation packet, pending turns",
        [
            "ALTER TABLE sg_sessions ADD COLUMN IF NOT EXISTS lease_owner TEXT",
            "ALTER TABLE sg_sessions ADD COLUMN IF NOT EXISTS lease_token BIGINT NOT NULL"
            " DEFAULT 0",
            "ALTER TABLE sg_sessions ADD COLUMN IF NOT EXISTS lease_expires_at TIMESTAMPTZ",
            "ALTER TABLE sg_sessions ADD COLUMN IF NOT EXISTS escalation JSONB",
            "ALTER TABLE sg_messages ADD COLUMN IF NOT EXISTS turn_state TEXT",
            "ALTER TABLE sg_messages ADD COLUMN IF NOT EXISTS turn_owner TEXT",
            "ALTER TABLE sg_messages ADD COLUMN IF NOT EXISTS turn_expires_at TIMESTAMPTZ",
            "CREATE INDEX IF NOT EXISTS sg_messages_pending ON sg_messages(session_id, id)"
            " WHERE turn_state = 'pending'",
        ],
    )
)

# By SQLAlchemy's dialect name.
LEGACY_MIGRATIONS = {"sqlite": MIGRATIONS_SQLITE, "postgresql": MIGRATIONS_POSTGRES}
