"""What the abuse-limit tests share: clients at chosen addresses, Redis, the error shape."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from supportgraph.settings import Settings
from tests.utils.chat import app_of
from tests.utils.ci import require

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@asynccontextmanager
async def client_at(client: httpx.AsyncClient, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same in-process app whose requests come from ``ip``."""
    transport = httpx.ASGITransport(app=app_of(client), client=(ip, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
        yield other


def assert_rate_limited(response: httpx.Response, scope: str) -> dict[str, Any]:
    """A 429 in the API's error shape with a usable Retry-After; returns the error."""
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "rate_limited" and error["details"]["scope"] == scope, error
    wait = int(response.headers["retry-after"])
    assert 1 <= wait <= error["details"]["window_seconds"]
    assert response.headers["ratelimit-remaining"] == "0"
    assert response.headers["ratelimit-limit"] == str(error["details"]["limit"])
    return error


def redis_up(url: str = REDIS_URL) -> bool:
    """Whether Redis answers PING at ``url`` (host and port only)."""
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def require_redis() -> None:
    """Fail under CI when Redis is missing (``.ci/run`` starts it); skip only off CI."""
    require(
        redis_up(),
        f"Redis is not reachable at {REDIS_URL}",
        needed_by="the Redis tests",
        hint="set TEST_REDIS_URL",
    )


@pytest.fixture
async def redis_limits() -> AsyncIterator[dict[str, str]]:
    """Settings overrides for rate limits in Redis under a key prefix of this test alone;
    its keys are deleted afterwards."""
    require_redis()
    prefix = f"sgtest-{secrets.token_hex(6)}"
    yield {"rate_limit_storage": REDIS_URL, "rate_limit_key_prefix": prefix}
    await redis_storage(prefix).reset()
    assert not await redis_keys(prefix), "the test's keys are gone"


async def redis_keys(prefix: str) -> list[str]:
    """The Redis keys under ``prefix``."""
    import coredis

    client = coredis.Redis.from_url(REDIS_URL, decode_responses=True)
    return sorted(await client.keys(f"{prefix}*"))


def redis_storage(prefix: str) -> Any:
    """The ``limits`` Redis storage the app uses under ``prefix``."""
    from api.ratelimit import RateLimits

    settings = Settings(_env_file=None, rate_limit_storage=REDIS_URL, rate_limit_key_prefix=prefix)
    return RateLimits(settings).storage
