"""Customer-facing routes: chat and the session transcript."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import (
    CREDENTIALS_OPTIONAL,
    Claims,
    OwnedSession,
    ServiceDep,
    TokensDep,
    authorize,
)
from api.errors import ERROR_RESPONSES, documented
from api.schemas import ChatRequest, ChatResponse, SessionResponse, TranscriptMessage
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
    body: ChatRequest, service: ServiceDep, tokens: TokensDep, claims: Claims
) -> ChatResponse:
    """Send a customer message; without ``session_id`` a new session starts."""
    issued_us = None
    if body.session_id is None:
        session_id = await service.new_session()
    else:
        authorize(body.session_id, claims.session_id if claims else None)
        session_id = body.session_id
        # A revoked token is refused under the session's lock, with the row read there.
        issued_us = claims.issued_us if claims else None
    session_id_var.set(session_id)
    result = await service.turn(session_id, body.message, token_issued_us=issued_us)
    return ChatResponse(
        session_id=session_id,
        session_token=tokens.issue(session_id),
        reply=result.reply,
        intent=result.intent,
        status=result.status,  # type: ignore[arg-type]
        citations=result.citations,  # type: ignore[arg-type]
        route=result.route,
        usage=result.usage,  # type: ignore[arg-type]
    )


@router.get("/sessions/{session_id}", response_model=SessionResponse)
async def get_session(session_id: OwnedSession, service: ServiceDep) -> SessionResponse:
    """The session's whole transcript and state."""
    view = await service.view(session_id)
    return SessionResponse(
        session_id=session_id,
        status=view.session.status,  # type: ignore[arg-type]
        intent=view.session.intent,
        pack_version=view.session.pack_version,
        slots=view.slots,
        escalation=view.escalation,  # type: ignore[arg-type]
        messages=[
            TranscriptMessage(role=m.role, content=m.content, created_at=m.created_at)  # type: ignore[arg-type]
            for m in view.messages
        ],
    )
