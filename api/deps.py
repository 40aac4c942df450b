"""``Annotated`` dependency aliases: the services, the token issuers, the callers.

Customer side: a session token (bound to one session, revocable), or a company backend's
``X-API-Key`` with its own ``X-Customer-ID`` (sessions created for that id). Agent side: an
agent JWT (``api.agent_auth``).
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Path, Query, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.agent_auth import (
    Agent,
    AgentKeysUnavailable,
    AgentRoleError,
    AgentTokenError,
    AgentTokens,
)
from api.auth import SessionTokens, TokenError
from api.schemas import (
    CURSOR_PATTERN,
    CUSTOMER_ID_PATTERN,
    EVENT_ID_PATTERN,
    SESSION_ID_PATTERN,
)
from supportgraph.app.handoff import BadCursor, HandoffService, decode_cursor
from supportgraph.app.service import SupportService

_bearer = HTTPBearer(auto_error=False, description="The session token from the first chat reply.")


async def get_service(request: Request) -> SupportService:
    """The app's conversation service."""
    return request.app.state.service


async def get_tokens(request: Request) -> SessionTokens:
    """The app's session-token issuer."""
    return request.app.state.tokens


ServiceDep = Annotated[SupportService, Depends(get_service)]
TokensDep = Annotated[SessionTokens, Depends(get_tokens)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


@dataclass(frozen=True)
class TokenClaims:
    """What a valid session token says: its session and when it was issued."""

    session_id: str
    issued_us: int


async def token_claims(credentials: Credentials, tokens: TokensDep) -> TokenClaims | None:
    """The bearer token's claims (signature and expiry checked); None without a token; 401 if
    invalid. Whether the session revoked it since is for the caller to check: the chat does
    so under the session's lock, with the row it reads there anyway.
    """
    if credentials is None:
        return None
    try:
        session_id, issued_us = tokens.check(credentials.credentials)
    except TokenError as exc:
        raise HTTPException(
            401, "invalid or expired session token", headers={"WWW-Authenticate": "Bearer"}
        ) from exc
    return TokenClaims(session_id, issued_us)


Claims = Annotated[TokenClaims | None, Depends(token_claims)]


async def token_session(claims: Claims, service: ServiceDep) -> str | None:
    """The session id the bearer token is bound to; None without a token; 401 if invalid.

    A token issued before the session revoked its tokens is invalid too.
    """
    if claims is None:
        return None
    await service.authorize_token(claims.session_id, claims.issued_us)
    return claims.session_id


TokenSession = Annotated[str | None, Depends(token_session)]

CREDENTIALS_OPTIONAL: dict[str, Any] = {"security": [{}]}
"""``openapi_extra`` of routes that also serve callers without credentials (a new session).

FastAPI lists the route's security schemes as requirements; the empty requirement added to
them tells clients that none is needed.
"""


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


@dataclass(frozen=True)
class Caller:
    """Who calls a customer endpoint: a session token's holder, or a company's backend."""

    session_id: str | None = None
    """The session the token is bound to."""
    issued_us: int | None = None
    """When the token was issued (µs since epoch)."""
    customer_id: str | None = None
    """The company's own id for its customer (server API key callers)."""


_api_key = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="A company backend's server API key; send X-Customer-ID with it.",
)


def _known_key(request: Request, key: str) -> bool:
    keys = request.app.state.settings.server_api_keys
    return any(hmac.compare_digest(key.encode(), k.get_secret_value().encode()) for k in keys)


ApiKey = Annotated[str | None, Depends(_api_key)]
CustomerIdHeader = Annotated[
    str | None,
    Header(
        alias="X-Customer-ID",
        pattern=CUSTOMER_ID_PATTERN,
        description="The company's own customer id (with X-API-Key).",
    ),
]


def _acting_for(request: Request, api_key: str, customer_id: str | None) -> str:
    """A company backend's customer: 401 for a key we do not know, 422 without the customer."""
    if not _known_key(request, api_key):
        raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "ApiKey"})
    if customer_id is None:
        raise HTTPException(422, "X-API-Key needs an X-Customer-ID header")
    return customer_id


async def customer_caller(
    request: Request,
    token_session_id: TokenSession,
    api_key: ApiKey,
    customer_id: CustomerIdHeader = None,
) -> Caller | None:
    """The caller; None when there are no credentials at all."""
    if api_key is not None:
        return Caller(customer_id=_acting_for(request, api_key, customer_id))
    if token_session_id is not None:
        return Caller(session_id=token_session_id)
    return None


CustomerCaller = Annotated[Caller | None, Depends(customer_caller)]


