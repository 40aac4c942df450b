"""``escalate_human``: the hand-off packet, and silence once a person has the conversation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from nodes.escalate import escalate_human
from tests.utils.orders import order

SHIPPED = order("shipped")


async def test_packet_has_reason_summary_and_timestamp(run: Any, state: Any, ctx: Any) -> None:
    slots = {"order_number": SHIPPED["order_id"], "email": SHIPPED["email"]}
    tried = ["faq: return-policy", "order_status: not_found"]
    values = state(
        "it's 12",
        intent="order_status",
        slots=slots,
        tried=tried,
        failures=3,
        handoff_reason="repeated_failure",
        pending_action={"intent": "x", "action": "y", "slots": {}, "description": "z"},
    )
    before = datetime.now(UTC)
    out = await run(escalate_human, values, ctx)
    after = datetime.now(UTC)
    packet = out["escalation"]
    assert packet["reason"] == "repeated_failure"
    assert packet["detail"] == "3 failed attempts on order_status"
    assert (packet["intent"], packet["slots"], packet["tried"]) == ("order_status", slots, tried)
    at = datetime.fromisoformat(packet["at"])
    assert at.tzinfo is not None and before <= at <= after
    summary = packet["summary"]
    assert packet["detail"] in summary and "Intent: order_status" in summary
    for name, value in slots.items():
        assert f"{name}={value}" in summary
    assert all(item in summary for item in tried)
    assert out["summary"] == summary
    assert out["status"] == "escalated" and out["pending_action"] is None
    assert out["reply"] == ctx.pack.message("escalated")
    assert out["route"] == ["escalate_human"]


@pytest.mark.parametrize(
    ("reason", "fields", "detail"),
    [
        (
            "low_confidence",
            {"low_confidence_turns": 2, "intent": "other"},
            "did not understand the customer 2 times",
        ),
        ("human_only_intent", {"intent": "account_access"}, "(account_access)"),
        ("no_answer", {"intent": "faq"}, "no answer for faq"),
        ("negative_sentiment", {"intent": None}, "unhappy"),
        ("requested_human", {"intent": "human"}, "asked for a person"),
    ],
)
async def test_each_reason_has_its_detail(
    run: Any, state: Any, ctx: Any, reason: str, fields: dict[str, Any], detail: str
) -> None:
    out = await run(escalate_human, state("help", handoff_reason=reason, **fields), ctx)
    packet = out["escalation"]
    assert packet["reason"] == reason
    assert detail in packet["detail"]
    assert "Details collected: none" in packet["summary"]
    assert "Tried: nothing yet" in packet["summary"]


async def test_a_hand_off_without_a_reason_is_impossible(run: Any, state: Any, ctx: Any) -> None:
    with pytest.raises(ValueError, match="without a hand-off reason"):
        await run(escalate_human, state("agent", intent="human"), ctx)


async def test_first_reply_carries_the_greeting(run: Any, state: Any, ctx: Any) -> None:
    values = state("agent", greeted=False, handoff_reason="requested_human")
    out = await run(escalate_human, values, ctx)
    assert out["reply"].startswith(ctx.pack.spec.greeting)
    assert out["reply"].endswith(ctx.pack.message("escalated"))
    assert out["greeted"] is True


async def test_escalated_thread_gets_no_new_packet(run: Any, state: Any, ctx: Any) -> None:
    out = await run(escalate_human, state("hello?", status="escalated"), ctx)
    assert out == {
        "route": ["escalate_human"],
        "reply": "",
        "outcome": "with_person",
        "goes_to": "end",
    }


async def test_later_messages_are_kept_but_not_answered(chat: Any) -> None:
    conv = chat()
    handed = await conv.say("I want to talk to a human")
    packet = handed["escalation"]
    before = await conv.state()
    later = await conv.say("hello? are you there?")
    after = await conv.state()
    assert later["reply"] == "" and later["status"] == "escalated"
    assert later["route"] == ["classify_intent", "escalate_human"]
    assert after["escalation"] == packet, "the hand-off packet is not rewritten"
    assert after["turn"] == before["turn"] + 1
    new = after["messages"][len(before["messages"]) :]
    assert [type(m) for m in new] == [HumanMessage]
    assert new[0].content == "hello? are you there?"
    assert sum(isinstance(m, AIMessage) for m in after["messages"]) == 1
