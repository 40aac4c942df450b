"""The domain's types: one definition each, used by the graph, the services, the API and storage.

Values that travel inside the graph state or API bodies are ``TypedDict`` (plain JSON in a
checkpoint); records the services read back from storage are frozen dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from typing_extensions import TypedDict

Status = Literal["active", "awaiting_info", "escalated", "resolved"]
"""Where a conversation stands: with the bot, waiting for a detail, with a person, or done."""

EscalationReason = Literal[
    "requested_human",
    "low_confidence",
    "human_only_intent",
    "repeated_failure",
    "negative_sentiment",
    "no_answer",
]
"""Why a conversation went to a person."""

Sentiment = Literal["negative", "neutral", "positive"]
Confirmation = Literal["yes", "no", "none"]
"""How a message answers a yes/no question ("none": it does not)."""

Role = Literal["customer", "assistant", "agent"]
"""Who wrote a transcript line."""

Audience = Literal["all", "agents"]
"""Who may see an event: everyone following the session, or agents only (notes)."""


class Usage(TypedDict):
    """Model use in one turn."""

    llm_calls: int
    input_tokens: int
    output_tokens: int
    degraded: int


def empty_usage() -> Usage:
    """Zero usage for a new turn."""
    return {"llm_calls": 0, "input_tokens": 0, "output_tokens": 0, "degraded": 0}


class Citation(TypedDict):
    """An FAQ entry a reply used."""

    id: str
    title: str


class Escalation(TypedDict, total=False):
    """Why and how a conversation went to a person: the hand-off packet."""

    reason: EscalationReason
    detail: str
    summary: str
    intent: str | None
    slots: dict[str, str]
    tried: list[str]
    at: str


class PendingAction(TypedDict):
    """A data-changing action stated to the customer and waiting for an explicit yes."""

    intent: str
    action: str
    slots: dict[str, str]
    description: str


@dataclass(frozen=True)
class Session:
    """A conversation's record: the one place its status, claim and intent are kept."""

    id: str
    status: Status
    intent: str | None
    pack_name: str
    pack_version: str
    turns: int
    created_at: str
    updated_at: str
    customer_id: str | None = None
    tokens_valid_after: int = 0
    claimed_by: str | None = None
    claimed_at: str | None = None
    escalation_reason: str | None = None
    escalation: Escalation | None = None


@dataclass(frozen=True)
class Message:
    """One transcript line."""

    id: int
    role: Role
    content: str
    created_at: str
    author: str | None = None


@dataclass(frozen=True)
class Note:
    """An agents' internal note (never part of the transcript)."""

    id: int
    author: str
    content: str
    created_at: str


@dataclass(frozen=True)
class SessionFilter:
    """Which sessions a list shows; every field left at its default lets all through."""

    statuses: tuple[Status, ...] = ()
    reason: str | None = None
    """The escalation reason."""
    claimed_by: str | None = None
    """The agent holding the session."""
    unclaimed: bool = False
    """Only sessions nobody holds."""
    updated_since: datetime | None = None
    customer_id: str | None = None
    """The company's own id for its customer."""


@dataclass(frozen=True)
class QueueEntry:
    """A conversation in a list of sessions, with its latest transcript line."""

    session: Session
    last_message: str | None


@dataclass(frozen=True)
class Event:
    """One entry of the event log that live updates are served from."""

    id: int
    session_id: str
    kind: str
    audience: Audience
    data: dict[str, Any]
    created_at: str


@dataclass(frozen=True)
class OutboxItem:
    """A webhook delivery to enqueue with an event."""

    event_type: str
    url: str
    idempotency_key: str
    payload: dict[str, Any]
    expires_at: datetime


@dataclass(frozen=True)
class Delivery:
    """A webhook delivery in the outbox."""

    id: int
    session_id: str | None
    event_type: str
    url: str
    idempotency_key: str
    payload: dict[str, Any]
    status: str
    attempts: int
    created_at: str
    expires_at: str
    last_error: str | None
    delivered_at: str | None


class RequestRecord(TypedDict):
    """A request an action wrote (a refund, a ticket)."""

    id: str
    session_id: str
    kind: str
    data: dict[str, str]
    status: str
    created_at: str


class AuditEntry(TypedDict):
    """One audited decision: the session only as its pseudonym, the record as a keyed hash."""

    id: int
    action: str
    subject_sha256: str
    actor: str
    at: str
    kind: str | None
    outcome: str | None
    reason: str | None
    record_ref: str | None
    request_id: str | None


CrashPoint = Literal[
    "turn.message_stored",
    "turn.graph_done",
    "turn.in_commit",
    "turn.committed",
    "agent.graph_done",
    "agent.in_commit",
    "agent.committed",
    "webhook.sent",
]
"""Where a turn, an agent's action or a webhook delivery can be cut short.

- ``turn.message_stored``: the customer's message is committed, the graph has not run.
- ``turn.graph_done``: the graph ran (its writes are only in memory), nothing committed.
- ``turn.in_commit``: inside the turn's transaction, every write sent, not committed.
- ``turn.committed``: the turn committed, the reply not yet sent to the customer.
- ``agent.*``: the same boundaries of an agent's reply, release, hand back or resolve.
- ``webhook.sent``: a receiver took a delivery that is not yet marked delivered.
"""
