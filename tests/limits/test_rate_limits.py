"""Rate limits over HTTP with the real app: the production defaults bite, per client, per new
session and per session; agents have their own looser limit; health and pages have none; the
load profile lifts them; a storage outage lets requests through."""

from __future__ import annotations

import json
from typing import Any

import pytest
from limits import parse_many

from bench.common import load_profile_settings
from supportgraph.settings import Settings
from tests.conftest import make_settings
from tests.handoff.helpers import agent_token
from tests.limits.conftest import assert_rate_limited, client_at
from tests.utils.chat import Customer

DEFAULTS = Settings.model_fields


def first_limit(setting: str) -> int:
    """The production default's tightest allowance (its first item, e.g. 60 of 60/minute)."""
    return parse_many(DEFAULTS[setting].default)[0].amount


def test_production_defaults_are_tight_enough_for_a_public_chat_widget() -> None:
    defaults = make_settings()
    assert defaults.rate_limit_enabled is True
    assert defaults.rate_limit_storage == "memory://"
    assert defaults.trusted_proxies == [], "X-Forwarded-For is ignored unless configured"
    assert first_limit("rate_limit_client") <= 120
    assert first_limit("rate_limit_session") <= 30, "more than a person types in a minute"
    assert first_limit("rate_limit_new_sessions") <= 20
    assert first_limit("rate_limit_agent") > first_limit("rate_limit_client")


