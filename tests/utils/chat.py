"""A tiny customer for API tests: keeps the session id and token between turns."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest


def app_of(client: httpx.AsyncClient) -> Any:
    """The FastAPI app behind an in-process client (to read its store directly)."""
    # httpx keeps its transport private; an in-process client's is an ASGITransport.
    return client._transport.app  # type: ignore[attr-defined]


class Customer:
    """Talks to ``/api/support/chat`` like a chat widget would."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.session_id: str | None = None
        self.token: str | None = None

    async def say(self, message: str, *, expect: int = 200) -> dict[str, Any]:
        """Send one message; return the JSON body (asserting the status code)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        body = {"message": message, "session_id": self.session_id}
        response = await self.client.post("/api/support/chat", json=body, headers=headers)
        assert response.status_code == expect, response.text
        data = response.json()
        if response.status_code == 200:
            self.session_id = data["session_id"]
            self.token = data["session_token"]
        return data

    async def transcript(self) -> dict[str, Any]:
        """The session as ``GET /api/support/sessions/{id}`` returns it."""
        response = await self.client.get(
            f"/api/support/sessions/{self.session_id}",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert response.status_code == 200, response.text
        return response.json()


class Gate:
    """Stands in for the service graph's ``turn``: holds every turn until released."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        await self.release.wait()
        return await self.real(*args, **kwargs)


def hold_turns(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> Gate:
    """Make the app's turns wait at the graph until ``gate.release`` is set."""
    graph = app_of(client).state.service.graph
    gate = Gate(graph.turn)
    monkeypatch.setattr(graph, "turn", gate)
    return gate
