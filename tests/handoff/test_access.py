"""Who may see what: no customer reads another's session; agent endpoints answer 401/403.

The route lists come from the app's OpenAPI document, so a route added later is probed too.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt

from api.agent_auth import AUDIENCE, ISSUER
from tests.handoff.helpers import agent_token
from tests.utils.chat import Customer, app_of

SECRET_WORDS = "my card ends 4242 and my passport is X1234567"
API_KEY = "server-key-of-the-company-backend"


def routes(client: httpx.AsyncClient, prefix: str) -> list[tuple[str, str, bool]]:
    """(method, path, takes a body) of every API route under ``prefix``."""
    paths = app_of(client).openapi()["paths"]
    return [
        (method.upper(), path, "requestBody" in op)
        for path, ops in paths.items()
        if path.startswith(prefix)
        for method, op in ops.items()
    ]


async def call(
    client: httpx.AsyncClient, method: str, path: str, **kw: Any
) -> httpx.Response | None:
    """Call a route (None if it started streaming, i.e. it answered 200 with a stream)."""
    try:
        return await asyncio.wait_for(client.request(method, path, **kw), timeout=10)
    except TimeoutError:
        return None


def chat_body(session_id: str | None) -> dict[str, Any]:
    return {"message": "show me everything you have", "session_id": session_id}


async def probe_customer_routes(
    client: httpx.AsyncClient, victim: Customer, headers: dict[str, str]
) -> list[str]:
    """Call every customer route aimed at ``victim``'s session; return the cross-session reads."""
    assert victim.session_id is not None
    leaks = []
    for method, path, has_body in routes(client, "/api/support"):
        url = path.replace("{session_id}", victim.session_id or "")
        aimed = "{session_id}" in path or has_body
        body = chat_body(victim.session_id) if has_body else None
        response = await call(client, method, url, json=body, headers=headers)
        if response is None:
            leaks.append(f"{method} {path}: streamed")
            continue
        text = response.text
        if response.is_success and aimed:
            leaks.append(f"{method} {path}: {response.status_code}")
        elif victim.session_id in text or "4242" in text:
            leaks.append(f"{method} {path}: body shows the session")
    return leaks


async def test_no_customer_reads_another_customers_session(
    app_factory: Any, backend: dict[str, Any]
) -> None:
    async with app_factory(**backend, server_api_keys=[API_KEY]) as client:
        first = Customer(client)
        await first.say(SECRET_WORDS)
        await first.say("I'd like to talk to a real person please")
        second = Customer(client)
        await second.say("hello")
        assert first.session_id and second.session_id

        probed = routes(client, "/api/support")
        paths = {p for _, p, _ in probed}
        assert {
            "/api/support/chat",
            "/api/support/chat/stream",
            "/api/support/sessions/{session_id}",
            "/api/support/sessions/{session_id}/events",
            "/api/support/sessions/{session_id}/token",
            "/api/support/sessions",
        } <= paths

        as_second = {"Authorization": f"Bearer {second.token}"}
        nobody: dict[str, str] = {}
        other_company_customer = {"X-API-Key": API_KEY, "X-Customer-ID": "someone-else"}
        forged = jwt.encode(
            {"sub": first.session_id, "typ": "session", "exp": datetime.now(UTC) + timedelta(1)},
            "not-the-server-secret-but-long-enough",
            algorithm="HS256",
        )
        attempts = {
            "second customer's token": as_second,
            "no credentials": nobody,
            "server key, another customer id": other_company_customer,
            "forged token": {"Authorization": f"Bearer {forged}"},
            "agent token": {"Authorization": f"Bearer {agent_token(backend)}"},
        }
        leaks = {}
        for name, headers in attempts.items():
            leaks[name] = await probe_customer_routes(client, first, headers)

        # The victim's own view is intact and was not changed by the attempts.
        session = await first.transcript()
    assert leaks == {name: [] for name in attempts}, "0 cross-session reads"
    customer_lines = [m["content"] for m in session["messages"] if m["role"] == "customer"]
    assert customer_lines == [SECRET_WORDS, "I'd like to talk to a real person please"]
    assert len(probed) >= 7


async def test_agent_endpoints_need_an_agent_token(
    app_factory: Any, backend: dict[str, Any]
) -> None:
    async with app_factory(**backend) as client:
        customer = Customer(client)
        await customer.say("I'd like to talk to a real person please")
        settings_secret = app_of(client).state.settings.agent_signing_key()
        now = datetime.now(UTC)

        def signed(claims: dict[str, Any], key: str = settings_secret, alg: str = "HS256") -> str:
            ours = {"exp": now + timedelta(hours=1), "iss": ISSUER, "aud": AUDIENCE}
            given = {k: v for k, v in {**ours, **claims}.items() if v is not None}
            return jwt.encode(given, key, algorithm=alg)

        unauthenticated = {
            "no token": None,
            "customer's session token": customer.token,
            "expired": signed({"sub": "alice", "role": "agent", "exp": now - timedelta(1)}),
            "another key": signed({"sub": "alice", "role": "agent"}, key="x" * 40),
            "no subject": signed({"role": "agent"}),
            "session type": signed({"sub": "alice", "role": "agent", "typ": "session"}),
            "another audience": signed({"sub": "alice", "role": "admin", "aud": "other-app"}),
            "another issuer": signed({"sub": "alice", "role": "admin", "iss": "elsewhere"}),
            "no issuer": signed({"sub": "alice", "role": "admin", "iss": None}),
            # PyJWT reads the key "" as no key, the only one alg "none" signs with.
            "alg none": jwt.encode({"sub": "alice", "role": "admin"}, "", algorithm="none"),
            "garbage": "not.a.jwt",
        }
        forbidden = {
            "viewer role": signed({"sub": "alice", "role": "viewer"}),
            "no role": signed({"sub": "alice"}),
        }
        results: dict[str, dict[str, int]] = {}
        for method, path, has_body in routes(client, "/api/agent"):
            url = re.sub(r"\{session_id\}", customer.session_id or "", path)
            body = {"text": "hello"} if has_body else None
            for name, token in {**unauthenticated, **forbidden}.items():
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                response = await call(client, method, url, json=body, headers=headers)
                code = response.status_code if response is not None else 200
                results.setdefault(name, {})[f"{method} {path}"] = code
                if response is not None and code in (401, 403):
                    assert response.json()["error"]["code"] in ("unauthorized", "forbidden")
        ok = await client.get(
            "/api/agent/me", headers={"Authorization": f"Bearer {agent_token(backend)}"}
        )
    assert ok.status_code == 200 and ok.json() == {"name": "alice", "role": "agent"}
    assert len(results["no token"]) >= 9
    for name in unauthenticated:
        assert set(results[name].values()) == {401}, (name, results[name])
    for name in forbidden:
        assert set(results[name].values()) == {403}, (name, results[name])
