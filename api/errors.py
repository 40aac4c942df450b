"""One JSON error shape everywhere: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api.schemas import ErrorResponse
from supportgraph.app.handoff import BadCursor, ClaimConflict, NotEscalated
from supportgraph.app.service import SessionBusy, SessionNotFound, TokenRevoked, TurnLimitReached
from supportgraph.domain.ports import LeaseLost, StoreUnavailable

log = logging.getLogger("supportgraph.api")


def documented(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error statuses: each one's body is the one error shape."""
    return {
        status: {"description": text, "model": ErrorResponse}
        for status, text in descriptions.items()
    }


ERROR_RESPONSES = documented(
    {
        401: "Missing or invalid session token",
        404: "Unknown session",
        413: "Request body too large",
        422: "Invalid input",
        503: "Database unavailable",
    }
)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    503: "unavailable",
}


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A response in the API's error shape."""
    body = {
        "error": {
            "code": code or _CODES.get(status, "error"),
            "message": message,
            "details": details,
        }
    }
    return JSONResponse(jsonable_encoder(body), status_code=status, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        details.append(
            {"field": ".".join(loc), "message": err.get("msg", ""), "type": err.get("type", "")}
        )
    return details


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""The methods a 405's ``Allow`` may name."""


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app serves at the request's path.

    Starlette's 405 names only the methods of the first route whose path matched, and a path
    can have several routes (GET and POST /api/support/sessions are two): each method is
    tried against every route instead.
    """
    routes = request.app.router.routes
    return sorted(
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map validation errors, HTTP errors and domain exceptions to the one shape."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        where = ", ".join(f"{d['field']}: {d['message']}" for d in details[:3])
        return error_response(422, f"invalid input ({where})", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot decode: bad input, said like the others.
            details = [{"field": "body", "message": str(exc.detail), "type": "body_decode"}]
            return error_response(422, f"invalid input (body: {exc.detail})", details=details)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return error_response(exc.status_code, str(exc.detail), headers=headers or None)

    @app.exception_handler(SessionNotFound)
    async def _not_found(_: Request, exc: SessionNotFound) -> JSONResponse:
        return error_response(404, "session not found")

    @app.exception_handler(TokenRevoked)
    async def _revoked(_: Request, exc: TokenRevoked) -> JSONResponse:
        return error_response(401, str(exc), headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(SessionBusy)
    async def _busy(_: Request, exc: SessionBusy) -> JSONResponse:
        # A turn of the session runs and the busy policy is ``reject``.
        return error_response(
            409,
            "a message of this session is being answered; send this one after it",
            code="session_busy",
            headers={"Retry-After": str(exc.retry_after)},
        )

    @app.exception_handler(ClaimConflict)
    @app.exception_handler(NotEscalated)
    async def _conflict(_: Request, exc: Exception) -> JSONResponse:
        return error_response(409, str(exc))

    @app.exception_handler(BadCursor)
    async def _cursor(_: Request, exc: BadCursor) -> JSONResponse:
        details = [{"field": "query.cursor", "message": str(exc), "type": "bad_cursor"}]
        return error_response(422, str(exc), details=details)

    @app.exception_handler(TurnLimitReached)
    async def _turn_limit(_: Request, exc: TurnLimitReached) -> JSONResponse:
        # 409, not 429: waiting does not help, the session is full for good (no Retry-After).
        return error_response(
            409, str(exc), code="turn_limit_reached", details={"max_turns": exc.limit}
        )

    @app.exception_handler(LeaseLost)
    async def _lease_lost(_: Request, exc: LeaseLost) -> JSONResponse:
        # Another process took the session over while this turn ran: nothing of the turn
        # was stored (the message was), so sending the message again is safe.
        log.warning("turn lost its lease", extra={"session_id": exc.session_id})
        return error_response(
            503,
            "this message could not be answered; please send it again",
            code="lease_lost",
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(StoreUnavailable)
    async def _unavailable(_: Request, exc: StoreUnavailable) -> JSONResponse:
        log.error("database unavailable", extra={"error": str(exc)[:200]})
        return error_response(
            503, "the database is unavailable; try again shortly", headers={"Retry-After": "5"}
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal error", code="internal_error")
