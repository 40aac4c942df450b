"""Abuse limits at the API edge: rate limits answered 429 with Retry-After, the message bound.

Counted with the ``limits`` library in moving windows: a request is refused while the last
window (a minute, an hour) already holds the allowance, so there is no burst at window edges
and Retry-After is exact (the log holds at most the allowance per key). Storage is per
process (``memory://``) or Redis, which every worker and replica then shares. What is counted:

- customer endpoints, per client: its IP address (an IPv6 client by its /64, which one host
  usually has whole), or for a company backend with a valid server key, the X-Customer-ID it
  acts for (one backend serves all its customers from a few addresses);
- new sessions, per client (a new session has no per-session history to limit);
- chat messages, per session, counted only for the session's own token (or a server key), so
  nobody who merely knows a session id can use up its customer's allowance;
- agent endpoints, per IP address, far looser: agents are authenticated staff, several may
  share an office address, and a surge of escalations must not lock the console.

``/health``, ``/ready`` and the static pages are not limited. If the storage fails (Redis
down), requests pass and the failure is logged: the limits protect capacity; they must not
take the service down with them.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from api.auth import SessionTokens, TokenError
from api.errors import error_response
from api.schemas import ErrorResponse
from supportgraph.settings import Settings

log = logging.getLogger("supportgraph.ratelimit")

CHAT_PATHS = frozenset({"/api/support/chat", "/api/support/chat/stream"})
NEW_SESSION_PATHS = frozenset({"/api/support/sessions"})
REDIS_TIMEOUT = 1.0
"""Seconds a Redis round trip may take before the request passes uncounted."""

RATE_LIMITED_RESPONSE: dict[int | str, dict[str, Any]] = {
    429: {
        "description": "Too many requests: wait Retry-After seconds (error code rate_limited)",
        "model": ErrorResponse,
        "headers": {
            "Retry-After": {
                "description": "Seconds until the request may be sent again.",
                "schema": {"type": "integer", "minimum": 1},
            },
            "RateLimit-Limit": {
                "description": "Requests the exceeded limit allows in its window.",
                "schema": {"type": "integer"},
            },
            "RateLimit-Remaining": {"schema": {"type": "integer"}},
            "RateLimit-Reset": {
                "description": "Seconds until the limit allows a request again.",
                "schema": {"type": "integer"},
            },
        },
    }
}


class RateLimitExceeded(Exception):
    """A request over one of the limits; answered 429."""

    def __init__(self, scope: str, item: RateLimitItem, retry_after: int) -> None:
        super().__init__(f"{scope} rate limit {item} exceeded")
        self.scope = scope
        self.item = item
        self.retry_after = retry_after


@dataclass(frozen=True)
class Limit:
    """One named limit: its items (e.g. per minute and per hour) and what it counts."""

    scope: str
    items: tuple[RateLimitItem, ...]

    @classmethod
    def parse(cls, scope: str, text: str) -> Limit:
        """``"60/minute;1000/hour"`` as a limit named ``scope``."""
        return cls(scope, tuple(parse_many(text)))


class RateLimits:
    """The app's limits, their storage and the strategy counting them."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limit_enabled
        self.client = Limit.parse("client", settings.rate_limit_client)
        self.session = Limit.parse("session", settings.rate_limit_session)
        self.new_sessions = Limit.parse("new_sessions", settings.rate_limit_new_sessions)
        self.agent = Limit.parse("agent", settings.rate_limit_agent)
        self.storage = _storage(settings)
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.max_message_chars = settings.max_message_chars
        self._server_keys = [k.get_secret_value().encode() for k in settings.server_api_keys]

    async def enforce(self, checks: list[tuple[Limit, str]]) -> None:
        """Count one request against each ``(limit, key)``; :class:`RateLimitExceeded` at the
        first one that is spent (later ones are not counted then)."""
        for limit, key in checks:
            for item in limit.items:
                try:
                    allowed = await self.limiter.hit(item, limit.scope, key)
                except Exception as exc:  # noqa: BLE001 - an outage must not fail requests
                    log.error(
                        "rate-limit storage failed; request not counted",
                        extra={"error": type(exc).__name__, "detail": str(exc)[:200]},
                    )
                    return
                if not allowed:
                    raise RateLimitExceeded(
                        limit.scope, item, await self._retry_after(item, limit, key)
                    )

    async def _retry_after(self, item: RateLimitItem, limit: Limit, key: str) -> int:
        """Whole seconds until ``item`` allows one more request (at least 1)."""
        try:
            stats = await self.limiter.get_window_stats(item, limit.scope, key)
        except Exception:  # noqa: BLE001 - fall back to the whole window
            return int(item.get_expiry())
        return max(1, math.ceil(stats.reset_time - time.time()))

    def client_key(self, request: Request) -> str:
        """Who the request counts against (see the module docstring)."""
        api_key = request.headers.get("x-api-key")
        if api_key and self._known_server_key(api_key.encode()):
            digest = hashlib.sha256(api_key.encode()).hexdigest()[:16]
            customer = request.headers.get("x-customer-id", "")[:128]
            return f"key:{digest}:{customer}"
        host = request.client.host if request.client else "unknown"
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return f"host:{host[:256]}"
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                return f"ip:{address.ipv4_mapped}"
            return f"ip:{ipaddress.ip_network(f'{address}/64', strict=False)}"
        return f"ip:{address}"

    def _known_server_key(self, key: bytes) -> bool:
        return any(hmac.compare_digest(key, known) for known in self._server_keys)


