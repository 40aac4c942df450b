"""The conversation service: one customer turn, in two commits around the graph.

1. The customer's message is committed first (with its event), so it is never lost; it waits
   in the session's queue as a pending turn.
2. The turn takes the session's lease (turns of one session run one at a time, in the order
   their messages were stored, across processes), runs the graph holding no database
   connection, and commits everything it produced in one transaction: the checkpoint, the
   reply, the session row, the events, the webhook outbox rows and any request an action
   created. The commit is refused if the lease was lost meanwhile (:class:`LeaseLost`, 503),
   and then nothing of the turn is stored.

A message whose turn died with its process stays pending until its lease expires; the next
turn of the session then reads it together with its own message (it is folded in, see
:class:`~supportgraph.domain.ports.Lease`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from langgraph.types import Durability

from graphs.state import NodeName, SupportState, TurnOutput
from nodes.context import SupportContext
from supportgraph.app.events import EventHub
from supportgraph.app.faults import CrashPoints
from supportgraph.app.graph import SupportGraph
from supportgraph.domain.pii import (
    Redaction,
    describe,
    redact_secrets,
    slots_for_log,
    with_note,
)
from supportgraph.domain.ports import Lease, LeaseLost, Retention, SessionNotFound, Store
from supportgraph.domain.types import (
    Citation,
    Escalation,
    Message,
    Session,
    Status,
    Usage,
    empty_usage,
)

log = logging.getLogger("supportgraph.service")


__all__ = ["SessionNotFound", "SupportService", "TurnResult"]


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
    status: Status
    citations: list[Citation]
    route: list[NodeName]
    usage: Usage
    slots: dict[str, str] = field(default_factory=dict)
    escalation: Escalation | None = None


@dataclass(frozen=True)
class SessionView:
    """A session's transcript and state."""

    session: Session
    slots: dict[str, str]
    escalation: Escalation | None
    messages: list[Message]


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
        graph: SupportGraph,
        context: SupportContext,
        store: Store,
        retention: Retention,
        durability: Durability = "sync",
        events: EventHub | None = None,
        chunk_delay: float = 0.0,
        keep_checkpoints: int = 0,
        busy_policy: Literal["enqueue", "reject"] = "enqueue",
        max_turns: int | None = None,
        crash: CrashPoints | None = None,
    ) -> None:
        self.graph = graph
        self.crash = crash or CrashPoints()
        self.context = context
        self.store = store
        self.durability: Durability = durability
        self.keep_checkpoints = keep_checkpoints
        self.busy_policy = busy_policy
        self.max_turns = max_turns
        self.retention = retention
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

    async def ready(self) -> str:
        """The database's name once it answers; :class:`StoreUnavailable` while it does not."""
        await self.store.ping()
        return self.store.backend

    async def belongs_to(self, session_id: str, customer_id: str) -> bool:
        """Whether the session exists and was started for the company's ``customer_id``."""
        session = await self.store.get_session(session_id)
        return session is not None and session.customer_id == customer_id

    async def require(self, session_id: str) -> Session:
        """The session's record; :class:`SessionNotFound` if it does not exist."""
        row = await self.store.get_session(session_id)
        if row is None:
            raise SessionNotFound(session_id)
        return row

    async def turn(
        self,
        session_id: str,
        message: str,
        *,
        token_issued_us: int | None = None,
        admitted: asyncio.Future[None] | None = None,
    ) -> TurnResult:
        """Run one customer turn: store the message, run the graph, store the reply.

        Card numbers and other secrets in the message are masked first, so the transcript,
        the events, the checkpoints and the model only ever see the masked text; the reply
        then tells the customer what was removed and why.

        ``token_issued_us``: when the customer's session token was issued. Under the session's
        lock, before anything is stored, a token the session revoked since raises
        :class:`TokenRevoked` and a session at its message limit :class:`TurnLimitReached`.
        ``admitted`` is resolved once those checks pass (or fails with their error), for a
        caller that answers before the turn ends.
        """
        try:
            return await self._turn(session_id, message, token_issued_us, admitted)
        except asyncio.CancelledError:
            if admitted is not None:
                admitted.cancel()
            raise
        except Exception as exc:
            if admitted is not None and not admitted.done():
                admitted.set_exception(exc)
            raise

    async def _turn(
        self,
        session_id: str,
        message: str,
        token_issued_us: int | None,
        admitted: asyncio.Future[None] | None,
    ) -> TurnResult:
        redaction = redact_secrets(message)
        message = redaction.text
        owner = secrets.token_hex(12)
        if self.busy_policy == "reject":
            if self.locks.busy(session_id):
                raise SessionBusy(session_id)
            async with (
                self.locks.hold(session_id),
                self.store.hold(session_id, wait=False, owner=owner) as lease,
            ):
                if lease is None:
                    raise SessionBusy(session_id)
                message_id = await self._store_message(
                    session_id, message, owner, token_issued_us, admitted
                )
                self.crash("turn.message_stored")
                out, reply, status = await self._run(lease, message_id, message, redaction)
        else:
            message_id = await self._store_message(
                session_id, message, owner, token_issued_us, admitted
            )
            self.crash("turn.message_stored")
            async with (
                self.locks.hold(session_id),
                self.store.hold(session_id, message_id=message_id, owner=owner) as lease,
            ):
                assert lease is not None, "a waiting hold always yields its lease"
                out, reply, status = await self._run(lease, message_id, message, redaction)
        result = TurnResult(
            session_id=session_id,
            reply=reply,
            intent=out.get("intent"),
            status=status,
            citations=list(out.get("citations", [])),
            route=list(out.get("route", [])),
            usage=out.get("usage") or empty_usage(),
            slots=dict(out.get("slots") or {}),
            escalation=out.get("escalation"),
        )
        log.info(
            "turn",
            extra={
                "session_id": session_id,
                "intent": result.intent,
                "status": status,
                "route": result.route,
                "llm_calls": result.usage["llm_calls"],
                "slots": slots_for_log(result.slots, self.context.pack.spec.slots),
                "redacted": list(redaction.kinds),
            },
        )
        return result

    async def _store_message(
        self,
        session_id: str,
        message: str,
        owner: str,
        token_issued_us: int | None,
        admitted: asyncio.Future[None] | None,
    ) -> int:
        """The first commit: the customer's message (a pending turn of ``owner``) and its
        event, once the token and the message limit allow it."""
        async with self.store.transaction() as tx:
            before = await tx.get_session(session_id, lock=True)
            if before is None:
                raise SessionNotFound(session_id)
            self._check_token(before, token_issued_us)
            if self.max_turns is not None:
                # Counted under the row's lock, so concurrent posts cannot overshoot it.
                if before.turns + await tx.pending_turns(session_id) >= self.max_turns:
                    raise TurnLimitReached(
                        session_id, limit=self.max_turns, escalated=before.status == "escalated"
                    )
            message_id = await tx.append_message(
                session_id, role="customer", content=message, pending_owner=owner
            )
            await self.events.publish(
                session_id,
                "message",
                {"message_id": message_id, "role": "customer", "content": message},
                via=tx,
            )
        if admitted is not None:
            admitted.set_result(None)
        return message_id

    async def _run(
        self, lease: Lease, message_id: int, message: str, redaction: Redaction
    ) -> tuple[TurnOutput, str, Status]:
        """The graph, with no connection held, then the second commit: all the turn made."""
        session_id = lease.session_id
        before = lease.session
        text = "\n".join([*(content for _, content in lease.folded), message])
        with self.store.deferring() as deferred:
            out = await self.graph.turn(
                session_id,
                text,
                status=before.status,
                context=self.context,
                durability=self.durability,
            )
        reply = out.get("reply", "")
        if redaction.changed:
            pack = self.context.pack
            note = pack.message("redacted", what=describe(redaction.kinds))
            reply = with_note(reply, note, greeting=pack.spec.greeting)
        status = out.get("status", "active")
        escalation = out.get("escalation") if status != before.status else None
        new_escalation = escalation if status == "escalated" else None
        self.crash("turn.graph_done")
        async with self.store.transaction(lease, deferred) as tx:
            await tx.answered([*(m for m, _ in lease.folded), message_id])
            await tx.finish_turn(
                session_id, status=status, intent=out.get("intent"), escalation=new_escalation
            )
            if reply:
                reply_id = await tx.append_message(session_id, role="assistant", content=reply)
                await self.events.publish(
                    session_id,
                    "message",
                    {
                        "message_id": reply_id,
                        "role": "assistant",
                        "content": reply,
                        "citations": list(out.get("citations", [])),
                    },
                    via=tx,
                )
            if status != before.status:
                await self._status_changed(tx, session_id, status, new_escalation)
            self.crash("turn.in_commit")
        self.crash("turn.committed")
        await self._trim(session_id, turns=before.turns + 1)
        return out, reply, status

    @staticmethod
    def _check_token(session: Session, issued_us: int | None) -> None:
        """:class:`TokenRevoked` when the token was issued before the session revoked its
        tokens (``None``: the caller is not a session token's holder)."""
        if issued_us is not None and issued_us < session.tokens_valid_after:
            raise TokenRevoked(session.id)

    async def authorize_token(self, session_id: str, issued_us: int) -> None:
        """:class:`TokenRevoked` when the session revoked a token issued at ``issued_us``
        (a session that does not exist is for the caller to find)."""
        session = await self.store.get_session(session_id)
        if session is not None:
            self._check_token(session, issued_us)

    async def rotate_tokens(self, session_id: str) -> None:
        """Every token of the session issued until now stops working."""
        await self.store.revoke_tokens(session_id, issued_before_us=time.time_ns() // 1000)

    async def _trim(self, session_id: str, *, turns: int) -> None:
        """Every K turns, drop all but the thread's latest K checkpoints (never its state)."""
        keep = self.keep_checkpoints
        if keep <= 0 or turns % keep:
            return
        try:
            # Under the lease: a trim's deletes and a turn's writes of one thread would lock
            # the same rows in opposite orders (PostgreSQL answers one with a deadlock).
            async with self.store.hold(session_id):
                await self.retention.trim(session_id, keep=keep)
        except Exception:  # noqa: BLE001 - a failed trim is retried K turns later
            log.warning("checkpoint trim failed", exc_info=True, extra={"session_id": session_id})

    async def delete_session(self, session_id: str, *, actor: str) -> None:
        """Delete the session everywhere (audited under a pseudonymous id) and reclaim space.

        Waits for a running turn of the session to finish; :class:`SessionNotFound` when there
        is no such session.
        """
        async with self.locks.hold(session_id), self.store.hold(session_id):
            if not await self.retention.delete_session(session_id, actor=actor):
                raise SessionNotFound(session_id)
        await self.retention.reclaim()
        log.info("session deleted", extra={"session_id": session_id, "actor": actor})

    async def _status_changed(
        self, tx: Store, session_id: str, status: Status, escalation: Escalation | None
    ) -> None:
        """Log a turn's new status; a new escalation also goes to the webhooks."""
        if escalation is None:
            await self.events.publish(session_id, "status", {"status": status, "by": "bot"}, via=tx)
            return
        reason = str(escalation.get("reason") or "requested_human")
        await self.events.publish(
            session_id,
            "status",
            {"status": status, "by": "bot", "reason": reason, "escalation": escalation},
            webhook="escalated",
            webhook_data={"status": status, "escalation": escalation},
            via=tx,
        )

    async def start_turn(
        self, session_id: str, message: str, *, token_issued_us: int | None = None
    ) -> asyncio.Task[TurnResult]:
        """Start a turn in its own task once it holds the session and its checks passed.

        Raises what :meth:`turn` raises before it stores anything (a revoked token, the
        message limit, a busy session). From then on a caller that goes away does not
        cancel the turn: the reply is still saved and the thread stays consistent.
        """
        admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = self.spawn(
            self.turn(session_id, message, token_issued_us=token_issued_us, admitted=admitted)
        )
        await asyncio.shield(admitted)
        return task

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
        refused = SessionBusy | TurnLimitReached | TokenRevoked | SessionNotFound | LeaseLost
        if error is not None and not isinstance(error, refused):
            log.error("background turn failed", exc_info=error)

    async def aclose(self, timeout: float = 30.0) -> None:
        """Let turns whose callers left finish before the database closes."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=timeout)

    async def view(self, session_id: str) -> SessionView:
        """The session's whole transcript and current state."""
        row = await self.require(session_id)
        values = await self.graph.values(session_id)
        return SessionView(
            session=row,
            slots=dict(values.get("slots") or {}),
            escalation=escalation_of(row, values),
            messages=await self.store.list_messages(session_id),
        )


def escalation_of(session: Session, values: SupportState) -> Escalation | None:
    """The hand-off packet: the session row's. A conversation escalated before the row kept
    it (an upgraded database) has it only in its checkpoint."""
    if session.escalation is None and session.status == "escalated":
        return values.get("escalation")
    return session.escalation


_WORD = re.compile(r"\S+\s*|\s+")


def reply_chunks(reply: str, words: int = 3) -> list[str]:
    """The reply in pieces of a few words, whitespace kept: ``"".join(...) == reply``."""
    pieces = _WORD.findall(reply)
    return ["".join(pieces[i : i + words]) for i in range(0, len(pieces), words)]
