"""What fuzzing the API found, pinned on both backends so it stays fixed.

Each of these answered 500, or was refused although the schema allowed it, or answered
wrongly, before the fix in ``api/``.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from tests.handoff.helpers import agent_token
from tests.utils.chat import Customer

SERVER_KEY = "found-server-key-0123456789"


def _cursor(updated_at: str, session_id: str) -> str:
    return base64.urlsafe_b64encode(f"{updated_at}|{session_id}".encode()).decode()


def _refused(response: Any, needle: str) -> None:
    """A 422 in the API's error shape that names what was wrong."""
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and needle in str(error), error


async def test_nul_in_a_filter_or_cursor_is_refused(
    app_factory: Any, backend: dict[str, Any]
) -> None:
    # PostgreSQL cannot hold NUL: a NUL that reached a query answered 500.
    async with app_factory(**backend, server_api_keys=[SERVER_KEY]) as client:
        agent = {"Authorization": f"Bearer {agent_token(backend)}"}
        server = {"X-API-Key": SERVER_KEY, "X-Customer-ID": "c1"}
        for _ in range(2):
            await Customer(client).say("I want to talk to a person")
            assert (await client.post("/api/support/sessions", headers=server)).status_code == 201

        nul_name = await client.get("/api/agent/sessions?claimed_by=a%00b", headers=agent)
        _refused(nul_name, "claimed_by")
        forged = _cursor("2026-01-01T00:00:00+00:00", "a\x00b")
        for path, headers in (("/api/agent/sessions", agent), ("/api/support/sessions", server)):
            _refused(await client.get(path, params={"cursor": forged}, headers=headers), "cursor")
            _refused(await client.get(path, params={"cursor": "AAAA"}, headers=headers), "cursor")
            first = await client.get(path, params={"limit": 1}, headers=headers)
            cursor = first.json()["next_cursor"]
            assert cursor, first.text
            second = await client.get(path, params={"limit": 1, "cursor": cursor}, headers=headers)
            assert second.status_code == 200, second.text
            assert second.json()["items"] != first.json()["items"]


async def test_last_event_id_is_decimal_digits(app_factory: Any, backend: dict[str, Any]) -> None:
    # An integer header: "null" (which the schema allowed) was refused, and an id past 64
    # bits reached the database (500 on SQLite; on PostgreSQL a stream that never started).
    async with app_factory(**backend) as client:
        customer = Customer(client)
        await customer.say("hello")
        mine = {"Authorization": f"Bearer {customer.token}"}
        agent = {"Authorization": f"Bearer {agent_token(backend)}"}
        for value in ("99999999999999999999", "-1", "null", "1e3", ""):
            for path, headers in (
                (f"/api/support/sessions/{customer.session_id}/events", mine),
                ("/api/agent/events", agent),
            ):
                # Bounded: were the value accepted, the stream would never end.
                async with asyncio.timeout(10):
                    answer = await client.get(path, headers={**headers, "Last-Event-ID": value})
                _refused(answer, "Last-Event-ID")


async def test_updated_since_in_any_offset(app_factory: Any, backend: dict[str, Any]) -> None:
    # SQLite compares the stored UTC text with the filter's text: an instant given in
    # another offset filtered wrongly. (Now normalised to UTC, an instant before the first
    # one UTC can hold is refused.)
    async with app_factory(**backend) as client:
        agent = {"Authorization": f"Bearer {agent_token(backend)}"}
        customer = Customer(client)
        await customer.say("I want to talk to a person")
        east, west = timezone(timedelta(hours=5)), timezone(timedelta(hours=-5))
        now = datetime.now(UTC)

        async def listed(since: datetime) -> list[str]:
            page = await client.get(
                "/api/agent/sessions", params={"updated_since": since.isoformat()}, headers=agent
            )
            assert page.status_code == 200, page.text
            return [item["session_id"] for item in page.json()["items"]]

        assert await listed((now - timedelta(minutes=5)).astimezone(west)) == [customer.session_id]
        assert await listed((now + timedelta(minutes=5)).astimezone(east)) == []
        assert await listed((now - timedelta(minutes=5)).astimezone(east)) == [customer.session_id]
        too_early = await client.get(
            "/api/agent/sessions",
            params={"updated_since": "0001-01-01T00:00:00+01:00"},
            headers=agent,
        )
        _refused(too_early, "updated_since")


async def test_schema_says_what_the_api_does(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    async with app_factory(**sqlite_backend) as client:
        spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    # HTTP parameters are absent or text, never null.
    for path, operations in paths.items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                assert "null" not in str(parameter["schema"]), (method, path, parameter)
    # A new conversation needs no credentials.
    for path in ("/api/support/chat", "/api/support/chat/stream"):
        assert {} in paths[path]["post"]["security"], path
    # A company backend's endpoints take its server key, not a session token.
    for method in ("get", "post"):
        assert paths["/api/support/sessions"][method]["security"] == [{"APIKeyHeader": []}]
    # Every error a route documents has the one error shape as its body.
    for path, operations in paths.items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                if status.startswith(("4", "5")):
                    body = answer["content"]["application/json"]["schema"]
                    where = (method, path, status)
                    assert body == {"$ref": "#/components/schemas/ErrorResponse"}, where
    # What the validators refuse is in the schema too.
    message = spec["components"]["schemas"]["ChatRequest"]["properties"]["message"]
    assert message["pattern"] == r"^[^\x00]*[^\s\x00][^\x00]*$"
