"""Writes a turn makes while the model thinks, kept in memory until the turn commits.

A turn runs the graph with no database connection held: the checkpoint saver and the request
sink put what they would write into the :class:`Deferred` of the running turn (a context
variable, so concurrent turns never mix), and the turn's transaction writes it all with the
reply, the session row and the events, or nothing. A turn that lost its lease therefore leaves
no checkpoint behind (no forked checkpoint chain), and a crash mid-turn leaves the thread at its
last committed checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
)


@dataclass(frozen=True)
class PendingRequest:
    """A request an action created in this turn (its id is already the customer's)."""

    request_id: str
    session_id: str
    kind: str
    data: dict[str, str]
    idempotency_key: str


@dataclass
class Deferred:
    """The checkpoint writes and requests of one turn, in the order they were made."""

    checkpoints: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    requests: list[PendingRequest] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.checkpoints) + len(self.requests)

    def request_for(self, idempotency_key: str) -> str | None:
        """The id of a request this turn already created under the key."""
        return next(
            (r.request_id for r in self.requests if r.idempotency_key == idempotency_key), None
        )

    async def write_checkpoints(self, saver: BaseCheckpointSaver[Any]) -> None:
        """Replay the checkpoint writes through ``saver`` (one bound to the transaction)."""
        for method, args in self.checkpoints:
            await getattr(saver, method)(*args)
        self.checkpoints.clear()


CURRENT: ContextVar[Deferred | None] = ContextVar("sg_deferred", default=None)
"""The running turn's deferred writes (None outside a deferring block)."""


@contextmanager
def deferring() -> Iterator[Deferred]:
    """Defer the checkpoint and request writes made inside the block (this task and its
    children) to the :class:`Deferred` yielded."""
    deferred = Deferred()
    token = CURRENT.set(deferred)
    try:
        yield deferred
    finally:
        CURRENT.reset(token)


class Deferrable(BaseCheckpointSaver[str]):
    """A saver whose writes inside a deferring block wait for the turn's transaction.

    Reads go to the database as usual: a turn reads its thread's checkpoint once, before any
    write of its own.
    """

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint, or keep it for the running turn's commit."""
        deferred = CURRENT.get()
        if deferred is None:
            return await super().aput(config, checkpoint, metadata, new_versions)
        deferred.checkpoints.append(("aput", (config, checkpoint, metadata, new_versions)))
        # What the savers return: the config naming the checkpoint just stored.
        return {
            "configurable": {
                "thread_id": config["configurable"]["thread_id"],
                "checkpoint_ns": config["configurable"].get("checkpoint_ns", ""),
                "checkpoint_id": checkpoint["id"],
            }
        }

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes, or keep them for the running turn's commit."""
        deferred = CURRENT.get()
        if deferred is None:
            await super().aput_writes(config, writes, task_id, task_path)
            return
        deferred.checkpoints.append(("aput_writes", (config, list(writes), task_id, task_path)))
