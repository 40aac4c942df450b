"""Whole conversations through the HTTP API, on SQLite and on real PostgreSQL (offline mode)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import STORE_PACK
from tests.utils.chat import Customer, app_of
from tests.utils.orders import order

DELIVERED = order("delivered")
SHIPPED = order("shipped")
PLACED = order("placed")


async def test_faq_answer_cites_entries(app_factory: Any, backend: dict[str, Any]) -> None:
    async with app_factory(**backend) as client:
        customer = Customer(client)
        body = await customer.say("How many days do I have to return something?")
    assert body["route"] == ["classify_intent", "handle_faq"]
    assert body["status"] == "active"
    assert body["citations"], body
    assert all(set(c) == {"id", "title"} for c in body["citations"])
    assert "AI" in body["reply"], "the first reply carries the greeting that discloses the AI"
    assert "30 days" in body["reply"]


async def test_order_status_over_several_turns(app_factory: Any, backend: dict[str, Any]) -> None:
    async with app_factory(**backend) as client:
        customer = Customer(client)
        first = await customer.say("Hi, where is my order?")
        assert first["intent"] == "order_status"
        assert first["status"] == "awaiting_info"
        assert "order number" in first["reply"].lower() and "email" in first["reply"].lower()

        bad = await customer.say("it's 12")
        assert bad["status"] == "awaiting_info"
        assert "4 digits" in bad["reply"], "an invalid value is re-asked with the reason"

        second = await customer.say(DELIVERED["order_id"])
        assert "email" in second["reply"].lower()
        assert "order number" not in second["reply"].lower(), "asks only for what is missing"

        done = await customer.say(DELIVERED["email"].upper())
        assert done["status"] == "resolved"
        assert done["route"] == ["classify_intent", "collect_info", "resolve"]
        assert "delivered" in done["reply"].lower()
        assert DELIVERED["delivered_at"] in done["reply"]

        session = await customer.transcript()
    assert session["slots"] == {"order_number": DELIVERED["order_id"], "email": DELIVERED["email"]}
    roles = [m["role"] for m in session["messages"]]
    assert roles == ["customer", "assistant"] * 4


async def test_wrong_email_gets_no_order_data(app_factory: Any, backend: dict[str, Any]) -> None:
    async with app_factory(**backend) as client:
        wrong = await Customer(client).say(
            f"status of order {SHIPPED['order_id']}? my email is someone.else@example.com"
        )
        unknown = await Customer(client).say(
            "status of order 1999? my email is someone.else@example.com"
        )
    assert wrong["status"] == "awaiting_info"
    for field in ("tracking", "items", "carrier", "name", "eta"):
        if SHIPPED[field]:
            assert SHIPPED[field] not in wrong["reply"], f"{field} leaked"
    # A mismatch reads exactly like an unknown order: no way to probe which numbers exist.
    assert wrong["reply"].replace(SHIPPED["order_id"], "N") == unknown["reply"].replace("1999", "N")


async def test_topic_change_mid_collection(app_factory: Any, backend: dict[str, Any]) -> None:
    async with app_factory(**backend) as client:
        customer = Customer(client)
        await customer.say("I want to check my order status")
        switched = await customer.say("Actually, do you ship to Canada and how much does it cost?")
        assert switched["route"][-1] == "handle_faq"
        assert switched["status"] == "active"
        assert switched["citations"]
        back = await customer.say(
            f"ok, where is order {SHIPPED['order_id']}, email {SHIPPED['email']}"
        )
    assert back["intent"] == "order_status"
    assert back["status"] == "resolved"
    assert SHIPPED["tracking"] in back["reply"]


async def test_explicit_request_for_a_human(app_factory: Any, backend: dict[str, Any]) -> None:
    async with app_factory(**backend) as client:
        customer = Customer(client)
        await customer.say("where is my order?")
        handed = await customer.say("I'd like to talk to a real person please")
        assert handed["status"] == "escalated"
        assert handed["route"] == ["classify_intent", "escalate_human"]
        assert "team" in handed["reply"].lower()
        later = await customer.say("hello? are you there?")
        assert later["reply"] == "", "the bot does not answer an escalated thread"
        assert later["status"] == "escalated"
        session = await customer.transcript()
    assert session["escalation"]["reason"] == "requested_human"
    assert session["escalation"]["summary"]
    assert session["messages"][-1] == {
        "role": "customer",
        "content": "hello? are you there?",
        "created_at": session["messages"][-1]["created_at"],
    }


async def test_session_continues_after_restart(app_factory: Any, backend: dict[str, Any]) -> None:
    async with app_factory(**backend) as client:
        customer = Customer(client)
        await customer.say(f"where is my order {PLACED['order_id']}")
    async with app_factory(**backend) as client:
        customer.client = client
        done = await customer.say(PLACED["email"])
        session = await customer.transcript()
    assert done["status"] == "resolved"
    assert PLACED["placed_at"] in done["reply"]
    assert len(session["messages"]) == 4


async def test_concurrent_posts_to_one_session_are_both_recorded(
    app_factory: Any, backend: dict[str, Any]
) -> None:
    async with app_factory(**backend) as client:
        customer = Customer(client)
        await customer.say("hello")
        texts = [f"How much does shipping cost? (question {i})" for i in range(6)]
        results = await asyncio.gather(*(customer.say(t) for t in texts))
        session = await customer.transcript()
    assert all(r["session_id"] == customer.session_id for r in results)
    customer_lines = [m["content"] for m in session["messages"] if m["role"] == "customer"]
    assert sorted(customer_lines[1:]) == sorted(texts)
    assert len(session["messages"]) == 2 * (len(texts) + 1), "every turn answered exactly once"


async def _refund_until_confirmation(customer: Customer) -> dict[str, Any]:
    await customer.say(f"I want a refund for order {DELIVERED['order_id']}")
    await customer.say(DELIVERED["email"])
    return await customer.say("it arrived damaged")


async def test_refund_confirmed_writes_one_request(
    app_factory: Any, backend: dict[str, Any]
) -> None:
    async with app_factory(**backend) as client:
        customer = Customer(client)
        ask = await _refund_until_confirmation(customer)
        assert ask["status"] == "awaiting_info"
        assert DELIVERED["order_id"] in ask["reply"] and DELIVERED["total"] in ask["reply"]
        assert await _requests(client) == [], "nothing is written before the yes"
        done = await customer.say("yes please")
        assert done["status"] == "resolved"
        requests = await _requests(client)
    assert len(requests) == 1
    assert requests[0]["kind"] == "refund"
    assert requests[0]["session_id"] == customer.session_id
    assert requests[0]["data"]["order_number"] == DELIVERED["order_id"]
    assert requests[0]["data"]["reason"] == "it arrived damaged"
    assert requests[0]["id"] in done["reply"]


async def test_refund_declined_writes_nothing(app_factory: Any, backend: dict[str, Any]) -> None:
    async with app_factory(**backend) as client:
        customer = Customer(client)
        await _refund_until_confirmation(customer)
        declined = await customer.say("no, don't")
        assert declined["status"] == "active"
        assert await _requests(client) == []
        again = await customer.say("yes")
        assert await _requests(client) == [], "a late yes does not revive a declined action"
    assert again["status"] != "resolved"


async def test_refund_cancelled_by_change_of_topic(
    app_factory: Any, backend: dict[str, Any]
) -> None:
    async with app_factory(**backend) as client:
        customer = Customer(client)
        await _refund_until_confirmation(customer)
        other = await customer.say("wait, how long does standard shipping take?")
        assert other["route"][-1] == "handle_faq"
        await customer.say("yes")
        assert await _requests(client) == []


async def _requests(client: Any) -> list[dict[str, Any]]:
    return await app_of(client).state.service.store.list_requests()


async def test_store_pack_is_the_default() -> None:
    from supportgraph.settings import Settings

    assert Settings(_env_file=None).pack_path == STORE_PACK
