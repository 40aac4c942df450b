"""The conversation service: one customer turn, with the transcript written around the graph.

The customer's message is stored before the graph runs (a failed turn loses nothing), the
reply after it. Turns of one session run one at a time, in arrival order.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.pregel import Pregel

from checkpoints import Store, unavailable_as_domain_error
from checkpoints.store import MessageRow, SessionRow
from nodes.context import SupportContext

log = logging.getLogger("supportgraph.service")


class SessionNotFound(LookupError):
    """No session with this id (or not one the caller may see)."""


@dataclass(frozen=True)
class TurnResult:
    """What a turn produced, for the API and the CLI."""

    session_id: str
    reply: str
    intent: str | None
    status: str
    citations: list[dict[str, str]]
    route: list[str]
    usage: dict[str, int]
    slots: dict[str, str] = field(default_factory=dict)
    escalation: dict[str, Any] | None = None


@dataclass(frozen=True)
class SessionView:
    """A session's transcript and state."""

    session: SessionRow
    slots: dict[str, str]
    escalation: dict[str, Any] | None
    messages: list[MessageRow]


class SessionLocks:
    """One asyncio lock per session, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        """Run the block while no other turn of this session runs (FIFO, asyncio's order)."""
        lock, users = self._locks.get(session_id, (asyncio.Lock(), 0))
        self._locks[session_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[session_id]
            if users <= 1:
                del self._locks[session_id]
            else:
                self._locks[session_id] = (lock, users - 1)


class SupportService:
    """Runs customer turns through the compiled graph and keeps the transcript."""

    def __init__(
        self,
        *,
        graph: Pregel,
        context: SupportContext,
        store: Store,
        durability: str = "sync",
    ) -> None:
        self.graph = graph
        self.context = context
        self.store = store
        self.durability = durability
        self.locks = SessionLocks()

    async def new_session(self) -> str:
        """Create a session with a server-generated, unguessable id."""
        session_id = secrets.token_urlsafe(24)
        pack = self.context.pack
        await self.store.create_session(session_id, pack_name=pack.name, pack_version=pack.version)
        return session_id

    async def require(self, session_id: str) -> SessionRow:
        """The session's record; :class:`SessionNotFound` if it does not exist."""
        row = await self.store.get_session(session_id)
        if row is None:
            raise SessionNotFound(session_id)
        return row

    async def turn(self, session_id: str, message: str) -> TurnResult:
        """Run one customer turn: store the message, run the graph, store the reply."""
        await self.require(session_id)
        async with self.locks.hold(session_id), self.store.session_lock(session_id):
            await self.store.append_message(session_id, role="customer", content=message)
            async with unavailable_as_domain_error():
                out = await self.graph.ainvoke(
                    {"messages": [HumanMessage(content=message)], "session_id": session_id},
                    config={"configurable": {"thread_id": session_id}},
                    context=self.context,
                    durability=self.durability,  # type: ignore[arg-type]
                )
            reply = str(out.get("reply") or "")
            if reply:
                await self.store.append_message(session_id, role="assistant", content=reply)
            status = str(out.get("status") or "active")
            await self.store.finish_turn(session_id, status=status, intent=out.get("intent"))
        usage = dict(out.get("usage") or {})
        log.info(
            "turn",
            extra={
                "session_id": session_id,
                "intent": out.get("intent"),
                "status": status,
                "route": out.get("route"),
                "llm_calls": usage.get("llm_calls", 0),
            },
        )
        return TurnResult(
            session_id=session_id,
            reply=reply,
            intent=out.get("intent"),
            status=status,
            citations=list(out.get("citations") or []),
            route=list(out.get("route") or []),
            usage=usage,
            slots=dict(out.get("slots") or {}),
            escalation=out.get("escalation"),
        )

    async def view(self, session_id: str) -> SessionView:
        """The session's whole transcript and current state."""
        row = await self.require(session_id)
        async with unavailable_as_domain_error():
            snapshot = await self.graph.aget_state({"configurable": {"thread_id": session_id}})
        values = snapshot.values or {}
        return SessionView(
            session=row,
            slots=dict(values.get("slots") or {}),
            escalation=values.get("escalation"),
            messages=await self.store.list_messages(session_id),
        )
