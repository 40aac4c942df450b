"""Browser hardening headers on every response, and CORS that names its origins."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tests.conftest import make_settings

PARTNER = "https://shop.example.com"


async def test_every_response_carries_the_hardening_headers(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    async with app_factory(**sqlite_backend) as client:
        chat = await client.post(
            "/api/support/chat", json={"message": "What is your return policy?"}
        )
        page = await client.get("/")
        missing = await client.get("/api/support/sessions/nope")
    for response in (chat, page, missing):
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"
        csp = headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "strict-transport-security" not in headers, "HSTS only when configured"
    assert chat.headers["cache-control"] == "no-store", "replies hold personal data"
    assert missing.headers["cache-control"] == "no-store"
    assert page.headers["cache-control"] == "no-cache", "a route's own header is kept"


async def test_framing_and_hsts_follow_the_settings(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    async with app_factory(**sqlite_backend, frame_ancestors=[PARTNER], hsts=True) as client:
        response = await client.get("/health")
    assert f"frame-ancestors {PARTNER}" in response.headers["content-security-policy"]
    assert "x-frame-options" not in response.headers, "the CSP allow-list decides instead"
    assert response.headers["strict-transport-security"].startswith("max-age=")


async def test_cors_answers_only_the_configured_origins(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization",
    }
    async with app_factory(**sqlite_backend, cors_origins=[PARTNER + "/"]) as client:
        allowed = await client.options(
            "/api/support/chat", headers={"Origin": PARTNER, **preflight}
        )
        refused = await client.options(
            "/api/support/chat", headers={"Origin": "https://evil.example", **preflight}
        )
        simple = await client.get("/health", headers={"Origin": "https://evil.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == PARTNER
    assert "access-control-allow-credentials" not in allowed.headers
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    assert "access-control-allow-origin" not in simple.headers


async def test_no_cors_headers_without_configured_origins(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    async with app_factory(**sqlite_backend) as client:
        response = await client.get("/health", headers={"Origin": PARTNER})
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    "origin", ["*", "https://*.example.com", "shop.example.com", "https://shop.example.com/app"]
)
def test_origins_must_be_named_exactly(origin: str) -> None:
    with pytest.raises(ValidationError, match="cors_origins") as raised:
        make_settings(cors_origins=[origin])
    assert "is not an origin" in str(raised.value)
