"""The LangGraph checkpoint savers, speaking the domain's error when the database is down.

A saver runs inside the graph, so its driver errors would reach the services as psycopg or
sqlite3 exceptions; here they become :class:`~supportgraph.domain.ports.StoreUnavailable`,
which the API answers with 503. The PostgreSQL saver also retries a read or an upsert once
when its connection was lost a moment ago (``checkpoints.retry``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from checkpoints.deferred import Deferrable
from checkpoints.retry import retry_once
from checkpoints.store import unavailable_as_domain_error


class _DomainErrors(BaseCheckpointSaver[str]):
    """Raise ``StoreUnavailable`` where the saver below meets a database it cannot use."""

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint the config names (the thread's latest by default)."""
        async with unavailable_as_domain_error():
            return await super().aget_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """The thread's checkpoints, newest first."""
        async with unavailable_as_domain_error():
            async for item in super().alist(config, filter=filter, before=before, limit=limit):
                yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint."""
        async with unavailable_as_domain_error():
            return await super().aput(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes."""
        async with unavailable_as_domain_error():
            await super().aput_writes(config, writes, task_id, task_path)


class _RetryLostConnection(AsyncPostgresSaver):
    """Reads and upserts run once more on a fresh connection when theirs was lost.

    Every write of the saver is an upsert keyed by thread, namespace, checkpoint and task
    (``ON CONFLICT``), so running one twice stores the same rows.
    """

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint, read again on a fresh connection if the first one was lost."""
        return await retry_once(
            lambda: super(_RetryLostConnection, self).aget_tuple(config),
            repeatable=True,
            what="checkpoint read",
        )

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint (an idempotent upsert)."""
        return await retry_once(
            lambda: super(_RetryLostConnection, self).aput(
                config, checkpoint, metadata, new_versions
            ),
            repeatable=True,
            what="checkpoint write",
        )

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes (an idempotent upsert)."""
        await retry_once(
            lambda: super(_RetryLostConnection, self).aput_writes(
                config, writes, task_id, task_path
            ),
            repeatable=True,
            what="checkpoint writes",
        )


class SqliteSaver(Deferrable, _DomainErrors, AsyncSqliteSaver):
    """``AsyncSqliteSaver`` raising ``StoreUnavailable`` for a database it cannot use."""


class PostgresSaver(Deferrable, _DomainErrors, _RetryLostConnection):
    """``AsyncPostgresSaver`` that retries once on a lost connection, then raises
    ``StoreUnavailable`` for a database it cannot use."""
