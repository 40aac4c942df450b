"""The conversation service: one customer turn, with the transcript written around the graph.

The customer's message is stored before the graph runs (a failed turn loses nothing), the
reply after it. Turns of one session run one at a time, in arrival order. Each message and
status change is also logged as an event (what live streams and webhooks follow).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import HumanMessage
from langgraph.pregel import Pregel

from checkpoints import Store, unavailable_as_domain_error
from checkpoints.retention import retention_for
from checkpoints.store import MessageRow, SessionRow
from nodes.context import SupportContext
from supportgraph.events import EventHub
from supportgraph.pii import describe, redact_secrets, slots_for_log, with_note

log = logging.getLogger("supportgraph.service")


class SessionNotFound(LookupError):
    """No session with this id (or not one the caller may see)."""


class SessionBusy(RuntimeError):
    """A turn of this session is running and the busy policy is ``reject``."""

    def __init__(self, session_id: str, *, retry_after: int = 1) -> None:
        super().__init__(f"session {session_id} is busy")
        self.retry_after = retry_after


class TokenRevoked(PermissionError):
    """The session revoked the token this message came with (after it was issued)."""

    MESSAGE = "this session token was revoked"

    def __init__(self, session_id: str) -> None:
        super().__init__(self.MESSAGE)
        self.session_id = session_id


class TurnLimitReached(RuntimeError):
    """The session has taken its lifetime number of customer messages (abuse bound)."""

    def __init__(self, session_id: str, *, limit: int, escalated: bool) -> None:
        after = "; the support team has it and will still answer here" if escalated else ""
        super().__init__(
            f"this conversation has reached its limit of {limit} messages: please start a new"
            f" conversation{after}"
        )
        self.session_id = session_id
        self.limit = limit


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

    def busy(self, session_id: str) -> bool:
        """Whether a turn of this session runs (or waits) in this process."""
        return session_id in self._locks

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
        events: EventHub | None = None,
        chunk_delay: float = 0.0,
        keep_checkpoints: int = 0,
        busy_policy: Literal["enqueue", "reject"] = "enqueue",
        max_turns: int | None = None,
    ) -> None:
        self.graph = graph
        self.context = context
        self.store = store
        self.durability = durability
        self.keep_checkpoints = keep_checkpoints
        self.busy_policy = busy_policy
        self.max_turns = max_turns
        self.retention = retention_for(store)
        self.events = events or EventHub(store)
        self.chunk_delay = chunk_delay
        self.locks = SessionLocks()
        self._background: set[asyncio.Task[Any]] = set()

    async def new_session(self, *, customer_id: str | None = None) -> str:
        """Create a session with a server-generated, unguessable id (for a company's customer)."""
        session_id = secrets.token_urlsafe(24)
        pack = self.context.pack
        await self.store.create_session(
            session_id, pack_name=pack.name, pack_version=pack.version, customer_id=customer_id
        )
        return session_id

    async def require(self, session_id: str) -> SessionRow:
        """The session's record; :class:`SessionNotFound` if it does not exist."""
        row = await self.store.get_session(session_id)
        if row is None:
            raise SessionNotFound(session_id)
        return row

    async def turn(
        self, session_id: str, message: str, *, token_issued_us: int | None = None
    ) -> TurnResult:
        """Run one customer turn: store the message, run the graph, store the reply.

        Card numbers and other secrets in the message are masked first, so the transcript,
        the events, the checkpoints and the model only ever see the masked text; the reply
        then tells the customer what was removed and why. ``token_issued_us``: when the
        customer's token was issued; a token the session revoked since raises
        :class:`TokenRevoked` before anything is stored.
        """
        redaction = redact_secrets(message)
        message = redaction.text
        if self.locks.busy(session_id):
            # About to wait behind another turn: an unknown session fails now, not after it.
            await self.require(session_id)
        async with self._turn_lock(session_id):
            before = await self.require(session_id)
            if token_issued_us is not None and token_issued_us < before.tokens_valid_after:
                raise TokenRevoked(session_id)
            if self.max_turns is not None and before.turns >= self.max_turns:
                # Checked under the session lock, so concurrent posts cannot overshoot it.
                raise TurnLimitReached(
                    session_id, limit=self.max_turns, escalated=before.status == "escalated"
                )
            message_id = await self.store.append_message(
                session_id, role="customer", content=message
            )
            await self.events.publish(
                session_id,
                "message",
                {"message_id": message_id, "role": "customer", "content": message},
            )
            async with unavailable_as_domain_error():
                out = await self.graph.ainvoke(
                    {"messages": [HumanMessage(content=message)], "session_id": session_id},
                    config={"configurable": {"thread_id": session_id}},
                    context=self.context,
                    durability=self.durability,  # type: ignore[arg-type]
                )
            reply = str(out.get("reply") or "")
            if redaction.changed:
                pack = self.context.pack
                note = pack.message("redacted", what=describe(redaction.kinds))
                reply = with_note(reply, note, greeting=pack.spec.greeting)
            if reply:
                reply_id = await self.store.append_message(
                    session_id, role="assistant", content=reply
                )
                await self.events.publish(
                    session_id,
                    "message",
                    {
                        "message_id": reply_id,
                        "role": "assistant",
                        "content": reply,
                        "citations": list(out.get("citations") or []),
                    },
                )
            status = str(out.get("status") or "active")
            await self.store.finish_turn(session_id, status=status, intent=out.get("intent"))
            if status != before.status:
                await self._status_changed(session_id, status, out.get("escalation"))
            await self._trim(session_id, turns=before.turns + 1)
        usage = dict(out.get("usage") or {})
        log.info(
            "turn",
            extra={
                "session_id": session_id,
                "intent": out.get("intent"),
                "status": status,
                "route": out.get("route"),
                "llm_calls": usage.get("llm_calls", 0),
                "slots": slots_for_log(out.get("slots") or {}, self.context.pack.spec.slots),
                "redacted": list(redaction.kinds),
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

    @asynccontextmanager
    async def _turn_lock(self, session_id: str) -> AsyncIterator[None]:
        """Hold the session in this process and across processes, by the busy policy."""
        if self.busy_policy == "enqueue":
            async with self.locks.hold(session_id), self.store.session_lock(session_id):
                yield
            return
        if self.locks.busy(session_id):
            raise SessionBusy(session_id)
        async with (
            self.locks.hold(session_id),
            self.store.session_lock(session_id, wait=False) as held,
        ):
            if not held:
                raise SessionBusy(session_id)
            yield

    async def _trim(self, session_id: str, *, turns: int) -> None:
        """Every K turns, drop all but the thread's latest K checkpoints (never its state)."""
        keep = self.keep_checkpoints
        if keep <= 0 or turns % keep:
            return
        try:
            await self.retention.trim(session_id, keep=keep)
        except Exception:  # noqa: BLE001 - a failed trim is retried K turns later
            log.warning("checkpoint trim failed", exc_info=True, extra={"session_id": session_id})

    async def delete_session(self, session_id: str, *, actor: str) -> None:
        """Delete the session everywhere (audited under a pseudonymous id) and reclaim space.

        Waits for a running turn of the session to finish; :class:`SessionNotFound` when there
        is no such session.
        """
        async with self.locks.hold(session_id), self.store.session_lock(session_id):
            if not await self.retention.delete_session(session_id, actor=actor):
                raise SessionNotFound(session_id)
        await self.retention.reclaim()
        log.info("session deleted", extra={"session_id": session_id, "actor": actor})

    async def _status_changed(
        self, session_id: str, status: str, escalation: dict[str, Any] | None
    ) -> None:
        """Record a turn's new status; a new escalation goes to the queue (and the webhooks)."""
        if status != "escalated" or not escalation:
            await self.events.publish(session_id, "status", {"status": status, "by": "bot"})
            return
        reason = str(escalation.get("reason") or "requested_human")
        await self.store.set_status(session_id, status=status, reason=reason, release=True)
        await self.events.publish(
            session_id,
            "status",
            {"status": status, "by": "bot", "reason": reason, "escalation": escalation},
            webhook="escalated",
            webhook_data={"status": status, "escalation": escalation},
        )

    def start_turn(self, session_id: str, message: str) -> asyncio.Task[TurnResult]:
        """Start a turn in its own task: a caller that goes away does not cancel it.

        The reply is then still saved and the thread stays consistent for the next message.
        """
        return self.spawn(self.turn(session_id, message))

    async def stream_reply(self, turn: asyncio.Task[TurnResult]) -> AsyncIterator[str | TurnResult]:
        """Yield a started turn's reply in chunks, then its :class:`TurnResult`.

        The concatenated chunks equal the saved reply. Cancelling the caller leaves the turn
        running (it is shielded).
        """
        result = await asyncio.shield(turn)
        for chunk in reply_chunks(result.reply):
            yield chunk
            await asyncio.sleep(self.chunk_delay)
        yield result

    def spawn(self, work: Coroutine[Any, Any, TurnResult]) -> asyncio.Task[TurnResult]:
        """Run ``work`` in a task that outlives its caller (awaited by :meth:`aclose`)."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None and not isinstance(error, SessionBusy | TurnLimitReached):
            log.error("background turn failed", exc_info=error)

    async def aclose(self, timeout: float = 30.0) -> None:
        """Let turns whose callers left finish before the database closes."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=timeout)

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


_WORD = re.compile(r"\S+\s*|\s+")


def reply_chunks(reply: str, words: int = 3) -> list[str]:
    """The reply in pieces of a few words, whitespace kept: ``"".join(...) == reply``."""
    pieces = _WORD.findall(reply)
    return ["".join(pieces[i : i + words]) for i in range(0, len(pieces), words)]
