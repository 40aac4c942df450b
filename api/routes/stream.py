"""Customer-facing live routes: a streamed chat turn, and a session's events (SSE)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from sse_starlette import EventSourceResponse

from api.deps import (
    CREDENTIALS_OPTIONAL,
    CustomerCaller,
    LastEventId,
    OwnedSession,
    ServiceDep,
    TokensDep,
    authorize_caller,
)
from api.errors import ERROR_RESPONSES
from api.schemas import ChatRequest, ChatResponse
from checkpoints import StoreUnavailable
from supportgraph.events import customer_view
from supportgraph.logs import session_id_var
from supportgraph.service import SessionBusy, TurnLimitReached, TurnResult

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


def chat_response(session_id: str, token: str, result: TurnResult) -> ChatResponse:
    """The body of a chat answer (the same for the plain and the streamed route)."""
    return ChatResponse(
        session_id=session_id,
        session_token=token,
        reply=result.reply,
        intent=result.intent,
        status=result.status,  # type: ignore[arg-type]
        citations=result.citations,  # type: ignore[arg-type]
        route=result.route,
        usage=result.usage,  # type: ignore[arg-type]
    )


@router.post(
    "/chat/stream",
    response_class=EventSourceResponse,
    responses=CHAT_STREAM_RESPONSE,
    openapi_extra=CREDENTIALS_OPTIONAL,
)
async def chat_stream(
    body: ChatRequest, service: ServiceDep, tokens: TokensDep, caller: CustomerCaller
) -> EventSourceResponse:
    """Send a customer message and receive the reply as it is produced (SSE).

    The turn runs to the end even if the client goes away, so the thread stays valid.
    """
    if body.session_id is None:
        session_id = await service.new_session(customer_id=caller.customer_id if caller else None)
    else:
        await authorize_caller(service, body.session_id, caller)
        session_id = body.session_id
    session_id_var.set(session_id)
    token = tokens.issue(session_id)
    turn = service.start_turn(session_id, body.message)

    async def stream() -> AsyncIterator[dict[str, Any]]:
        start = {"session_id": session_id, "session_token": token}
        yield {"event": "start", "data": json.dumps(start)}
        try:
            async for item in service.stream_reply(turn):
                if isinstance(item, str):
                    yield {"event": "delta", "data": json.dumps({"text": item})}
                else:
                    done = chat_response(session_id, token, item)
                    yield {"event": "done", "data": done.model_dump_json()}
        except StoreUnavailable:
            yield _error("unavailable", "the database is unavailable; try again shortly")
        except SessionBusy:
            yield _error(
                "session_busy",
                "a message of this session is being answered; send this one after it",
            )
        except TurnLimitReached as exc:
            yield _error("turn_limit_reached", str(exc))

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
