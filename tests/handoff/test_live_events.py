"""Live updates over SSE: heartbeats, Last-Event-ID resume, notes kept from customers, and
events crossing worker processes through PostgreSQL LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.handoff.helpers import (
    AgentClient,
    EventStream,
    agent_token,
    live_server,
)
from tests.utils.chat import Customer
from tests.utils.db import fresh_schema
from tests.utils.servers import clean_env, free_port, serve_process

HUMAN = "I'd like to talk to a real person please"


def customer_stream(client: httpx.AsyncClient, customer: Customer, **headers: str) -> EventStream:
    url = f"/api/support/sessions/{customer.session_id}/events"
    return EventStream(client, url, {"Authorization": f"Bearer {customer.token}", **headers})


async def first_comment(stream: EventStream) -> str:
    """The first comment line (a heartbeat) on an idle stream."""
    async with stream.client.stream("GET", stream.url, headers=stream.headers) as response:
        async for line in response.aiter_lines():
            if line.startswith(":"):
                return line
    raise AssertionError("the stream ended without a heartbeat")


@pytest.mark.slow
async def test_customer_and_agent_streams(sqlite_backend: dict[str, Any]) -> None:
    backend = {**sqlite_backend, "sse_heartbeat_seconds": 0.5}
    with live_server(**backend) as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            alice = AgentClient(client, agent_token(backend, "alice"))
            agents = EventStream(client, "/api/agent/events", alice.headers)
            async with agents:
                assert (await agents.next()).event == "ready"
                customer = Customer(client)
                await customer.say("where is my order?")
                await customer.say(HUMAN)

                async with customer_stream(client, customer) as stream:
                    # No Last-Event-ID: the whole session is replayed, then followed.
                    replay = await stream.until("status", status="escalated")
                    assert replay[0].event == "ready"
                    roles = [e.data["role"] for e in replay if e.event == "message"]
                    assert roles == ["customer", "assistant"] * 2
                    assert "escalation" not in replay[-1].data, "the packet is for agents"

                    await alice.post(f"/sessions/{customer.session_id}/claim")
                    await alice.post(
                        f"/sessions/{customer.session_id}/notes", {"text": "secret-note"}
                    )
                    await alice.post(f"/sessions/{customer.session_id}/reply", {"text": "Hi!"})
                    live_events = await stream.until("message", role="agent")
                    assert [e.event for e in live_events] == ["claimed", "message"]
                    assert live_events[0].data == {
                        "id": int(live_events[0].id or 0),
                        "kind": "claimed",
                        "created_at": live_events[0].data["created_at"],
                    }, "customers are not told which agent"
                    last_id = live_events[-1].id
                    assert last_id is not None
                heartbeat = await asyncio.wait_for(
                    first_comment(customer_stream(client, customer)), 5
                )
                assert heartbeat.startswith(": ping")

                # Disconnected: the conversation moves on.
                await alice.post(f"/sessions/{customer.session_id}/reply", {"text": "Still there?"})
                await customer.say("yes, sorry!")
                await alice.post(f"/sessions/{customer.session_id}/notes", {"text": "secret-2"})
                await alice.post(f"/sessions/{customer.session_id}/resolve")

                async with customer_stream(client, customer, **{"Last-Event-ID": last_id}) as again:
                    missed = await again.until("status", status="resolved")
                shown = [(e.event, e.data.get("content") or e.data.get("status")) for e in missed]
                assert shown == [
                    ("ready", None),
                    ("message", "Still there?"),
                    ("message", "yes, sorry!"),
                    ("status", "resolved"),
                ]
                ids = [int(e.id) for e in missed if e.id]
                assert ids == sorted(ids) and min(ids) > int(last_id or 0)

                agent_side = await agents.until("status", status="resolved")
        kinds = [e.event for e in agent_side]
        assert {"message", "note", "claimed", "status"} <= set(kinds)
        notes = [e.data["content"] for e in agent_side if e.event == "note"]
        assert notes == ["secret-note", "secret-2"]
        escalated = next(e for e in agent_side if e.data.get("status") == "escalated")
        assert escalated.data["escalation"]["reason"] == "requested_human"
        assert all(e.data["session_id"] == customer.session_id for e in agent_side[1:])


@pytest.mark.slow
async def test_events_cross_worker_processes_on_postgres(tmp_path: Path) -> None:
    """An agent reply posted to one worker reaches a customer stream held by the other.

    Heartbeats (and the streams' database re-check) are slow here, so only NOTIFY can
    deliver within the deadline.
    """
    slow = {"SUPPORTGRAPH_SSE_HEARTBEAT_SECONDS": "60"}
    with fresh_schema() as url:
        env = {"SUPPORTGRAPH_DATABASE_URL": url, **slow}
        with (
            serve_process(tmp_path, free_port(), env=clean_env(tmp_path, **env)) as first,
            serve_process(tmp_path, free_port(), env=clean_env(tmp_path, **env)) as second,
        ):
            token = agent_token({"secret_key": _secret()})
            async with (
                httpx.AsyncClient(base_url=first, timeout=30) as one,
                httpx.AsyncClient(base_url=second, timeout=30) as two,
            ):
                alice = AgentClient(one, token)
                customer = Customer(one)
                await customer.say(HUMAN)
                sid = customer.session_id
                agents_on_two = EventStream(
                    two, "/api/agent/events", {"Authorization": f"Bearer {token}"}
                )
                async with customer_stream(two, customer) as stream, agents_on_two:
                    await stream.until("status", status="escalated")
                    assert (await agents_on_two.next()).event == "ready"

                    started = time.monotonic()
                    await alice.post(f"/sessions/{sid}/reply", {"text": "Hello from worker one"})
                    got = await stream.until("message", timeout=5, role="agent")
                    assert got[-1].data["content"] == "Hello from worker one"
                    assert time.monotonic() - started < 5
                    seen_by_agents = await agents_on_two.until("message", timeout=5, role="agent")
                    assert seen_by_agents[-1].data["author"] == "alice"
                    last_id = got[-1].id

                # Reconnect to the other worker after missing a few events.
                texts = [f"update {i}" for i in range(3)]
                for text in texts:
                    await alice.post(f"/sessions/{sid}/reply", {"text": text})
                await customer.say("thanks")
                resumed = customer_stream(one, customer, **{"Last-Event-ID": last_id or "0"})
                async with resumed as again:
                    missed = await again.until("message", timeout=10, content="thanks")
    contents = [e.data["content"] for e in missed if e.event == "message"]
    assert contents == [*texts, "thanks"], "nothing missed, nothing repeated"


def _secret() -> str:
    from tests.conftest import TEST_SECRET

    return TEST_SECRET