async def test_default_client_limit_answers_429_with_retry_after(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    """With the defaults, one address gets its allowance of customer requests, then 429."""
    allowance = first_limit("rate_limit_client")
    async with app_factory(**sqlite_backend) as client:
        customer = Customer(client)
        await customer.say("how much is shipping?")
        headers = {"Authorization": f"Bearer {customer.token}"}
        path = f"/api/support/sessions/{customer.session_id}"
        codes = [(await client.get(path, headers=headers)).status_code for _ in range(allowance)]
        limited = await client.get(path, headers=headers)
        # Another address is not affected; health, readiness and the pages are never limited.
        async with client_at(client, "198.51.100.7") as elsewhere:
            other = await elsewhere.get(path, headers=headers)
        exempt = [(await client.get(p)).status_code for p in ("/health", "/ready", "/")]
        # The chat itself is a customer endpoint too.
        chat = await client.post(
            "/api/support/chat",
            json={"message": "hello", "session_id": customer.session_id},
            headers=headers,
        )
    assert codes == [200] * (allowance - 1) + [429], "the first chat turn counted as well"
    error = assert_rate_limited(limited, "client")
    assert f"{allowance} per 1 minute" in error["message"]
    assert other.status_code == 200
    assert exempt == [200, 200, 200]
    assert_rate_limited(chat, "client")


async def test_default_session_limit_counts_one_sessions_messages(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    """A session takes its allowance of messages a minute, from any address; then 429, and
    its customer can still read the conversation."""
    allowance = first_limit("rate_limit_session")
    async with app_factory(**sqlite_backend) as client:
        customer = Customer(client)
        await customer.say("hi")  # counts as a new session, not against the session
        for i in range(allowance - 1):
            await customer.say(f"question {i}: how much is shipping?")
        async with client_at(client, "198.51.100.8") as elsewhere:
            moved = Customer(elsewhere)
            moved.session_id, moved.token = customer.session_id, customer.token
            await moved.say("last one from my phone")
            limited = await elsewhere.post(
                "/api/support/chat",
                json={"message": "one too many", "session_id": customer.session_id},
                headers={"Authorization": f"Bearer {customer.token}"},
            )
        transcript = await customer.transcript()
        fresh = await Customer(client).say("a new conversation works")
    assert_rate_limited(limited, "session")
    said = [m["content"] for m in transcript["messages"] if m["role"] == "customer"]
    assert len(said) == allowance + 1 and "one too many" not in said
    assert fresh["session_id"] != customer.session_id


async def test_session_limit_counts_only_the_sessions_own_token(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    """Someone who knows a session id but not its token cannot use up its allowance."""
    async with app_factory(**sqlite_backend, rate_limit_session="2/minute") as client:
        customer = Customer(client)
        await customer.say("hi")
        async with client_at(client, "203.0.113.9") as stranger:
            tries = [
                await stranger.post(
                    "/api/support/chat",
                    json={"message": "spam", "session_id": customer.session_id},
                    headers=headers,
                )
                for headers in ({}, {"Authorization": "Bearer not-a-token"}) * 3
            ]
        await customer.say("first")
        await customer.say("second")
        third = await client.post(
            "/api/support/chat",
            json={"message": "third", "session_id": customer.session_id},
            headers={"Authorization": f"Bearer {customer.token}"},
        )
    assert [r.status_code for r in tries] == [401] * 6
    assert_rate_limited(third, "session")


async def test_default_new_session_limit_per_client(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    allowance = first_limit("rate_limit_new_sessions")
    async with app_factory(**sqlite_backend) as client:
        started = [
            (await client.post("/api/support/chat", json={"message": "hi"})).status_code
            for _ in range(allowance)
        ]
        limited = await client.post("/api/support/chat/stream", json={"message": "hi"})
        async with client_at(client, "2001:db8::1") as v6, client_at(client, "2001:db8::2") as same:
            other = await v6.post("/api/support/chat", json={"message": "hi"})
            for _ in range(allowance - 1):
                await v6.post("/api/support/chat", json={"message": "hi"})
            # Another address of the same IPv6 /64 is the same client.
            neighbour = await same.post("/api/support/chat", json={"message": "hi"})
    assert started == [200] * allowance
    assert_rate_limited(limited, "new_sessions")
    assert limited.headers["content-type"].startswith("application/json"), "refused before SSE"
    assert other.status_code == 200
    assert_rate_limited(neighbour, "new_sessions")


async def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    limit = {"rate_limit_new_sessions": "2/minute"}
    async with app_factory(**sqlite_backend, **limit) as client:
        spoofed = [
            await client.post(
                "/api/support/chat",
                json={"message": "hi"},
                headers={"X-Forwarded-For": f"192.0.2.{i}"},
            )
            for i in range(3)
        ]
    trusted = {"trusted_proxies": ["127.0.0.0/8"]}
    async with app_factory(**sqlite_backend, **limit, **trusted) as client:
        async with client_at(client, "127.0.0.1") as proxy:
            behind = [
                await proxy.post(
                    "/api/support/chat",
                    json={"message": "hi"},
                    headers={"X-Forwarded-For": f"192.0.2.{i}"},
                )
                for i in range(3)
            ]
            same = [
                await proxy.post(
                    "/api/support/chat",
                    json={"message": "hi"},
                    headers={"X-Forwarded-For": "spoofed, 192.0.2.50"},
                )
                for _ in range(3)
            ]
    assert [r.status_code for r in spoofed] == [200, 200, 429]
    assert [r.status_code for r in behind] == [200, 200, 200], "one client each behind a proxy"
    # The proxy appends the address it saw: what the client wrote before it is not believed.
    assert [r.status_code for r in same] == [200, 200, 429]


async def test_server_key_callers_count_per_customer(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    """A company backend serves all its customers from one address: each customer counts."""
    keys = {"server_api_keys": ["backend-key-of-the-test"], "rate_limit_new_sessions": "2/minute"}
    async with app_factory(**sqlite_backend, **keys) as client:

        def create(customer: str, key: str = "backend-key-of-the-test") -> Any:
            return client.post(
                "/api/support/sessions", headers={"X-API-Key": key, "X-Customer-ID": customer}
            )

        alice = [(await create("alice")).status_code for _ in range(3)]
        bob = (await create("bob")).status_code
        wrong_key = [(await create(f"c{i}", key="guess")).status_code for i in range(2)]
        anonymous = await client.post("/api/support/chat", json={"message": "hi"})
    assert alice == [201, 201, 429]
    assert bob == 201
    assert wrong_key == [401, 401]
    # Requests with an unknown key count against their address (as the anonymous chat does).
    assert_rate_limited(anonymous, "new_sessions")


async def test_agent_routes_have_their_own_limit(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    async with app_factory(
        **sqlite_backend, rate_limit_client="2/minute", rate_limit_agent="4/minute"
    ) as client:
        token = agent_token(sqlite_backend)
        headers = {"Authorization": f"Bearer {token}"}
        for _ in range(3):
            await client.post("/api/support/chat", json={"message": "hi"})
        agent = [(await client.get("/api/agent/me", headers=headers)).status_code for _ in range(5)]
        limited = await client.get("/api/agent/me", headers=headers)
    assert agent == [200] * 4 + [429], "customer requests do not use up the agents' allowance"
    assert_rate_limited(limited, "agent")


async def test_the_load_profile_lifts_the_rate_limits(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    profile = load_profile_settings()
    async with app_factory(**sqlite_backend, **profile) as client:
        customer = Customer(client)
        await customer.say("hi")
        headers = {"Authorization": f"Bearer {customer.token}"}
        path = f"/api/support/sessions/{customer.session_id}"
        allowance = first_limit("rate_limit_client")
        codes = {
            (await client.get(path, headers=headers)).status_code for _ in range(allowance + 5)
        }
        for _ in range(first_limit("rate_limit_new_sessions") + 2):
            await Customer(client).say("hi")
    assert codes == {200}
    assert make_settings(**profile).rate_limit_enabled is False


async def test_a_storage_outage_lets_requests_through_and_is_logged(
    app_factory: Any, sqlite_backend: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listens on port 1: the counters are unreachable, the service keeps answering."""
    broken = {"rate_limit_storage": "redis://127.0.0.1:1/0", "rate_limit_client": "1/minute"}
    async with app_factory(**sqlite_backend, **broken) as client:
        codes = [
            (await client.post("/api/support/chat", json={"message": "hi"})).status_code
            for _ in range(3)
        ]
    assert codes == [200, 200, 200]
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    failures = [r for r in logged if r["msg"] == "rate-limit storage failed; request not counted"]
    assert len(failures) == 3 and all(r["level"] == "ERROR" for r in failures)


async def test_openapi_documents_429_on_limited_routes_only(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    async with app_factory(**sqlite_backend) as client:
        spec = (await client.get("/openapi.json")).json()
    limited = [
        ("/api/support/chat", "post"),
        ("/api/support/chat/stream", "post"),
        ("/api/support/sessions/{session_id}", "get"),
        ("/api/support/sessions/{session_id}", "delete"),
        ("/api/support/sessions", "post"),
        ("/api/agent/sessions", "get"),
    ]
    for path, method in limited:
        answer = spec["paths"][path][method]["responses"]["429"]
        assert "Retry-After" in answer["headers"], (path, method)
    assert "409" in spec["paths"]["/api/support/chat"]["post"]["responses"]
    for path in ("/health", "/ready"):
        assert "429" not in spec["paths"][path]["get"]["responses"]


def test_bad_limit_settings_name_the_field_and_value() -> None:
    with pytest.raises(ValueError, match="rate_limit_client") as info:
        make_settings(rate_limit_client="lots per minute")
    assert "'lots per minute' is not a rate limit" in str(info.value)
    with pytest.raises(ValueError, match="trusted_proxies"):
        make_settings(trusted_proxies=["proxy.example"])
    with pytest.raises(ValueError, match="rate_limit_storage"):
        make_settings(rate_limit_storage="memcached://x")
