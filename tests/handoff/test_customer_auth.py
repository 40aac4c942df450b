"""Customer credentials: session tokens expire and rotate; a company backend's server key."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest

from api.auth import SessionTokens
from tests.conftest import TEST_SECRET
from tests.utils.chat import Customer, hold_turns

API_KEY = "server-key-of-the-company-backend"


async def test_tokens_slide_and_rotation_revokes_older_ones(
    app_factory: Any, backend: dict[str, Any]
) -> None:
    async with app_factory(**backend) as client:
        customer = Customer(client)
        await customer.say("hello")
        first = customer.token
        await customer.say("how much is shipping?")
        second = customer.token
        assert first != second, "every response issues a fresh token"
        assert second is not None
        claims = jwt.decode(second, TEST_SECRET, algorithms=["HS256"])
        assert claims["exp"] - claims["iat"] == 30 * 86400

        url = f"/api/support/sessions/{customer.session_id}"
        for token in (first, second):  # an older token stays valid until it expires
            ok = await client.get(url, headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200

        rotated = await client.post(f"{url}/token", headers={"Authorization": f"Bearer {first}"})
        assert rotated.status_code == 200, rotated.text
        fresh = rotated.json()["session_token"]
        for token in (first, second):
            old = await client.get(url, headers={"Authorization": f"Bearer {token}"})
            assert old.status_code == 401
            assert "revoked" in old.json()["error"]["message"]
            chat = await client.post(
                "/api/support/chat",
                json={"message": "hi", "session_id": customer.session_id},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert chat.status_code == 401
        customer.token = fresh
        await customer.say("still me")
        assert len((await customer.transcript())["messages"]) == 6


async def test_expired_session_token_is_refused(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    async with app_factory(**sqlite_backend) as client:
        customer = Customer(client)
        await customer.say("hello")
        expired = SessionTokens(TEST_SECRET, ttl=timedelta(seconds=-1)).issue(
            customer.session_id or ""
        )
        response = await client.get(
            f"/api/support/sessions/{customer.session_id}",
            headers={"Authorization": f"Bearer {expired}"},
        )
    assert response.status_code == 401


async def test_company_backend_with_server_key(app_factory: Any, backend: dict[str, Any]) -> None:
    async with app_factory(**backend, server_api_keys=[API_KEY]) as client:
        acme = {"X-API-Key": API_KEY, "X-Customer-ID": "cust-42"}
        other = {"X-API-Key": API_KEY, "X-Customer-ID": "cust-7"}
        created = await client.post("/api/support/sessions", headers=acme)
        assert created.status_code == 201, created.text
        sid = created.json()["session_id"]

        customer = Customer(client)
        customer.session_id, customer.token = sid, created.json()["session_token"]
        await customer.say("How many days do I have to return something?")
        await client.post("/api/support/sessions", headers=other)

        mine = await client.get("/api/support/sessions", headers=acme)
        assert [s["session_id"] for s in mine.json()["items"]] == [sid]
        assert mine.json()["items"][0]["status"] == "active"
        theirs = await client.get("/api/support/sessions", headers=other)
        assert sid not in theirs.text and len(theirs.json()["items"]) == 1

        read = await client.get(f"/api/support/sessions/{sid}", headers=acme)
        assert read.status_code == 200 and len(read.json()["messages"]) == 2
        denied = await client.get(f"/api/support/sessions/{sid}", headers=other)
        assert denied.status_code == 404

        wrong_key = await client.get(
            "/api/support/sessions", headers={**acme, "X-API-Key": "guess"}
        )
        assert wrong_key.status_code == 401
        no_customer = await client.get("/api/support/sessions", headers={"X-API-Key": API_KEY})
        assert no_customer.status_code == 422
        bad_id = await client.get(
            "/api/support/sessions", headers={**acme, "X-Customer-ID": "has spaces"}
        )
        assert bad_id.status_code == 422
        token_only = await client.get(
            "/api/support/sessions", headers={"Authorization": f"Bearer {customer.token}"}
        )
        assert token_only.status_code == 401


async def test_server_keys_are_off_by_default(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    async with app_factory(**sqlite_backend) as client:
        response = await client.post(
            "/api/support/sessions", headers={"X-API-Key": "", "X-Customer-ID": "c1"}
        )
    assert response.status_code == 401


CHAT_ROUTES = ["/api/support/chat", "/api/support/chat/stream"]


def session_of(response: httpx.Response) -> str:
    """The session id a chat answer names (the body, or the stream's ``start`` event)."""
    if response.headers["content-type"].startswith("application/json"):
        return str(response.json()["session_id"])
    start = response.text.split("event: start")[1].split("data: ")[1].split("\r\n")[0]
    return str(json.loads(start)["session_id"])


@pytest.mark.parametrize("route", CHAT_ROUTES)
async def test_both_chat_routes_take_a_server_key_for_its_customers_sessions(
    app_factory: Any, sqlite_backend: dict[str, Any], route: str
) -> None:
    """One rule for both chat routes: the session's token, or a server key acting for the
    session's customer (a new session then belongs to that customer)."""
    async with app_factory(**sqlite_backend, server_api_keys=[API_KEY]) as client:
        acme = {"X-API-Key": API_KEY, "X-Customer-ID": "cust-42"}
        other = {"X-API-Key": API_KEY, "X-Customer-ID": "cust-7"}
        started = await client.post(route, json={"message": "hello"}, headers=acme)
        assert started.status_code == 200, started.text
        sid = session_of(started)
        again = await client.post(
            route, json={"message": "still me", "session_id": sid}, headers=acme
        )
        assert again.status_code == 200, again.text
        refused = await client.post(route, json={"message": "hi", "session_id": sid}, headers=other)
        assert refused.status_code == 404
        mine = await client.get("/api/support/sessions", headers=acme)
        assert [s["session_id"] for s in mine.json()["items"]] == [sid]
        transcript = await client.get(f"/api/support/sessions/{sid}", headers=acme)
        customer_lines = [m for m in transcript.json()["messages"] if m["role"] == "customer"]
        assert [m["content"] for m in customer_lines] == ["hello", "still me"]


@pytest.mark.parametrize("route", CHAT_ROUTES)
async def test_a_token_is_checked_when_its_message_is_stored_on_both_routes(
    app_factory: Any,
    sqlite_backend: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    route: str,
) -> None:
    """The token is checked when the message is stored (its first commit, before it waits
    behind another turn): a message stored before a rotation is answered, since it was sent
    with a valid token and is never dropped once stored; the stale token is refused from the
    rotation on, on both routes alike, with nothing stored."""
    async with app_factory(**sqlite_backend) as client:
        customer = Customer(client)
        await customer.say("hello")
        stale = customer.token
        gate = hold_turns(client, monkeypatch)
        running = asyncio.create_task(customer.say("how much is shipping?"))
        await gate.entered.wait()
        waiting = asyncio.create_task(
            client.post(
                route,
                json={"message": "a message that waits", "session_id": customer.session_id},
                headers={"Authorization": f"Bearer {stale}"},
            )
        )
        await asyncio.sleep(0.2)  # the message is now stored, waiting for the session
        rotated = await client.post(
            f"/api/support/sessions/{customer.session_id}/token",
            headers={"Authorization": f"Bearer {customer.token}"},
        )
        assert rotated.status_code == 200
        gate.release.set()
        await running
        response = await waiting
        refused = await client.post(
            route,
            json={"message": "sent after the rotation", "session_id": customer.session_id},
            headers={"Authorization": f"Bearer {stale}"},
        )
        customer.token = rotated.json()["session_token"]
        transcript = await customer.transcript()
    assert response.status_code in (200, 202), response.text
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["message"] == "this session token was revoked"
    said = [m["content"] for m in transcript["messages"] if m["role"] == "customer"]
    assert "a message that waits" in said
    assert "sent after the rotation" not in said
