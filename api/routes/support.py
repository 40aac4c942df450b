"""Customer-facing routes: chat and the session transcript."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import (
    CREDENTIALS_OPTIONAL,
    ChatCaller,
    OwnedSession,
    ServiceDep,
    TokensDep,
    chat_session,
)
from api.errors import ERROR_RESPONSES, documented
from api.schemas import (
    ChatRequest,
    ChatResponse,
    SessionResponse,
    TranscriptMessage,
    chat_response,
)
from supportgraph.logs import session_id_var

router = APIRouter(prefix="/api/support", tags=["support"], responses=ERROR_RESPONSES)


@router.post(
    "/chat",
    response_model=ChatResponse,
    openapi_extra=CREDENTIALS_OPTIONAL,
    responses=documented(
        {
            409: "A turn of the session runs (busy policy reject: session_busy, with"
            " Retry-After), or the session has taken its most messages (turn_limit_reached)"
        }
    ),
)
async def chat(
    body: ChatRequest, service: ServiceDep, tokens: TokensDep, caller: ChatCaller
) -> ChatResponse:
    """Send a customer message; without ``session_id`` a new session starts.

    The session token of the session, or a server key for the session's customer (a new
    session then belongs to that customer).
    """
    session_id, issued_us = await chat_session(service, body.session_id, caller)
    session_id_var.set(session_id)
    result = await service.turn(session_id, body.message, token_issued_us=issued_us)
    return chat_response(tokens.issue(session_id), result)


@router.get("/sessions/{session_id}", response_model=SessionResponse)
async def get_session(session_id: OwnedSession, service: ServiceDep) -> SessionResponse:
    """The session's whole transcript and state."""
    view = await service.view(session_id)
    return SessionResponse(
        session_id=session_id,
        status=view.session.status,
        intent=view.session.intent,
        pack_version=view.session.pack_version,
        slots=view.slots,
        escalation=view.escalation,
        messages=[
            TranscriptMessage(role=m.role, content=m.content, created_at=m.created_at)
            for m in view.messages
        ],
    )
