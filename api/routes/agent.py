"""The agents' workspace: the queue, one conversation, claim, reply, note, hand back, resolve."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
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
    EscalationOut,
    Note,
    Queue,
    QueueItem,
    Status,
)
from checkpoints.store import SessionRow
from graphs.state import EscalationReason
from supportgraph.events import agent_view
from supportgraph.handoff import BadCursor, ClaimConflict, NotEscalated

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


@contextmanager
def _as_http() -> Iterator[None]:
    """Map hand-off errors to HTTP answers."""
    try:
        yield
    except ClaimConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    except NotEscalated as exc:
        raise HTTPException(409, str(exc)) from exc
    except BadCursor as exc:
        raise HTTPException(422, str(exc)) from exc


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


def _claim_out(row: SessionRow) -> ClaimOut:
    return ClaimOut(
        session_id=row.id,
        status=row.status,  # type: ignore[arg-type]
        claimed_by=row.claimed_by,
        claimed_at=row.claimed_at,
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
    if updated_since is not None:
        updated_since = _utc(updated_since)
    with _as_http():
        page = await handoff.queue(
            statuses=list(status) if status else None,
            reason=reason,
            claimed_by=None if claimed_by == "none" else claimed_by,
            unclaimed=claimed_by == "none",
            updated_since=updated_since,
            cursor=cursor,
            limit=limit,
        )
    items = []
    for entry in page.items:
        row: SessionRow = entry["row"]
        items.append(
            QueueItem(
                session_id=row.id,
                status=row.status,  # type: ignore[arg-type]
                intent=row.intent,
                escalation_reason=row.escalation_reason,
                claimed_by=row.claimed_by,
                claimed_at=row.claimed_at,
                customer_id=row.customer_id,
                turns=row.turns,
                created_at=row.created_at,
                updated_at=row.updated_at,
                last_message=entry["last_message"],
            )
        )
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
        status=row.status,  # type: ignore[arg-type]
        intent=row.intent,
        pack_version=row.pack_version,
        customer_id=row.customer_id,
        claimed_by=row.claimed_by,
        claimed_at=row.claimed_at,
        escalation_reason=row.escalation_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        slots=conv.slots,
        escalation=EscalationOut(**conv.escalation) if conv.escalation else None,
        summary=conv.summary,
        messages=[
            AgentTranscriptMessage(
                id=m.id,
                role=m.role,  # type: ignore[arg-type]
                content=m.content,
                created_at=m.created_at,
                author=m.author,
            )
            for m in conv.messages
        ],
        notes=[Note(**n) for n in conv.notes],
    )


@router.post("/sessions/{session_id}/claim", response_model=ClaimOut)
async def claim(
    session_id: SessionId, agent: CurrentAgent, handoff: HandoffDep, force: Force = False
) -> ClaimOut:
    """Take the conversation: one agent at a time (409 if another holds it)."""
    with _as_http():
        row = await handoff.claim(session_id, agent=agent.name, force=_forcing(agent, force))
    return _claim_out(row)


@router.post("/sessions/{session_id}/release", response_model=ClaimOut)
async def release(
    session_id: SessionId, agent: CurrentAgent, handoff: HandoffDep, force: Force = False
) -> ClaimOut:
    """Let go of the conversation so another agent can take it."""
    with _as_http():
        row = await handoff.release(session_id, agent=agent.name, force=_forcing(agent, force))
    return _claim_out(row)


@router.post("/sessions/{session_id}/reply", response_model=AgentTranscriptMessage)
async def reply(
    session_id: SessionId, body: AgentText, agent: CurrentAgent, handoff: HandoffDep
) -> AgentTranscriptMessage:
    """Answer the customer (their transcript shows it with role `agent`)."""
    with _as_http():
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
    return Note(**await handoff.note(session_id, agent=agent.name, text=body.text))


@router.post("/sessions/{session_id}/hand-back", response_model=ClaimOut)
async def hand_back(session_id: SessionId, agent: CurrentAgent, handoff: HandoffDep) -> ClaimOut:
    """Give the conversation back to the bot (the next customer message runs the graph)."""
    with _as_http():
        row = await handoff.hand_back(session_id, agent=agent.name)
    return _claim_out(row)


@router.post("/sessions/{session_id}/resolve", response_model=ClaimOut)
async def resolve(session_id: SessionId, agent: CurrentAgent, handoff: HandoffDep) -> ClaimOut:
    """Close the conversation."""
    with _as_http():
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
    after = last_event_id if last_event_id is not None else await service.store.last_event_id()

    async def stream() -> AsyncIterator[dict[str, Any]]:
        yield {"event": "ready", "data": json.dumps({"after": after}), "retry": 2000}
        async for event in hub.follow(
            after=after, session_id=session_id, audiences=("all", "agents")
        ):
            yield {"id": str(event.id), "event": event.kind, "data": json.dumps(agent_view(event))}

    return EventSourceResponse(stream(), ping=hub.heartbeat)
