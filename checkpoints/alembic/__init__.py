"""Alembic's script directory for our tables (see :mod:`checkpoints.schema`)."""
