"""Request and response models of the HTTP API, split by direction."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"

Status = Literal["active", "awaiting_info", "escalated", "resolved"]


class ChatRequest(BaseModel):
    """One customer message; no ``session_id`` starts a new session."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=4000, description="The customer's message.")
    session_id: str | None = Field(
        default=None,
        pattern=SESSION_ID_PATTERN,
        description="A session id the server issued; null or absent starts a new session.",
    )

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message must not be blank")
        if "\x00" in value:
            raise ValueError("message must not contain NUL characters")
        return value


class Citation(BaseModel):
    """An FAQ entry the reply used."""

    id: str
    title: str


class Usage(BaseModel):
    """Model use in this turn."""

    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    degraded: int = Field(
        default=0, description="Model calls that failed and fell back to local mode."
    )


class ChatResponse(BaseModel):
    """The bot's answer to one message."""

    session_id: str
    session_token: str = Field(description="Send as 'Authorization: Bearer <token>' to continue.")
    reply: str = Field(description="The bot's reply ('' when a person has the conversation).")
    intent: str | None
    status: Status
    citations: list[Citation]
    route: list[str] = Field(description="The graph nodes this turn ran, in order.")
    usage: Usage


class TranscriptMessage(BaseModel):
    """One line of the transcript."""

    role: Literal["customer", "assistant", "agent"]
    content: str
    created_at: str


class EscalationOut(BaseModel):
    """The hand-off packet."""

    model_config = ConfigDict(extra="allow")

    reason: str
    detail: str = ""
    summary: str = ""
    intent: str | None = None
    slots: dict[str, str] = Field(default_factory=dict)
    tried: list[str] = Field(default_factory=list)
    at: str | None = None


class SessionResponse(BaseModel):
    """A session's transcript and state."""

    session_id: str
    status: Status
    intent: str | None
    pack_version: str
    slots: dict[str, str]
    escalation: EscalationOut | None
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
