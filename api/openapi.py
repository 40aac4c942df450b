"""The OpenAPI document as clients and fuzzers read it: HTTP parameters are never ``null``.

FastAPI describes an optional query, header or path parameter typed ``X | None`` as
``anyOf: [X, {"type": "null"}]``. HTTP has no null: a parameter is either absent or a string,
so a client that sends the literal ``null`` the schema seems to allow is refused 422. An
optional parameter is already expressed by ``required: false``; the null branch goes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

_NULL = {"type": "null"}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with a ``{"type": "null"}`` alternative removed (and a lone rest unwrapped)."""
    options = schema.get("anyOf")
    if not isinstance(options, list) or _NULL not in options:
        return schema
    rest = [option for option in options if option != _NULL]
    cleaned = {key: value for key, value in schema.items() if key != "anyOf"}
    if len(rest) == 1:
        return {**rest[0], **cleaned}
    return {**cleaned, "anyOf": rest}


def strip_null_parameters(document: dict[str, Any]) -> dict[str, Any]:
    """Remove ``null`` from the schema of every optional non-body parameter, in place."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                if not parameter.get("required") and "schema" in parameter:
                    parameter["schema"] = _without_null(parameter["schema"])
    return document


def require_server_customer(document: dict[str, Any]) -> dict[str, Any]:
    """Mark ``X-Customer-ID`` required where the server key is the only credential, in place.

    The route takes the header as optional so that a call with no credentials at all is told
    401 (not 422 about a header); but no request without it can succeed there, so the
    document says it is required.
    """
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or operation.get("security") != [
                {"APIKeyHeader": []}
            ]:
                continue
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "header" and parameter.get("name") == "X-Customer-ID":
                    parameter["required"] = True
    return document


def install_openapi(app: FastAPI) -> None:
    """Serve the cleaned document at ``/openapi.json`` (built once, like FastAPI's own)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = require_server_customer(strip_null_parameters(build()))
        return app.openapi_schema

    # FastAPI's documented way to change the schema is to replace this method.
    app.openapi = openapi  # type: ignore[method-assign]
