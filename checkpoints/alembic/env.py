"""Alembic's environment: migrate the connection :mod:`checkpoints.schema` passes in.

On SQLite each revision is a transaction of its own (the engine emits the BEGIN); on
PostgreSQL the caller's transaction, which holds the migration lock, takes in every revision.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from checkpoints.schema import CONNECTION

connection = context.config.attributes[CONNECTION]
assert isinstance(connection, Connection), "checkpoints.schema passes the connection to migrate"
context.configure(connection=connection, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
