"""The agents' workspace: queue, conversation, claim, reply, note, hand back, resolve."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from tests.handoff.helpers import AgentClient, agent_token
from tests.utils.chat import Customer, app_of
from tests.utils.orders import order

SHIPPED = order("shipped")
HUMAN = "I'd like to talk to a real person please"


async def escalated_customer(client: Any) -> Customer:
    """A customer who gave an order number, then asked for a person."""
    customer = Customer(client)
    await customer.say(f"where is my order {SHIPPED['order_id']}?")
    handed = await customer.say(HUMAN)
    assert handed["status"] == "escalated"
    return customer


async def test_hand_off_round_trip(app_factory: Any, backend: dict[str, Any]) -> None:
    async with app_factory(**backend) as client:
        alice = AgentClient(client, agent_token(backend, "alice"))
        bob = AgentClient(client, agent_token(backend, "bob"))
        customer = await escalated_customer(client)
        sid = customer.session_id

        queue = await alice.get("/sessions", status="escalated")
        assert [i["session_id"] for i in queue["items"]] == [sid]
        item = queue["items"][0]
        assert item["escalation_reason"] == "requested_human"
        assert item["claimed_by"] is None
        assert item["last_message"]

        conv = await alice.get(f"/sessions/{sid}")
        packet = conv["escalation"]
        assert packet["reason"] == "requested_human"
        assert packet["summary"] and packet["detail"]
        assert packet["intent"] == "human"
        assert packet["slots"] == {"order_number": SHIPPED["order_id"]}
        assert isinstance(packet["tried"], list)
        assert conv["slots"] == {"order_number": SHIPPED["order_id"]}
        assert [m["role"] for m in conv["messages"]] == ["customer", "assistant"] * 2

        claimed = await alice.post(f"/sessions/{sid}/claim")
        assert claimed["claimed_by"] == "alice"
        assert (await alice.post(f"/sessions/{sid}/claim"))["claimed_by"] == "alice"
        conflict = await bob.post(f"/sessions/{sid}/claim", expect=409)
        assert "alice" in conflict["error"]["message"]
        await bob.post(f"/sessions/{sid}/reply", {"text": "bob here"}, expect=409)

        # The customer keeps writing: stored, not answered, visible to the agent.
        waiting = await customer.say("hello? anyone?")
        assert waiting["reply"] == "" and waiting["status"] == "escalated"

        reply = await alice.post(
            f"/sessions/{sid}/reply", {"text": "Hi, I'm Alice. Let me check order 1042."}
        )
        assert reply["role"] == "agent" and reply["author"] == "alice"
        note = await alice.post(f"/sessions/{sid}/notes", {"text": "VIP customer; secret-note"})
        assert note["author"] == "alice"

        session = await customer.transcript()
        assert session["messages"][-1]["role"] == "agent"
        assert session["messages"][-1]["content"].startswith("Hi, I'm Alice")
        assert "secret-note" not in str(session), "internal notes never reach the customer"

        conv = await alice.get(f"/sessions/{sid}")
        assert [m["role"] for m in conv["messages"]][-2:] == ["customer", "agent"]
        assert [n["content"] for n in conv["notes"]] == ["VIP customer; secret-note"]

        # The agent's reply is in the graph's window: the bot sees it after hand-back.
        state = await app_of(client).state.service.graph.values(sid)
        assert any(isinstance(m, AIMessage) and m.name == "agent" for m in state["messages"])

        back = await alice.post(f"/sessions/{sid}/hand-back")
        assert back["status"] == "active" and back["claimed_by"] is None
        await alice.post(f"/sessions/{sid}/reply", {"text": "too late"}, expect=409)
        answered = await customer.say("How many days do I have to return something?")
        assert answered["route"] == ["classify_intent", "handle_faq"]
        assert "30 days" in answered["reply"]
        assert answered["status"] == "active"

        again = await customer.say(HUMAN)
        assert again["status"] == "escalated", "a handed-back thread can escalate again"
        await bob.post(f"/sessions/{sid}/claim")
        done = await bob.post(f"/sessions/{sid}/resolve")
        assert done["status"] == "resolved"
        after = await customer.say("thanks! and how much is shipping?")
        assert after["reply"] and after["status"] != "escalated"
        session = await customer.transcript()
    assert session["status"] == after["status"]
    assert [m["role"] for m in session["messages"]].count("agent") == 1


async def test_queue_filters_and_cursor_pagination(
    app_factory: Any, backend: dict[str, Any]
) -> None:
    async with app_factory(**backend) as client:
        alice = AgentClient(client, agent_token(backend, "alice"))
        escalated = [await escalated_customer(client) for _ in range(3)]
        other = Customer(client)
        await other.say("How many days do I have to return something?")
        await alice.post(f"/sessions/{escalated[0].session_id}/claim")
        await escalated[1].say("still waiting")  # newest activity

        everything = await alice.get("/sessions")
        ids = [i["session_id"] for i in everything["items"]]
        assert set(ids) == {c.session_id for c in [*escalated, other]}
        stamps = [i["updated_at"] for i in everything["items"]]
        assert stamps == sorted(stamps, reverse=True), "newest activity first"
        assert ids[0] == escalated[1].session_id

        pages, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = await alice.get("/sessions", **params)
            pages.append([i["session_id"] for i in page["items"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert [len(p) for p in pages] == [2, 2]
        assert [s for p in pages for s in p] == ids

        mine = await alice.get("/sessions", claimed_by="alice")
        assert [i["session_id"] for i in mine["items"]] == [escalated[0].session_id]
        free = await alice.get("/sessions", claimed_by="none", status="escalated")
        assert {i["session_id"] for i in free["items"]} == {
            escalated[1].session_id,
            escalated[2].session_id,
        }
        by_reason = await alice.get("/sessions", reason="requested_human")
        assert len(by_reason["items"]) == 3
        assert (await alice.get("/sessions", reason="low_confidence"))["items"] == []
        both = await alice.get("/sessions", status=["active", "escalated"])
        assert len(both["items"]) == 4

        await asyncio.sleep(0.01)
        since = datetime.now(UTC)
        await asyncio.sleep(0.01)
        await escalated[2].say("one more thing")
        recent = await alice.get("/sessions", updated_since=since.isoformat())
        assert [i["session_id"] for i in recent["items"]] == [escalated[2].session_id]
        future = (since + timedelta(days=1)).isoformat()
        assert (await alice.get("/sessions", updated_since=future))["items"] == []

        bad = await alice.get("/sessions", cursor="not-a-cursor", expect=422)
        assert bad["error"]["code"] == "invalid_input"
        await alice.get("/sessions", updated_since="2026-01-01T00:00:00", expect=422)


async def test_claims_one_agent_at_a_time(app_factory: Any, backend: dict[str, Any]) -> None:
    async with app_factory(**backend) as client:
        agents = [AgentClient(client, agent_token(backend, f"agent{i}")) for i in range(5)]
        admin = AgentClient(client, agent_token(backend, "root", role="admin"))
        customer = await escalated_customer(client)
        sid = customer.session_id
        responses = await asyncio.gather(
            *(a.client.post(f"/api/agent/sessions/{sid}/claim", headers=a.headers) for a in agents)
        )
        codes = sorted(r.status_code for r in responses)
        assert codes == [200, 409, 409, 409, 409]
        winner = next(r.json()["claimed_by"] for r in responses if r.status_code == 200)
        loser = agents[(int(winner.removeprefix("agent")) + 1) % len(agents)]
        await loser.post(f"/sessions/{sid}/claim", force="true", expect=403)
        await loser.post(f"/sessions/{sid}/release", expect=409)
        taken = await admin.post(f"/sessions/{sid}/claim", force="true")
        assert taken["claimed_by"] == "root"
        released = await admin.post(f"/sessions/{sid}/release")
        assert released["claimed_by"] is None

        active = Customer(client)
        await active.say("hello")
        error = await admin.post(f"/sessions/{active.session_id}/claim", expect=409)
        assert "not with a person" in error["error"]["message"]
        await admin.post(f"/sessions/{active.session_id}/hand-back", expect=409)
        await admin.post(f"/sessions/{active.session_id}/resolve", expect=409)
        await admin.get("/sessions/unknown-session-id", expect=404)
        await admin.post("/sessions/unknown-session-id/claim", expect=404)
        for body in ({}, {"text": ""}, {"text": "   "}, {"text": "x" * 4001}, {"text": 1}):
            await admin.post(f"/sessions/{sid}/reply", body, expect=422)


async def test_a_claim_made_while_a_release_runs_is_kept(
    app_factory: Any, backend: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An admin takes the conversation over at the moment its holder lets go of it: the
    release checked the holder, so it must not erase the new claim. The claim is sent exactly
    between the release's check and its write (the store call is wrapped to send it there)."""
    async with app_factory(**backend) as client:
        alice = AgentClient(client, agent_token(backend, "alice"))
        admin = AgentClient(client, agent_token(backend, "root", role="admin"))
        sid = (await escalated_customer(client)).session_id
        await alice.post(f"/sessions/{sid}/claim")
        store_class = type(app_of(client).state.service.store)
        real_release = store_class.release_session
        taking: list[asyncio.Task[Any]] = []

        async def release_with_a_claim_in_between(self: Any, *args: Any, **kwargs: Any) -> Any:
            taking.append(
                asyncio.create_task(
                    client.post(
                        f"/api/agent/sessions/{sid}/claim",
                        params={"force": "true"},
                        headers=admin.headers,
                    )
                )
            )
            await asyncio.sleep(0.3)  # the claim's own commit, if nothing holds it back
            return await real_release(self, *args, **kwargs)

        # On the class: the release runs on the transaction's view of the store.
        monkeypatch.setattr(store_class, "release_session", release_with_a_claim_in_between)
        released = await alice.post(f"/sessions/{sid}/release")
        taken = await taking[0]
        assert taken.status_code == 200, taken.text
        assert taken.json()["claimed_by"] == "root"
        assert released["claimed_by"] in (None, "root")
        now = await admin.get(f"/sessions/{sid}")
        assert now["claimed_by"] == "root", "the release erased a later claim"
