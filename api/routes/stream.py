"""Customer-facing live routes: a streamed chat turn, and a session's events (SSE)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from sse_starlette import EventSourceResponse

from api.deps import (
    CREDENTIALS_OPTIONAL,
    ChatCaller,
    LastEventId,
    OwnedSession,
    ServiceDep,
    TokensDep,
    chat_session,
)
from api.errors import ERROR_RESPONSES, documented
from api.schemas import ChatRequest, chat_response
from supportgraph.app.events import customer_view
from supportgraph.domain.ports import StoreUnavailable
from supportgraph.logs import session_id_var

router = APIRouter(prefix="/api/support", tags=["support"], responses=ERROR_RESPONSES)

CHAT_STREAM_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "Server-Sent Events: `start` {session_id, session_token}, then `delta` {text} "
            "pieces of the reply, then `done` with the same body as POST /api/support/chat "
            "(or `error` with the error shape)."
        ),
        "content": {"text/event-stream": {}},
    }
}
EVENTS_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "Server-Sent Events of this session: `message` {message_id, role, content, "
            "citations}, `status` {status}, `claimed`, `released`; `id` is the event id."
        ),
        "content": {"text/event-stream": {}},
    }
}


def _error(code: str, message: str) -> dict[str, Any]:
    """An ``error`` event in the API's error shape (the status line has already gone out)."""
    body = {"error": {"code": code, "message": message, "details": None}}
    return {"event": "error", "data": json.dumps(body)}


@router.post(
    "/chat/stream",
    response_class=EventSourceResponse,
    responses={
        **CHAT_STREAM_RESPONSE,
        **documented(
            {
                409: "A turn of the session runs (busy policy reject: session_busy, with"
                " Retry-After), or the session has taken its most messages (turn_limit_reached)"
            }
        ),
    },
    openapi_extra=CREDENTIALS_OPTIONAL,
)
async def chat_stream(
    body: ChatRequest, service: ServiceDep, tokens: TokensDep, caller: ChatCaller
) -> EventSourceResponse:
    """Send a customer message and receive the reply as it is produced (SSE).

    The same credentials and checks as POST /api/support/chat, answered before the stream
    starts: the stream opens once the turn holds its session. The turn then runs to the end
    even if the client goes away, so the thread stays valid.
    """
    session_id, issued_us = await chat_session(service, body.session_id, caller)
    session_id_var.set(session_id)
    token = tokens.issue(session_id)
    turn = await service.start_turn(session_id, body.message, token_issued_us=issued_us)

    async def stream() -> AsyncIterator[dict[str, Any]]:
        start = {"session_id": session_id, "session_token": token}
        yield {"event": "start", "data": json.dumps(start)}
        try:
            async for item in service.stream_reply(turn):
                if isinstance(item, str):
                    yield {"event": "delta", "data": json.dumps({"text": item})}
                else:
                    done = chat_response(token, item)
                    yield {"event": "done", "data": done.model_dump_json()}
        except StoreUnavailable:
            yield _error("unavailable", "the database is unavailable; try again shortly")

    return EventSourceResponse(stream(), ping=service.events.heartbeat)


@router.get(
    "/sessions/{session_id}/events", response_class=EventSourceResponse, responses=EVENTS_RESPONSE
)
async def session_events(
    session_id: OwnedSession,
    service: ServiceDep,
    last_event_id: LastEventId,
) -> EventSourceResponse:
    """The session's new messages (the bot's and agents'), claims and status changes (SSE).

    Without ``Last-Event-ID`` the stream replays the session from its start, so a page that
    reloads can render the whole conversation from it. Internal notes are never sent.
    """
    hub = service.events
    after = last_event_id or 0

    async def stream() -> AsyncIterator[dict[str, Any]]:
        yield {"event": "ready", "data": json.dumps({"after": after}), "retry": 2000}
        async for event in hub.follow(after=after, session_id=session_id, audiences=("all",)):
            shown = customer_view(event)
            if shown is not None:
                yield {"id": str(event.id), "event": event.kind, "data": json.dumps(shown)}

    return EventSourceResponse(stream(), ping=hub.heartbeat)
