"""The agents' workspace: the queue, one conversation, claim, reply, note, hand back, resolve."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from sse_starlette import EventSourceResponse

from api.agent_auth import Agent
from api.deps import CurrentAgent, HandoffDep, LastEventId, PageCursor, ServiceDep
from api.errors import documented
from api.schemas import (
    NO_NUL_PATTERN,
    SESSION_ID_PATTERN,
    AgentMe,
    AgentText,
    AgentTranscriptMessage,
    ClaimOut,
    ConversationOut,
    Note,
    Queue,
    QueueItem,
)
from supportgraph.app.events import agent_view
from supportgraph.domain.types import EscalationReason, Session, SessionFilter, Status

AGENT_ERRORS = documented(
    {
        401: "Missing, invalid or expired agent token",
        403: "The token's role may not do this",
        404: "Unknown session",
        409: "Claimed by another agent, or not with a person",
        413: "Request body too large",
        422: "Invalid input",
        503: "Database unavailable",
    }
)

router = APIRouter(prefix="/api/agent", tags=["agent"], responses=AGENT_ERRORS)

SessionId = Annotated[str, Path(pattern=SESSION_ID_PATTERN, description="The session id.")]
Force = Annotated[bool, Query(description="Take over from another agent (admins only).")]

SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: `id` is the event id, `event` its kind, `data` JSON.",
        "content": {"text/event-stream": {}},
    }
}


def _utc(instant: datetime) -> datetime:
    """``instant`` in UTC, as the store keeps times (SQLite compares them as text)."""
    if instant.tzinfo is None:
        raise HTTPException(422, "updated_since needs a time zone (e.g. ...Z or +00:00)")
    try:
        return instant.astimezone(UTC)
    except OverflowError as exc:
        # 0001-01-01T00:00+01:00 is before the first instant a datetime can hold in UTC.
        raise HTTPException(422, f"updated_since {instant.isoformat()} is out of range") from exc


def _forcing(agent: Agent, force: bool) -> bool:
    if force and not agent.is_admin:
        raise HTTPException(403, "only admins may take a conversation from another agent")
    return force


def _claim_out(row: Session) -> ClaimOut:
    return ClaimOut(
        session_id=row.id, status=row.status, claimed_by=row.claimed_by, claimed_at=row.claimed_at
    )


@router.get("/me", response_model=AgentMe)
async def me(agent: CurrentAgent) -> AgentMe:
    """Who the token belongs to."""
    return AgentMe(name=agent.name, role=agent.role)


@router.get("/sessions", response_model=Queue)
async def list_sessions(
    agent: CurrentAgent,
    handoff: HandoffDep,
    cursor: PageCursor,
    status: Annotated[list[Status] | None, Query(description="Repeat for several.")] = None,
    reason: Annotated[EscalationReason | None, Query(description="Escalation reason.")] = None,
    claimed_by: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=NO_NUL_PATTERN,
            description="An agent's name, or `none` for unclaimed.",
        ),
    ] = None,
    updated_since: Annotated[
        datetime | None, Query(description="Only conversations active since (ISO 8601).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
) -> Queue:
    """Conversations, newest activity first, with filters and cursor pagination."""
    filters = SessionFilter(
        statuses=tuple(status or ()),
        reason=reason,
        claimed_by=None if claimed_by == "none" else claimed_by,
        unclaimed=claimed_by == "none",
        updated_since=_utc(updated_since) if updated_since is not None else None,
    )
    page = await handoff.queue(filters, cursor=cursor, limit=limit)
    items = [
        QueueItem(
            session_id=e.session.id,
            status=e.session.status,
            intent=e.session.intent,
            escalation_reason=e.session.escalation_reason,
            claimed_by=e.session.claimed_by,
            claimed_at=e.session.claimed_at,
            customer_id=e.session.customer_id,
            turns=e.session.turns,
            created_at=e.session.created_at,
            updated_at=e.session.updated_at,
            last_message=e.last_message,
        )
        for e in page.items
    ]
    return Queue(items=items, next_cursor=page.next_cursor, last_event_id=page.last_event_id)


@router.get("/sessions/{session_id}", response_model=ConversationOut)
async def get_conversation(
    session_id: SessionId, agent: CurrentAgent, handoff: HandoffDep
) -> ConversationOut:
    """The transcript, slots, internal notes and hand-off packet."""
    conv = await handoff.conversation(session_id)
    row = conv.session
    return ConversationOut(
        session_id=row.id,
        status=row.status,
        intent=row.intent,
        pack_version=row.pack_version,
        customer_id=row.customer_id,
        claimed_by=row.claimed_by,
        claimed_at=row.claimed_at,
        escalation_reason=row.escalation_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        slots=conv.slots,
        escalation=conv.escalation,
        summary=conv.summary,
        messages=[
            AgentTranscriptMessage(
                id=m.id,
                role=m.role,
                content=m.content,
                created_at=m.created_at,
                author=m.author,
            )
            for m in conv.messages
        ],
        notes=[
            Note(id=n.id, author=n.author, content=n.content, created_at=n.created_at)
            for n in conv.notes
        ],
    )


@router.post("/sessions/{session_id}/claim", response_model=ClaimOut)
async def claim(
    session_id: SessionId, agent: CurrentAgent, handoff: HandoffDep, force: Force = False
) -> ClaimOut:
    """Take the conversation: one agent at a time (409 if another holds it)."""
    row = await handoff.claim(session_id, agent=agent.name, force=_forcing(agent, force))
    return _claim_out(row)


@router.post("/sessions/{session_id}/release", response_model=ClaimOut)
async def release(
    session_id: SessionId, agent: CurrentAgent, handoff: HandoffDep, force: Force = False
) -> ClaimOut:
    """Let go of the conversation so another agent can take it."""
    row = await handoff.release(session_id, agent=agent.name, force=_forcing(agent, force))
    return _claim_out(row)


@router.post("/sessions/{session_id}/reply", response_model=AgentTranscriptMessage)
async def reply(
    session_id: SessionId, body: AgentText, agent: CurrentAgent, handoff: HandoffDep
) -> AgentTranscriptMessage:
    """Answer the customer (their transcript shows it with role `agent`)."""
    message = await handoff.reply(session_id, agent=agent.name, text=body.text)
    return AgentTranscriptMessage(
        id=message.id,
        role="agent",
        content=message.content,
        created_at=message.created_at,
        author=message.author,
    )


@router.post("/sessions/{session_id}/notes", response_model=Note)
async def add_note(
    session_id: SessionId, body: AgentText, agent: CurrentAgent, handoff: HandoffDep
) -> Note:
    """Add an internal note: agents see it, the customer never does."""
    note = await handoff.note(session_id, agent=agent.name, text=body.text)
    return Note(id=note.id, author=note.author, content=note.content, created_at=note.created_at)


@router.post("/sessions/{session_id}/hand-back", response_model=ClaimOut)
async def hand_back(session_id: SessionId, agent: CurrentAgent, handoff: HandoffDep) -> ClaimOut:
    """Give the conversation back to the bot (the next customer message runs the graph)."""
    row = await handoff.hand_back(session_id, agent=agent.name)
    return _claim_out(row)


@router.post("/sessions/{session_id}/resolve", response_model=ClaimOut)
async def resolve(session_id: SessionId, agent: CurrentAgent, handoff: HandoffDep) -> ClaimOut:
    """Close the conversation."""
    row = await handoff.resolve(session_id, agent=agent.name)
    return _claim_out(row)


@router.get("/events", response_class=EventSourceResponse, responses=SSE_RESPONSE)
async def events(
    agent: CurrentAgent,
    service: ServiceDep,
    last_event_id: LastEventId,
    session_id: Annotated[
        str | None, Query(pattern=SESSION_ID_PATTERN, description="Only this conversation.")
    ] = None,
) -> EventSourceResponse:
    """New messages, notes, claims, hand-backs and status changes of all conversations (SSE).

    Without ``Last-Event-ID`` the stream starts with the next event; with it, nothing after
    that id is missed (including across reconnects and worker processes).
    """
    hub = service.events
    after = last_event_id if last_event_id is not None else await service.events.last_event_id()

    async def stream() -> AsyncIterator[dict[str, Any]]:
        yield {"event": "ready", "data": json.dumps({"after": after}), "retry": 2000}
        async for event in hub.follow(
            after=after, session_id=session_id, audiences=("all", "agents")
        ):
            yield {"id": str(event.id), "event": event.kind, "data": json.dumps(agent_view(event))}

    return EventSourceResponse(stream(), ping=hub.heartbeat)
