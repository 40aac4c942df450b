"""Typed graph state, its reducers, and the narrow input and output schemas.

Graph state is working memory, not the record: the transcript lives in its own table. The
state keeps a bounded window of recent messages, the slots, a short summary and the status,
so a checkpoint stays small however long a conversation runs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

MAX_WINDOW = 12
"""Messages kept in state; older ones live only in the transcript table."""

Status = Literal["active", "awaiting_info", "escalated", "resolved"]
NodeName = Literal["classify_intent", "handle_faq", "collect_info", "escalate_human", "resolve"]


def recent_messages(left: list[AnyMessage], right: Any) -> list[AnyMessage]:
    """``add_messages``, then keep only the last :data:`MAX_WINDOW` messages."""
    merged = add_messages(left, right)
    return merged[-MAX_WINDOW:]


def merge_dict(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """Merge a partial update into a dict; a ``None`` value deletes the key, ``None`` resets."""
    if right is None:
        return {}
    out = dict(left or {})
    for key, value in right.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


class Usage(TypedDict):
    """Model use in one turn."""

    llm_calls: int
    input_tokens: int
    output_tokens: int
    degraded: int


class Citation(TypedDict):
    """An FAQ entry a reply used."""

    id: str
    title: str


EscalationReason = Literal[
    "requested_human",
    "low_confidence",
    "human_only_intent",
    "repeated_failure",
    "negative_sentiment",
    "no_answer",
]


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


class SupportState(TypedDict, total=False):
    """Working memory of one conversation."""

    messages: Annotated[list[AnyMessage], recent_messages]
    """The last few messages (the whole transcript is in the transcript table)."""
    session_id: str
    """The conversation's id (also the thread id)."""
    pack_version: str
    """The version of the domain pack the thread started on."""
    status: Status
    """Where the conversation stands."""
    intent: str | None
    """The current topic's intent."""
    confidence: float
    """Confidence of the latest classification."""
    slots: Annotated[dict[str, str], merge_dict]
    """Validated details collected for the current intent."""
    topic_start: str | None
    """Id of the customer message that started the current topic (slots come from there on)."""
    missing: list[str]
    """Slots the current intent still needs, in the order they are asked."""
    slot_errors: dict[str, str]
    """Why a value the customer gave this turn was rejected, by slot."""
    pending_action: PendingAction | None
    """A data-changing action waiting for a yes."""
    confirmation: Literal["yes", "no", "none"]
    """How the latest message answered a pending confirmation."""
    escalation: Escalation | None
    """The hand-off packet once a person has the conversation."""
    handoff_reason: EscalationReason | None
    """Why this turn goes to a person (set by the node that decides, read by escalate_human)."""
    summary: str
    """A short running summary for a human and for the model."""
    tried: list[str]
    """What the bot tried (bounded), for the hand-off packet."""
    low_confidence_turns: int
    """Consecutive turns the bot did not understand."""
    failures: int
    """Failed attempts on the current topic (invalid values, unknown records, FAQ misses)."""
    negative_turns: int
    """Turns with negative sentiment."""
    sentiment: Literal["negative", "neutral", "positive"]
    """Sentiment of the latest customer message."""
    greeted: bool
    """Whether the pack's greeting has been shown."""
    turn: int
    """Customer turns so far."""
    reply: str
    """What the bot answered this turn ('' when a person has the conversation)."""
    citations: list[Citation]
    """FAQ entries this turn's reply used."""
    route: list[str]
    """The nodes this turn ran, in order."""
    usage: Usage
    """Model calls and tokens this turn."""
    next_node: NodeName | Literal["end"]
    """Where a node decided the turn goes next (read by the routing functions)."""


class TurnInput(TypedDict):
    """What one customer turn puts into the graph."""

    messages: list[AnyMessage]
    session_id: str


class TurnOutput(TypedDict, total=False):
    """What a turn returns to the caller."""

    reply: str
    intent: str | None
    status: Status
    citations: list[Citation]
    route: list[str]
    slots: dict[str, str]
    escalation: Escalation | None
    usage: Usage
    pack_version: str
    turn: int