def _storage(settings: Settings) -> Storage:
    """The counters' storage: this process's memory, or Redis (bounded round trips)."""
    uri = settings.rate_limit_storage
    if uri.startswith("memory://"):
        storage = storage_from_string("async+memory://")
    else:
        storage = storage_from_string(
            f"async+{uri}",
            key_prefix=settings.rate_limit_key_prefix,
            connect_timeout=REDIS_TIMEOUT,
            stream_timeout=REDIS_TIMEOUT,
        )
    if not isinstance(storage, Storage):  # an "async+" scheme always gives the async kind
        raise TypeError(f"{uri!r} did not give an asyncio storage")
    return storage


def _limits(request: Request) -> RateLimits:
    return request.app.state.rate_limits


async def _json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object (FastAPI has read and cached the body); {} if it is not one."""
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def _session_owner(request: Request, session_id: str) -> bool:
    """Whether the request carries the session's own token (signature checked, no database)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    tokens: SessionTokens = request.app.state.tokens
    try:
        return tokens.session_of(token.strip()) == session_id
    except TokenError:
        return False


async def limit_customer(request: Request) -> None:
    """Count a customer request: per client, per new session, per session's messages."""
    limits = _limits(request)
    route = request.scope.get("route")
    path = getattr(route, "path", "")
    chat = request.method == "POST" and path in CHAT_PATHS
    body = await _json_body(request) if chat else {}
    if limits.enabled:
        client = limits.client_key(request)
        checks = [(limits.client, client)]
        session_id = body.get("session_id")
        if (chat and session_id is None) or (
            request.method == "POST" and path in NEW_SESSION_PATHS
        ):
            checks.append((limits.new_sessions, client))
        elif chat and isinstance(session_id, str):
            if client.startswith("key:") or _session_owner(request, session_id):
                # Keyed by a digest: the shared storage never holds a usable session id.
                digest = hashlib.sha256(session_id.encode()).hexdigest()[:32]
                checks.append((limits.session, digest))
        await limits.enforce(checks)
    message = body.get("message")
    if isinstance(message, str) and len(message) > limits.max_message_chars:
        # The schema's bound is the API's ceiling; the setting may only lower it.
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "message"),
                    "msg": f"message is longer than {limits.max_message_chars} characters",
                    "type": "string_too_long",
                }
            ]
        )


async def limit_agent(request: Request) -> None:
    """Count an agent request per client address."""
    limits = _limits(request)
    if limits.enabled:
        await limits.enforce([(limits.agent, limits.client_key(request))])


CUSTOMER_LIMITS = [Depends(limit_customer)]
AGENT_LIMITS = [Depends(limit_agent)]


async def _rate_limited(_: Request, exc: RateLimitExceeded) -> JSONResponse:
    """429 in the API's error shape, with Retry-After and the RateLimit fields."""
    wait = str(exc.retry_after)
    return error_response(
        429,
        f"too many requests ({exc.scope} limit: {exc.item}); try again in {wait} s",
        details={
            "scope": exc.scope,
            "limit": exc.item.amount,
            "window_seconds": exc.item.get_expiry(),
            "retry_after": exc.retry_after,
        },
        headers={
            "Retry-After": wait,
            "RateLimit-Limit": str(exc.item.amount),
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": wait,
        },
    )


def install_rate_limits(app: FastAPI, settings: Settings) -> None:
    """Give the app its limits and the 429 answer (routers opt in with the dependencies)."""
    app.state.rate_limits = RateLimits(settings)
    app.exception_handler(RateLimitExceeded)(_rate_limited)
