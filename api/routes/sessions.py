"""Customer sessions for a company's backend, and session-token rotation."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

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
from supportgraph.handoff import BadCursor
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
    try:
        page = await handoff.queue(customer_id=customer_id, cursor=cursor, limit=limit)
    except BadCursor as exc:
        raise HTTPException(422, str(exc)) from exc
    return CustomerSessions(
        items=[
            CustomerSession(
                session_id=e["row"].id,
                status=e["row"].status,
                intent=e["row"].intent,
                created_at=e["row"].created_at,
                updated_at=e["row"].updated_at,
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
    await service.store.revoke_tokens(session_id, issued_before_us=time.time_ns() // 1000)
    return SessionToken(session_id=session_id, session_token=tokens.issue(session_id))
