"""The ports: what the domain and the services need from storage and from a company's systems.

Adapters implement them (``checkpoints/`` for SQLite and PostgreSQL); the services and the
nodes see only these Protocols, and the edges decide which adapter stands behind each.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from supportgraph.domain.types import (
    Audience,
    Delivery,
    Escalation,
    Event,
    Message,
    Note,
    OutboxItem,
    QueueEntry,
    Role,
    Session,
    SessionFilter,
    Status,
)


class StoreUnavailable(RuntimeError):
    """The database cannot be reached (the API answers 503; nothing was lost)."""


class SessionNotFound(LookupError):
    """No session with this id (or not one the caller may see)."""


class LeaseLost(RuntimeError):
    """The turn's lease on its session ran out and another holder took it over.

    Nothing the turn produced was stored (its transaction was refused at the fence); the API
    answers 503 and the customer may send the message again.
    """

    def __init__(self, session_id: str) -> None:
        super().__init__(f"the turn of session {session_id} lost its lease; nothing was stored")
        self.session_id = session_id


@dataclass(frozen=True)
class Lease:
    """A held session: who holds it and its fencing token (checked when the holder commits).

    ``session`` is the row as it was when the lease was granted; ``folded`` holds earlier
    customer messages whose turns died unanswered (process gone), oldest first, which the
    holder's turn reads together with its own.
    """

    session_id: str
    owner: str
    token: int
    session: Session
    folded: list[tuple[int, str]] = field(default_factory=list)


class Deferred(Protocol):
    """What the graph would have written during a turn, kept for the turn's transaction."""

    def __len__(self) -> int:
        """How many writes are waiting."""
        ...


