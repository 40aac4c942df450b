"""Baseline: the schema of the numbered migrations 1 to 5, on a fresh database.

They run as they are, each recorded in ``sg_schema_migrations`` too, so every database at
this revision looks the same, however it got here. A database those migrations set up is
completed and stamped here instead (see :mod:`checkpoints.schema`).

Revision ID: sg0005_baseline
Revises:
"""

from __future__ import annotations

from alembic import op

from checkpoints.migrations import LEGACY_MIGRATIONS
from checkpoints.schema import VACUUM, apply_legacy

revision = "sg0005_baseline"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create sessions, transcript, requests, hand-off, retention, audit and lease tables."""
    conn = op.get_bind()
    vacuum = False
    for version, name, statements in LEGACY_MIGRATIONS[conn.dialect.name]:
        vacuum = apply_legacy(conn, version, name, statements) or vacuum
    config = op.get_context().config
    if vacuum and config is not None:
        config.attributes[VACUUM] = True


def downgrade() -> None:
    """Not supported: the baseline holds every conversation."""
    raise NotImplementedError("the baseline revision cannot be downgraded")
