"""Retention: delete a session (its owner, or the operator's admin token).

Agent and admin JWTs come with the hand-off issue; until then the operator authenticates with
``SUPPORTGRAPH_ADMIN_TOKEN`` as a bearer token.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Request, Response

from api.deps import Credentials, ServiceDep, TokensDep, authorize, token_claims, token_session
from api.errors import ERROR_RESPONSES
from api.schemas import SESSION_ID_PATTERN
from supportgraph.logs import session_id_var

router = APIRouter(prefix="/api/support", tags=["retention"], responses=ERROR_RESPONSES)

Actor = Literal["admin", "customer"]


def is_admin(request: Request, credentials: Credentials) -> bool:
    """Whether the bearer token is the configured admin token (never when none is set)."""
    admin = request.app.state.settings.admin_token
    if admin is None or credentials is None:
        return False
    return hmac.compare_digest(credentials.credentials.encode(), admin.get_secret_value().encode())


async def deleting_actor(
    request: Request,
    session_id: Annotated[str, Path(pattern=SESSION_ID_PATTERN, description="The session id.")],
    credentials: Credentials,
    tokens: TokensDep,
    service: ServiceDep,
) -> Actor:
    """Who deletes: the admin token's holder, or the holder of the session's own token."""
    if is_admin(request, credentials):
        return "admin"
    claims = await token_claims(credentials, tokens)
    authorize(session_id, await token_session(claims, service))
    return "customer"


@router.delete(
    "/sessions/{session_id}",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Deleted: no row of the session is left"}},
)
async def delete_session(
    session_id: str,
    actor: Annotated[Actor, Depends(deleting_actor)],
    service: ServiceDep,
) -> Response:
    """Delete the session: transcript, state, checkpoints, requests; an audit record remains.

    The audit record keeps only a pseudonymous id (the SHA-256 of the session id). A turn of
    the session that is running finishes first.
    """
    session_id_var.set(session_id)
    await service.delete_session(session_id, actor=actor)
    return Response(status_code=204)
