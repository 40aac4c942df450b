"""Helpers for the hand-off tests: agent clients, SSE parsing, a live server in a thread."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import uvicorn

from api.agent_auth import AgentTokens
from supportgraph.settings import Settings
from tests.conftest import make_settings
from tests.utils.servers import free_port


def agent_token(
    backend: dict[str, Any],
    name: str = "alice",
    role: str = "agent",
    ttl: timedelta = timedelta(hours=1),
) -> str:
    """An agent token the app configured with ``backend`` accepts."""
    return AgentTokens.from_settings(make_settings(**backend)).issue(name, role=role, ttl=ttl)


class AgentClient:
    """Calls ``/api/agent/...`` with one agent's token."""

    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    async def get(self, path: str, *, expect: int = 200, **params: Any) -> Any:
        """GET a path under /api/agent; assert the status; return the JSON."""
        response = await self.client.get(f"/api/agent{path}", params=params, headers=self.headers)
        assert response.status_code == expect, response.text
        return response.json()

    async def post(
        self, path: str, body: dict[str, Any] | None = None, *, expect: int = 200, **params: Any
    ) -> Any:
        """POST to a path under /api/agent; assert the status; return the JSON."""
        response = await self.client.post(
            f"/api/agent{path}", json=body, params=params, headers=self.headers
        )
        assert response.status_code == expect, response.text
        return response.json()


@dataclass
class SseEvent:
    """One Server-Sent Event (data decoded from JSON)."""

    event: str
    data: Any
    id: str | None


async def sse_events(
    response: httpx.Response, *, comments: list[str] | None = None
) -> AsyncGenerator[SseEvent, None]:
    """The events of a streaming SSE response (comment lines go to ``comments``)."""
    data: list[str]
    event, data, event_id = "message", [], None
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield SseEvent(event, json.loads("\n".join(data)), event_id)
            event, data, event_id = "message", [], None
        elif line.startswith(":"):
            if comments is not None:
                comments.append(line)
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            elif field == "event":
                event = value
            elif field == "id":
                event_id = value


async def collect_sse(response: httpx.Response) -> list[SseEvent]:
    """All events of a finite SSE response."""
    return [e async for e in sse_events(response)]


@dataclass
class LiveApp:
    """The app served over real HTTP (in a thread with its own event loop)."""

    url: str
    settings: Settings


@contextmanager
def live_server(**overrides: Any) -> Iterator[LiveApp]:
    """``create_app(settings)`` behind uvicorn on a free loopback port, stopped afterwards."""
    from api.app import create_app

    settings = make_settings(**overrides)
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("the live server did not start")
        time.sleep(0.05)
    try:
        yield LiveApp(url=f"http://127.0.0.1:{port}", settings=settings)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class EventStream:
    """An open SSE stream: ``async with EventStream(client, url, headers) as s: await s.next()``."""

    def __init__(
        self, client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None
    ) -> None:
        self.client = client
        self.url = url
        self.headers = headers or {}
        self.comments: list[str] = []

    async def __aenter__(self) -> EventStream:
        self._cm = self.client.stream("GET", self.url, headers=self.headers, timeout=None)
        self.response = await self._cm.__aenter__()
        assert self.response.status_code == 200, await self.response.aread()
        self._events = sse_events(self.response, comments=self.comments)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._events.aclose()
        await self._cm.__aexit__(*exc)

    async def next(self, timeout: float = 10.0) -> SseEvent:
        """The next event (failing after ``timeout`` seconds)."""
        return await asyncio.wait_for(anext(self._events), timeout)

    async def until(self, kind: str, timeout: float = 10.0, **match: Any) -> list[SseEvent]:
        """Events up to and including the first of ``kind`` whose data has ``match``."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            event = await self.next(max(deadline - time.monotonic(), 0.01))
            seen.append(event)
            if event.event == kind and all(event.data.get(k) == v for k, v in match.items()):
                return seen
