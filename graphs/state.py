"""Typed graph state, its reducers, and the narrow input and output schemas.

Graph state is working memory, not the record: the transcript lives in its own table. The
state keeps a bounded window of recent messages, the slots, a short summary and the status,
so a checkpoint stays small however long a conversation runs. What a turn produces for its
caller (the reply, the route, the usage...) lives in channels that are never checkpointed:
each turn starts without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, NotRequired, cast

from langchain_core.messages import AnyMessage, MessageLikeRepresentation
from langgraph.channels.untracked_value import UntrackedValue
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from supportgraph.domain.types import (
    Citation,
    Confirmation,
    Escalation,
    EscalationReason,
    PendingAction,
    Sentiment,
    Status,
    Usage,
)

MAX_WINDOW = 12
"""Messages kept in state; older ones live only in the transcript table."""

NodeName = Literal["classify_intent", "handle_faq", "collect_info", "escalate_human", "resolve"]

Outcome = Literal[
    "answered",
    "clarified",
    "no_answer",
    "asked",
    "collected",
    "confirm",
    "done",
    "cancelled",
    "unclear",
    "not_found",
    "ineligible",
    "failed",
    "handed_off",
    "with_person",
]
"""What the node that ran last did: the FAQ answered or had no answer, details were asked for
or all collected, an action was stated, done, refused or failed, a person got the conversation
or already had it."""


def recent_messages(left: Sequence[AnyMessage], right: Any) -> list[AnyMessage]:
    """``add_messages``, then keep only the last :data:`MAX_WINDOW` messages.

    ``right`` is an update: one message or a list, in any form ``add_messages`` accepts.
    """
    merged = add_messages(list[MessageLikeRepresentation](left), right)
    # add_messages turns every representation into a message and always returns a list.
    return cast(list[AnyMessage], merged)[-MAX_WINDOW:]


def merge_dict(left: dict[str, str] | None, right: dict[str, str | None] | None) -> dict[str, str]:
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


class SupportState(TypedDict, total=False):
    """Working memory of one conversation, and what the current turn produces."""

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
    sentiment: Sentiment
    """Sentiment of the latest customer message."""
    confirmation: Confirmation
    """How the latest message answered a pending confirmation."""
    slots: Annotated[dict[str, str], merge_dict]
    """Validated details collected for the current intent."""
    topic_start: str | None
    """Id of the customer message that started the current topic (slots come from there on)."""
    missing: list[str]
    """Slots the current intent still needs, in the order they are asked."""
    pending_action: PendingAction | None
    """A data-changing action waiting for a yes."""
    escalation: Escalation | None
    """The hand-off packet once a person has the conversation."""
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
    greeted: bool
    """Whether the pack's greeting has been shown."""
    turn: int
    """Customer turns so far."""

    # This turn's output: never checkpointed, so every turn starts without it.
    reply: Annotated[str, UntrackedValue]
    """What the bot answered this turn ('' when a person has the conversation)."""
    citations: Annotated[list[Citation], UntrackedValue]
    """FAQ entries this turn's reply used."""
    route: Annotated[list[NodeName], UntrackedValue]
    """The nodes this turn ran, in order."""
    usage: Annotated[Usage, UntrackedValue]
    """Model calls and tokens this turn."""
    slot_errors: Annotated[dict[str, str], UntrackedValue]
    """Why a value the customer gave this turn was rejected, by slot."""
    outcome: Annotated[Outcome, UntrackedValue]
    """What the node that ran last did."""
    handoff_reason: Annotated[EscalationReason, UntrackedValue]
    """Why this turn needs a person, by the pack's escalation rules (absent: it does not)."""


class StateUpdate(TypedDict, total=False):
    """A node's partial update of :class:`SupportState` (values as the reducers take them)."""

    messages: list[AnyMessage]
    session_id: str
    pack_version: str
    status: Status
    intent: str | None
    confidence: float
    sentiment: Sentiment
    confirmation: Confirmation
    slots: dict[str, str | None] | None
    topic_start: str | None
    missing: list[str]
    pending_action: PendingAction | None
    escalation: Escalation | None
    summary: str
    tried: list[str]
    low_confidence_turns: int
    failures: int
    negative_turns: int
    greeted: bool
    turn: int
    reply: str
    citations: list[Citation]
    route: list[NodeName]
    usage: Usage
    slot_errors: dict[str, str]
    outcome: Outcome
    handoff_reason: EscalationReason


class TurnInput(TypedDict):
    """What one customer turn puts into the graph.

    ``status``: where the conversation stands, from the session row (the one place it is
    kept); a run without it (Studio, evals) continues from the checkpoint's.
    """

    messages: list[AnyMessage]
    session_id: str
    status: NotRequired[Status]


class TurnOutput(TypedDict, total=False):
    """What a turn returns to the caller."""

    reply: str
    intent: str | None
    status: Status
    citations: list[Citation]
    route: list[NodeName]
    slots: dict[str, str]
    escalation: Escalation | None
    usage: Usage
    pack_version: str
    turn: int
