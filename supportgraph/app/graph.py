"""The compiled support graph as the services use it: one thread per session, typed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Durability, StateSnapshot

from graphs.state import NodeName, StateUpdate, SupportState, TurnInput, TurnOutput
from nodes.context import SupportContext
from supportgraph.domain.types import Status

Compiled = CompiledStateGraph[SupportState, SupportContext, TurnInput, TurnOutput]


def thread(session_id: str) -> RunnableConfig:
    """The run config of a session's thread (it holds only the thread id)."""
    return {"configurable": {"thread_id": session_id}}


class SupportGraph:
    """Runs turns of a session's thread and reads or changes its state."""

    def __init__(self, compiled: Compiled) -> None:
        self.compiled = compiled

    async def turn(
        self,
        session_id: str,
        message: str,
        *,
        context: SupportContext,
        durability: Durability,
        status: Status | None = None,
    ) -> TurnOutput:
        """Run one customer message through the graph; what the turn produced.

        ``status``: where the session row says the conversation stands.
        """
        turn = TurnInput(messages=[HumanMessage(content=message)], session_id=session_id)
        if status is not None:
            turn["status"] = status
        out = await self.compiled.ainvoke(
            turn, config=thread(session_id), context=context, durability=durability
        )
        # The output schema filters the channels; the SDK types the result as a plain dict.
        return cast(TurnOutput, out)

    async def values(self, session_id: str) -> SupportState:
        """The thread's latest state (empty for a thread with no turn yet)."""
        snapshot = await self.compiled.aget_state(thread(session_id))
        return cast(SupportState, snapshot.values or {})

    async def update(self, session_id: str, values: StateUpdate, *, as_node: NodeName) -> None:
        """Change the thread's state as if ``as_node`` had written ``values``."""
        await self.compiled.aupdate_state(thread(session_id), dict(values), as_node=as_node)

    def history(self, session_id: str) -> AsyncIterator[StateSnapshot]:
        """Every checkpoint of the thread, newest first."""
        return self.compiled.aget_state_history(thread(session_id))
