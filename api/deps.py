"""``Annotated`` dependency aliases: the service, the token issuer and the session caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import SessionTokens, TokenError
from api.schemas import SESSION_ID_PATTERN
from supportgraph.service import SupportService

_bearer = HTTPBearer(auto_error=False, description="The session token from the first chat reply.")


def get_service(request: Request) -> SupportService:
    """The app's conversation service."""
    return request.app.state.service


def get_tokens(request: Request) -> SessionTokens:
    """The app's session-token issuer."""
    return request.app.state.tokens


ServiceDep = Annotated[SupportService, Depends(get_service)]
TokensDep = Annotated[SessionTokens, Depends(get_tokens)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def token_session(credentials: Credentials, tokens: TokensDep) -> str | None:
    """The session id the bearer token is bound to; None without a token; 401 if invalid."""
    if credentials is None:
        return None
    try:
        return tokens.session_of(credentials.credentials)
    except TokenError as exc:
        raise HTTPException(
            401, "invalid or expired session token", headers={"WWW-Authenticate": "Bearer"}
        ) from exc


TokenSession = Annotated[str | None, Depends(token_session)]


def authorize(session_id: str, token_session_id: str | None) -> None:
    """401 without a token; 404 when the token is for another session (existence not revealed)."""
    if token_session_id is None:
        raise HTTPException(
            401,
            "this session needs 'Authorization: Bearer <session_token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if token_session_id != session_id:
        raise HTTPException(404, "session not found")


def owned_session(
    session_id: Annotated[str, Path(pattern=SESSION_ID_PATTERN, description="The session id.")],
    token_session_id: TokenSession,
) -> str:
    """The path's session id, when the caller's token is bound to it."""
    authorize(session_id, token_session_id)
    return session_id


OwnedSession = Annotated[str, Depends(owned_session)]
