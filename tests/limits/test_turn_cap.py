"""The per-session turn cap: past it a message is refused (409), not stored, and the customer
is told to start a new conversation; the production default (1,000) is enforced the same way."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from typing import Any

import psycopg

from supportgraph.settings import Settings
from tests.utils.chat import Customer


def set_turns(backend: dict[str, Any], session_id: str, turns: int) -> None:
    """Fast-forward a session's turn counter in its database (as if it had run that long)."""
    if "database_url" in backend:
        with psycopg.connect(backend["database_url"], autocommit=True) as conn:
            conn.execute("UPDATE sg_sessions SET turns = %s WHERE id = %s", (turns, session_id))
        return
    with sqlite3.connect(backend["sqlite_path"]) as conn:
        conn.execute("UPDATE sg_sessions SET turns = ? WHERE id = ?", (turns, session_id))


def assert_turn_limit(body: dict[str, Any], limit: int) -> str:
    """The refusal's error: code, the limit, and what to do next."""
    error = body["error"]
    assert error["code"] == "turn_limit_reached", error
    assert error["details"] == {"max_turns": limit}
    assert f"limit of {limit} messages" in error["message"]
    assert "start a new conversation" in error["message"]
    return str(error["message"])


async def test_the_production_default_cap_is_at_least_1000_and_enforced(
    app_factory: Any, backend: dict[str, Any]
) -> None:
    """Default settings on both backends: turn 1,000 is answered, the next is refused."""
    cap = Settings.model_fields["max_turns_per_session"].default
    assert cap >= 1000
    async with app_factory(**backend) as client:
        customer = Customer(client)
        await customer.say("hi")
        assert customer.session_id is not None
        set_turns(backend, customer.session_id, cap - 1)
        last = await customer.say("how much is shipping?")
        refused = await customer.say("one more question", expect=409)
        transcript = await customer.transcript()
    assert last["reply"]
    assert_turn_limit(refused, cap)
    said = [m["content"] for m in transcript["messages"] if m["role"] == "customer"]
    assert said == ["hi", "how much is shipping?"], "the refused message is not stored"


async def test_a_small_cap_refuses_and_a_new_conversation_works(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    async with app_factory(**sqlite_backend, max_turns_per_session=3) as client:
        customer = Customer(client)
        for text in ("hi", "how much is shipping?", "do you ship abroad?"):
            await customer.say(text)
        refused = await customer.say("and returns?", expect=409)
        again = await customer.say("still there?", expect=409)
        readable = await customer.transcript()
        fresh = await Customer(client).say("and returns?")
    assert_turn_limit(refused, 3)
    assert again == refused
    assert len([m for m in readable["messages"] if m["role"] == "customer"]) == 3
    assert fresh["reply"] and fresh["session_id"] != customer.session_id


async def test_an_escalated_session_at_its_cap_says_the_team_will_answer(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    async with app_factory(**sqlite_backend, max_turns_per_session=2) as client:
        customer = Customer(client)
        await customer.say("hello")
        escalated = await customer.say("I want to talk to a person")
        refused = await customer.say("hello? anyone?", expect=409)
    assert escalated["status"] == "escalated"
    assert "the support team has it and will still answer here" in assert_turn_limit(refused, 2)


async def test_concurrent_messages_cannot_overshoot_the_cap(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    """The cap is checked under the session's lock: of 6 messages at once, 2 fit."""
    async with app_factory(**sqlite_backend, max_turns_per_session=3) as client:
        customer = Customer(client)
        await customer.say("hi")
        responses = await asyncio.gather(
            *(
                client.post(
                    "/api/support/chat",
                    json={"message": f"question {i}", "session_id": customer.session_id},
                    headers={"Authorization": f"Bearer {customer.token}"},
                )
                for i in range(6)
            )
        )
        transcript = await customer.transcript()
    assert Counter(r.status_code for r in responses) == {200: 2, 409: 4}
    assert len([m for m in transcript["messages"] if m["role"] == "customer"]) == 3


async def test_the_streamed_chat_refuses_past_the_cap_before_its_stream_starts(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    """The widget's route answers like the plain chat: the turn is refused under the session's
    lock, before the stream opens, so the refusal is a 409 in the error shape."""
    async with app_factory(
        **sqlite_backend, max_turns_per_session=1, stream_chunk_delay=0
    ) as client:
        customer = Customer(client)
        await customer.say("hi")
        response = await client.post(
            "/api/support/chat/stream",
            json={"message": "more", "session_id": customer.session_id},
            headers={"Authorization": f"Bearer {customer.token}"},
        )
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert_turn_limit(response.json(), 1)
