"""Request and response models of the HTTP API, split by direction."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from supportgraph.app.service import TurnResult
from supportgraph.domain.types import Citation, Escalation, Role, Status, Usage

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,398}={0,2}$"
"""A page cursor: URL-safe base64, as ``next_cursor`` gives it (one the API issued).

The length is in the pattern rather than a ``maxLength`` beside it: schemathesis folds a
``maxLength`` into the pattern's quantifiers and loses the ``={0,2}``."""
EVENT_ID_PATTERN = r"^[0-9]{1,18}$"
"""An event id in ``Last-Event-ID``: decimal digits (18 at most: ids are 64-bit)."""
NO_NUL_PATTERN = r"^[^\x00]*$"
"""Text without NUL characters (PostgreSQL cannot store them)."""
TEXT_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"
"""Text that is not blank and has no NUL: what ``_text`` accepts, stated for the schema."""


def _text(value: str, field: str) -> str:
    """``value`` when it is not blank and has no NUL character (``TEXT_PATTERN``)."""
    if not value.strip():
        raise ValueError(f"{field} must not be blank")
    if "\x00" in value:
        raise ValueError(f"{field} must not contain NUL characters")
    return value


class ChatRequest(BaseModel):
    """One customer message; no ``session_id`` starts a new session."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(
        min_length=1,
        max_length=4000,
        description="The customer's message (not blank, no NUL characters).",
        # Documented, not enforced by pydantic (its regex engine's \s differs from Python's
        # str.strip, which _text uses): the schema tells clients and fuzzers what is refused.
        json_schema_extra={"pattern": TEXT_PATTERN},
    )
    session_id: str | None = Field(
        default=None,
        pattern=SESSION_ID_PATTERN,
        description="A session id the server issued; null or absent starts a new session.",
    )

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        return _text(value, "message")


class ChatResponse(BaseModel):
    """The bot's answer to one message."""

    session_id: str
    session_token: str = Field(description="Send as 'Authorization: Bearer <token>' to continue.")
    reply: str = Field(description="The bot's reply ('' when a person has the conversation).")
    intent: str | None
    status: Status
    citations: list[Citation]
    route: list[str] = Field(description="The graph nodes this turn ran, in order.")
    usage: Usage = Field(
        description="Model calls and tokens of this turn; `degraded` counts model calls that"
        " failed (or were over the turn's budget) and fell back to the local mode."
    )


def chat_response(token: str, result: TurnResult) -> ChatResponse:
    """The body of a chat answer (the same for the plain and the streamed route)."""
    return ChatResponse(
        session_id=result.session_id,
        session_token=token,
        reply=result.reply,
        intent=result.intent,
        status=result.status,
        citations=result.citations,
        route=list(result.route),
        usage=result.usage,
    )


class TranscriptMessage(BaseModel):
    """One line of the transcript."""

    role: Role
    content: str
    created_at: str


class SessionResponse(BaseModel):
    """A session's transcript and state."""

    session_id: str
    status: Status
    intent: str | None
    pack_version: str
    slots: dict[str, str]
    escalation: Escalation | None = Field(description="The hand-off packet.")
    messages: list[TranscriptMessage]


class ErrorBody(BaseModel):
    """What went wrong."""

    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """The one error shape of the API."""

    error: ErrorBody


class Health(BaseModel):
    """Liveness or readiness."""

    status: str
    database: str | None = None


# Human hand-off: sessions for a company's backend, token rotation, the agents' workspace.


class SessionToken(BaseModel):
    """A session and a fresh token for it."""

    session_id: str
    session_token: str = Field(description="Send as 'Authorization: Bearer <token>'.")


class CustomerSession(BaseModel):
    """One of a company customer's sessions."""

    session_id: str
    status: Status
    intent: str | None
    created_at: str
    updated_at: str


class CustomerSessions(BaseModel):
    """A company customer's sessions, newest activity first."""

    items: list[CustomerSession]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")


class AgentMe(BaseModel):
    """The agent a token belongs to."""

    name: str
    role: Literal["agent", "admin"]


class AgentText(BaseModel):
    """What an agent writes: a reply to the customer, or an internal note."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(
        min_length=1,
        max_length=4000,
        description="Not blank, no NUL characters.",
        json_schema_extra={"pattern": TEXT_PATTERN},  # documented; _text enforces it
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        return _text(value, "text")


class QueueItem(BaseModel):
    """A conversation in the agents' list."""

    session_id: str
    status: Status
    intent: str | None
    escalation_reason: str | None
    claimed_by: str | None
    claimed_at: str | None
    customer_id: str | None
    turns: int
    created_at: str
    updated_at: str
    last_message: str | None = Field(description="The latest line of the transcript.")


class Queue(BaseModel):
    """A page of conversations, newest activity first."""

    items: list[QueueItem]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")
    last_event_id: int = Field(
        description="Send as Last-Event-ID to /api/agent/events to miss nothing after this list."
    )


class AgentTranscriptMessage(BaseModel):
    """One transcript line, with the agent who wrote it."""

    id: int
    role: Role
    content: str
    created_at: str
    author: str | None = None


class Note(BaseModel):
    """An internal note (never shown to the customer)."""

    id: int
    author: str
    content: str
    created_at: str


class ClaimOut(BaseModel):
    """Who holds a conversation."""

    session_id: str
    status: Status
    claimed_by: str | None
    claimed_at: str | None


class ConversationOut(BaseModel):
    """Everything an agent sees of one conversation."""

    session_id: str
    status: Status
    intent: str | None
    pack_version: str
    customer_id: str | None
    claimed_by: str | None
    claimed_at: str | None
    escalation_reason: str | None
    created_at: str
    updated_at: str
    slots: dict[str, str]
    escalation: Escalation | None = Field(description="The hand-off packet.")
    summary: str
    messages: list[AgentTranscriptMessage]
    notes: list[Note]