class SessionRepository(Protocol):
    """Conversations' records, and the lease that makes a session's turns run one at a time."""

    def hold(
        self,
        session_id: str,
        *,
        wait: bool = True,
        message_id: int | None = None,
        owner: str | None = None,
    ) -> AbstractAsyncContextManager[Lease | None]:
        """Lease the session across processes and hosts, renewed while held, let go at exit.

        Yields None when ``wait`` is off and another holds it. ``message_id``: the stored
        customer message (stored as pending by ``owner``) this lease answers; it is granted
        only once every earlier pending message of the session has been answered, so turns run
        in the order their messages were stored. :class:`SessionNotFound` when there is no
        such session; :class:`LeaseLost` when the message was answered by another turn.
        """
        ...

    def deferring(self) -> AbstractContextManager[Deferred]:
        """Keep the checkpoints and requests written inside the block for a transaction."""
        ...

    def transaction(
        self, lease: Lease | None = None, deferred: Deferred | None = None
    ) -> AbstractAsyncContextManager[Store]:
        """Run the block's writes as one transaction, with the deferred writes, committed at
        exit. With a lease: refused with :class:`LeaseLost` unless the lease still holds, and
        the lease is let go in the same commit."""
        ...

    async def pending_turns(self, session_id: str) -> int:
        """Customer messages of the session stored and still waiting for their turn."""
        ...

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers."""
        ...

    async def create_session(
        self,
        session_id: str,
        *,
        pack_name: str,
        pack_version: str,
        customer_id: str | None = None,
    ) -> None:
        """Record a new conversation."""
        ...

    async def get_session(self, session_id: str, *, lock: bool = False) -> Session | None:
        """The conversation's record, if it exists (``lock``: in a transaction, the row stays
        locked until the commit)."""
        ...

    async def finish_turn(
        self,
        session_id: str,
        *,
        status: Status,
        intent: str | None,
        escalation: Escalation | None = None,
    ) -> None:
        """Record where the conversation stands after a turn (a new escalation: its packet
        and reason, and nobody holds the conversation yet)."""
        ...

    async def revoke_tokens(self, session_id: str, *, issued_before_us: int) -> None:
        """Make the session's tokens issued before this instant (µs since epoch) invalid."""
        ...

    async def list_sessions(
        self,
        filters: SessionFilter,
        *,
        before: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> list[QueueEntry]:
        """Sessions, newest activity first, continuing after ``before`` (updated_at, id)."""
        ...

    async def claim_session(self, session_id: str, *, agent: str, force: bool = False) -> bool:
        """Give an escalated session to ``agent`` unless another agent holds it (or ``force``)."""
        ...

    async def release_session(self, session_id: str, *, holder: str | None = None) -> bool:
        """Nobody holds the session any more; with ``holder``, only if that agent still held
        it. Whether it was released."""
        ...

    async def set_status(
        self,
        session_id: str,
        *,
        status: Status,
        release: bool = False,
        reason: str | None = None,
        clear_escalation: bool = False,
    ) -> None:
        """Set the session's status (and escalation reason); optionally drop the claim and the
        hand-off packet."""
        ...

    async def touch_session(self, session_id: str) -> None:
        """Record activity on the session (it moves up the agents' queue)."""
        ...


class Transcript(Protocol):
    """The append-only transcript and the agents' internal notes."""

    async def append_message(
        self,
        session_id: str,
        *,
        role: Role,
        content: str,
        author: str | None = None,
        pending_owner: str | None = None,
    ) -> int:
        """Append one line; return its id. ``pending_owner``: a customer message whose turn
        that owner will run (it waits in the session's queue until answered)."""
        ...

    async def answered(self, message_ids: list[int], *, failed: bool = False) -> None:
        """The turn of these customer messages is over (``failed``: it stored no reply)."""
        ...

    async def get_message(self, message_id: int) -> Message | None:
        """One line by id."""
        ...

    async def list_messages(self, session_id: str) -> list[Message]:
        """The whole transcript, oldest first."""
        ...

    async def add_note(self, session_id: str, *, author: str, content: str) -> int:
        """Store an internal note; return its id."""
        ...

    async def list_notes(self, session_id: str) -> list[Note]:
        """The session's notes, oldest first."""
        ...


class EventLog(Protocol):
    """The log of messages and status changes that live streams and webhooks follow."""

    async def append_event(
        self,
        session_id: str,
        *,
        kind: str,
        audience: Audience,
        data: dict[str, Any],
        outbox: list[OutboxItem] | None = None,
    ) -> int:
        """Log an event with the webhook deliveries it causes; return its id."""
        ...

    async def events_after(
        self,
        after: int,
        *,
        session_id: str | None = None,
        audiences: tuple[Audience, ...] = ("all", "agents"),
        limit: int = 200,
    ) -> list[Event]:
        """Events with an id above ``after``, oldest first (one session's, or all)."""
        ...

    async def last_event_id(self) -> int:
        """The newest event's id (0 when there is none)."""
        ...

    def listen(self) -> AbstractAsyncContextManager[AsyncIterator[tuple[int, str]]] | None:
        """Notifications (event id, session id) of events other processes log; None when no
        other process can write to this log."""
        ...


class Outbox(Protocol):
    """Webhook deliveries waiting to be sent."""

    async def claim_due_webhook(self, *, now: datetime, lease: float) -> Delivery | None:
        """Lease the next due delivery for ``lease`` seconds and count the attempt."""
        ...

    async def webhook_delivered(self, outbox_id: int) -> None:
        """The receiver took the delivery."""
        ...

    async def webhook_failed(
        self, outbox_id: int, *, error: str, next_attempt_at: datetime | None
    ) -> None:
        """An attempt failed: retry at ``next_attempt_at``, or give up when None."""
        ...


class RequestSink(Protocol):
    """Where a confirmed action's request is written (a refund, a ticket)."""

    async def create_request(
        self, *, session_id: str, kind: str, data: dict[str, str], idempotency_key: str
    ) -> str:
        """Store a request once per idempotency key and return its id."""
        ...


@runtime_checkable
class AuditSink(Protocol):
    """Where action decisions are recorded, with no personal data."""

    async def audit_action(
        self,
        *,
        session_id: str,
        action: str,
        kind: str,
        outcome: str,
        reason: str,
        record_ref: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Append one entry (the session as a pseudonym, the record only as a keyed hash)."""
        ...


class Store(SessionRepository, Transcript, EventLog, Outbox, RequestSink, AuditSink, Protocol):
    """Everything the services keep in the database."""

    backend: str
    """Which database: ``sqlite`` or ``postgres``."""

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this store's writes are committed (at once outside a
        transaction; never if the transaction rolls back)."""
        ...


class Retention(Protocol):
    """How long what a conversation leaves behind is kept."""

    async def trim(self, thread_id: str, *, keep: int) -> int:
        """Delete all but the thread's latest ``keep`` checkpoints; return how many went."""
        ...

    async def delete_session(self, session_id: str, *, actor: str) -> bool:
        """Delete every row of the session and audit it; False when there was no session."""
        ...

    async def reclaim(self) -> None:
        """Give freed space back where the backend needs to be asked."""
        ...


@dataclass(frozen=True)
class Found:
    """A record source has the record."""

    record: Mapping[str, str]


@dataclass(frozen=True)
class NotFound:
    """A record source has no record with that key."""


@dataclass(frozen=True)
class Failed:
    """A record source could not answer (its system is down or answered nonsense)."""

    reason: str


RecordResult = Found | NotFound | Failed
"""What a record source answers."""


class RecordSource(Protocol):
    """Records of a company's system, looked up by key fields (orders by order number)."""

    async def lookup(self, key: Mapping[str, str]) -> RecordResult:
        """The record whose fields equal ``key``; compared without case or outer spaces."""
        ...
