"""Bad input, session ownership, health and readiness: clear 4xx/503 in one JSON shape."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.conftest import TEST_SECRET
from tests.utils.chat import Customer
from tests.utils.db import base_url, require_postgres


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is ``status`` with the API's error shape and this code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "body.message"),
        ({"message": ""}, "body.message"),
        ({"message": "   \n\t "}, "body.message"),
        ({"message": "x" * 4001}, "body.message"),
        ({"message": 42}, "body.message"),
        ({"message": None}, "body.message"),
        ({"message": "hi", "session_id": "has spaces"}, "body.session_id"),
        ({"message": "hi", "session_id": "x" * 129}, "body.session_id"),
        ({"message": "hi", "session_id": ""}, "body.session_id"),
        ({"message": "hi", "session_id": "../../etc/passwd"}, "body.session_id"),
        ({"message": "hi", "extra": 1}, "body.extra"),
        ({"message": "nul \x00 byte"}, "body.message"),
    ],
)
async def test_invalid_chat_bodies_are_422_naming_the_field(
    app_factory: Any, sqlite_backend: dict[str, Any], payload: dict[str, Any], field: str
) -> None:
    async with app_factory(**sqlite_backend) as client:
        response = await client.post("/api/support/chat", json=payload)
    error = assert_error(response, 422, "invalid_input")
    assert any(d["field"] == field for d in error["details"]), error


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b'"just a string"', "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"message=hi", "application/x-www-form-urlencoded"),
    ],
)
async def test_malformed_bodies_are_422(
    app_factory: Any, sqlite_backend: dict[str, Any], content: bytes, content_type: str
) -> None:
    async with app_factory(**sqlite_backend) as client:
        response = await client.post(
            "/api/support/chat", content=content, headers={"content-type": content_type}
        )
    assert_error(response, 422, "invalid_input")


async def test_oversized_body_is_413_json(app_factory: Any, sqlite_backend: dict[str, Any]) -> None:
    async with app_factory(**sqlite_backend, max_body_bytes=2048) as client:
        declared = await client.post("/api/support/chat", json={"message": "x" * 3000})

        async def chunks() -> Any:
            for _ in range(4):
                yield b"x" * 1024

        streamed = await client.post(
            "/api/support/chat", content=chunks(), headers={"content-type": "application/json"}
        )
    for response in (declared, streamed):
        error = assert_error(response, 413, "payload_too_large")
        assert error["details"] == {"max_bytes": 2048} or "2048" in error["message"]


async def test_session_ids_are_server_issued(app_factory: Any, backend: dict[str, Any]) -> None:
    async with app_factory(**backend) as client:
        customer = Customer(client)
        await customer.say("hello")
        other = Customer(client)
        await other.say("hello")
        # A made-up id, even with a valid token for another session: 404, not a new session.
        made_up = await client.post(
            "/api/support/chat",
            json={"message": "hi", "session_id": "my-own-id"},
            headers={"Authorization": f"Bearer {customer.token}"},
        )
        assert_error(made_up, 404, "not_found")
        # Another customer's token cannot continue or read this session.
        hijack = await client.post(
            "/api/support/chat",
            json={"message": "show me everything", "session_id": customer.session_id},
            headers={"Authorization": f"Bearer {other.token}"},
        )
        assert_error(hijack, 404, "not_found")
        read = await client.get(
            f"/api/support/sessions/{customer.session_id}",
            headers={"Authorization": f"Bearer {other.token}"},
        )
        assert_error(read, 404, "not_found")
        # No token: 401, whether or not the session exists.
        for sid in (customer.session_id, "does-not-exist"):
            no_token = await client.post(
                "/api/support/chat", json={"message": "hi", "session_id": sid}
            )
            assert_error(no_token, 401, "unauthorized")
            assert no_token.headers["www-authenticate"] == "Bearer"
            no_token_read = await client.get(f"/api/support/sessions/{sid}")
            assert_error(no_token_read, 401, "unauthorized")
        forged = await client.get(
            f"/api/support/sessions/{customer.session_id}",
            headers={"Authorization": "Bearer not.a.token"},
        )
        assert_error(forged, 401, "unauthorized")
        session = await customer.transcript()
    assert [m["content"] for m in session["messages"] if m["role"] == "customer"] == ["hello"]
    assert len(customer.session_id or "") >= 32


async def test_token_signed_with_another_key_is_refused(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    async with app_factory(**sqlite_backend) as client:
        customer = Customer(client)
        await customer.say("hello")
    other_key = {**sqlite_backend, "secret_key": "a-different-secret-of-enough-length"}
    async with app_factory(**other_key) as client:
        response = await client.get(
            f"/api/support/sessions/{customer.session_id}",
            headers={"Authorization": f"Bearer {customer.token}"},
        )
    assert_error(response, 401, "unauthorized")


async def test_bad_session_path_is_422(app_factory: Any, sqlite_backend: dict[str, Any]) -> None:
    async with app_factory(**sqlite_backend) as client:
        customer = Customer(client)
        await customer.say("hello")
        response = await client.get(
            "/api/support/sessions/bad%20id", headers={"Authorization": f"Bearer {customer.token}"}
        )
    assert_error(response, 422, "invalid_input")


async def test_unknown_route_and_method_use_the_error_shape(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    async with app_factory(**sqlite_backend) as client:
        assert_error(await client.get("/api/nope"), 404, "not_found")
        assert_error(await client.get("/api/support/chat"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/api/support/sessions", "GET, POST"),
        ("PUT", "/api/support/sessions/abc", "DELETE, GET"),
        ("GET", "/api/support/chat", "POST"),
        ("DELETE", "/api/agent/sessions/abc/claim", "POST"),
        ("POST", "/health", "GET"),
    ],
)
async def test_a_405_names_every_method_the_path_serves(
    app_factory: Any, sqlite_backend: dict[str, Any], method: str, path: str, allow: str
) -> None:
    """A path served by several routes (GET and POST /api/support/sessions are two) lists all
    their methods in ``Allow``, not only the first matching route's."""
    async with app_factory(**sqlite_backend) as client:
        response = await client.request(method, path)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == allow


async def test_health_ready_and_request_id(app_factory: Any, backend: dict[str, Any]) -> None:
    async with app_factory(**backend) as client:
        health = await client.get("/health")
        ready = await client.get("/ready", headers={"X-Request-ID": "abc-123"})
        generated = await client.get("/health")
    assert health.json() == {"status": "healthy"}
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.headers["x-request-id"] == "abc-123"
    assert len(generated.headers["x-request-id"]) >= 16


async def test_database_outage_is_503(app_factory: Any, tmp_path: Any) -> None:
    """A database that disappears under a running app: /ready and chat answer 503 in JSON."""
    require_postgres()
    name = "sg_outage_" + tmp_path.name[-8:].replace("-", "_").lower()
    with psycopg.connect(base_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base_url().rsplit("/", 1)[0] + f"/{name}"
    try:
        async with app_factory(database_url=url, secret_key=TEST_SECRET) as client:
            customer = Customer(client)
            await customer.say("hello")
            with psycopg.connect(base_url(), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            ready = await client.get("/ready")
            chat = await client.post(
                "/api/support/chat",
                json={"message": "still there?", "session_id": customer.session_id},
                headers={"Authorization": f"Bearer {customer.token}"},
            )
    finally:
        with psycopg.connect(base_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert_error(ready, 503, "unavailable")
    assert_error(chat, 503, "unavailable")
