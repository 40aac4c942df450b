"""Customer sessions for a company's backend, and session-token rotation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import (
    HandoffDep,
    OwnedSession,
    PageCursor,
    ServerCustomer,
    ServiceDep,
    TokensDep,
)
from api.errors import ERROR_RESPONSES
from api.schemas import CustomerSession, CustomerSessions, SessionToken
from supportgraph.domain.types import SessionFilter
from supportgraph.logs import session_id_var

router = APIRouter(prefix="/api/support", tags=["support"], responses=ERROR_RESPONSES)


@router.post("/sessions", response_model=SessionToken, status_code=201)
async def create_session(
    customer_id: ServerCustomer, service: ServiceDep, tokens: TokensDep
) -> SessionToken:
    """Start a session for a company's customer (server key); its token can go to the browser."""
    session_id = await service.new_session(customer_id=customer_id)
    session_id_var.set(session_id)
    return SessionToken(session_id=session_id, session_token=tokens.issue(session_id))


@router.get("/sessions", response_model=CustomerSessions)
async def list_customer_sessions(
    customer_id: ServerCustomer,
    handoff: HandoffDep,
    cursor: PageCursor,
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
) -> CustomerSessions:
    """A company customer's sessions, newest activity first (server key)."""
    page = await handoff.queue(SessionFilter(customer_id=customer_id), cursor=cursor, limit=limit)
    return CustomerSessions(
        items=[
            CustomerSession(
                session_id=e.session.id,
                status=e.session.status,
                intent=e.session.intent,
                created_at=e.session.created_at,
                updated_at=e.session.updated_at,
            )
            for e in page.items
        ],
        next_cursor=page.next_cursor,
    )


@router.post("/sessions/{session_id}/token", response_model=SessionToken)
async def rotate_token(
    session_id: OwnedSession, service: ServiceDep, tokens: TokensDep
) -> SessionToken:
    """Rotate: a new token, and every token issued before it stops working."""
    await service.rotate_tokens(session_id)
    return SessionToken(session_id=session_id, session_token=tokens.issue(session_id))