async def chat_caller(
    request: Request,
    claims: Claims,
    api_key: ApiKey,
    customer_id: CustomerIdHeader = None,
) -> Caller | None:
    """The caller of a chat post; None when there are no credentials at all.

    Whether the session revoked the token is checked by the turn itself, under the session's
    lock, so a rotation that lands while a message waits for its turn is honoured too.
    """
    if api_key is not None:
        return Caller(customer_id=_acting_for(request, api_key, customer_id))
    if claims is not None:
        return Caller(session_id=claims.session_id, issued_us=claims.issued_us)
    return None


ChatCaller = Annotated[Caller | None, Depends(chat_caller)]


async def chat_session(
    service: SupportService, session_id: str | None, caller: Caller | None
) -> tuple[str, int | None]:
    """The session a chat message goes to (a new one without ``session_id``, for a server
    key's customer), and when the caller's token was issued (``None``: a server key or a
    new session)."""
    if session_id is None:
        customer = caller.customer_id if caller else None
        return await service.new_session(customer_id=customer), None
    await authorize_caller(service, session_id, caller)
    return session_id, caller.issued_us if caller else None


async def server_customer(
    request: Request, api_key: ApiKey, customer_id: CustomerIdHeader = None
) -> str:
    """The customer a company backend acts for; only a server key may call (no session token).

    The OpenAPI document then names the server key as these endpoints' only credential.
    """
    if api_key is None:
        raise HTTPException(
            401,
            "this endpoint needs a server key: 'X-API-Key' and 'X-Customer-ID'",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    return _acting_for(request, api_key, customer_id)


ServerCustomer = Annotated[str, Depends(server_customer)]


async def authorize_caller(service: SupportService, session_id: str, caller: Caller | None) -> None:
    """401 without credentials; 404 unless the session is the caller's (existence not revealed)."""
    if caller is None or caller.customer_id is None:
        authorize(session_id, caller.session_id if caller else None)
        return
    if not await service.belongs_to(session_id, caller.customer_id):
        raise HTTPException(404, "session not found")


async def owned_session(
    session_id: Annotated[str, Path(pattern=SESSION_ID_PATTERN, description="The session id.")],
    caller: CustomerCaller,
    service: ServiceDep,
) -> str:
    """The path's session id, when it is the caller's."""
    await authorize_caller(service, session_id, caller)
    return session_id


OwnedSession = Annotated[str, Depends(owned_session)]


async def get_handoff(request: Request) -> HandoffService:
    """The agents' side of conversations."""
    return request.app.state.handoff


async def get_agent_tokens(request: Request) -> AgentTokens:
    """The app's agent-token verifier."""
    return request.app.state.agent_tokens


HandoffDep = Annotated[HandoffService, Depends(get_handoff)]
AgentTokensDep = Annotated[AgentTokens, Depends(get_agent_tokens)]

_agent_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AgentToken",
    description="An agent JWT (`supportgraph agent token NAME`, or your identity provider's).",
)


async def current_agent(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_agent_bearer)],
    agent_tokens: AgentTokensDep,
) -> Agent:
    """The agent behind the bearer token: 401 without a valid one, 403 for another role."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(
            401, "agent endpoints need 'Authorization: Bearer <agent token>'", challenge
        )
    try:
        return await agent_tokens.agent(credentials.credentials)
    except AgentTokenError as exc:
        raise HTTPException(401, "invalid or expired agent token", headers=challenge) from exc
    except AgentKeysUnavailable as exc:
        raise HTTPException(
            503,
            "the identity provider's keys cannot be fetched; try again shortly",
            headers={"Retry-After": "5"},
        ) from exc
    except AgentRoleError as exc:
        raise HTTPException(403, f"{exc}; agent endpoints need role agent or admin") from exc


CurrentAgent = Annotated[Agent, Depends(current_agent)]


async def last_event_id(
    value: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            pattern=EVENT_ID_PATTERN,
            description="Resume after this event id (the `id` of an event received before).",
        ),
    ] = None,
) -> int | None:
    """The ``Last-Event-ID`` header as a number (a header is text: the schema says digits)."""
    return int(value) if value is not None else None


LastEventId = Annotated[int | None, Depends(last_event_id)]


async def page_cursor(
    cursor: Annotated[
        str | None,
        Query(
            pattern=CURSOR_PATTERN,
            description="`next_cursor` of the page before (only cursors the API issued).",
        ),
    ] = None,
) -> str | None:
    """The cursor of a page, when it is one the API could have issued (422 otherwise)."""
    if cursor is None:
        return None
    try:
        _, session_id = decode_cursor(cursor)
    except BadCursor as exc:
        raise HTTPException(422, str(exc)) from exc
    if not re.fullmatch(SESSION_ID_PATTERN, session_id):
        # Forged: well-formed base64 around something no session id looks like (a NUL
        # byte in it would reach the database).
        raise HTTPException(422, f"cursor {cursor!r} is not one this API issued")
    return cursor


PageCursor = Annotated[str | None, Depends(page_cursor)]
