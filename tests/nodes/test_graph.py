"""The graph's edges and routing functions, and the state's reducers (and the checkpoint's size)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.graph import END
from langgraph.runtime import Runtime

from graphs.state import MAX_WINDOW, SupportState, merge_dict, recent_messages
from graphs.support import (
    END_TURN,
    build_graph,
    route_after_classify,
    route_after_collect,
    route_after_faq,
    route_after_resolve,
)
from nodes.common import MAX_TRIED

EDGES = {
    ("__start__", "classify_intent", False),
    ("classify_intent", "handle_faq", True),
    ("classify_intent", "collect_info", True),
    ("classify_intent", "escalate_human", True),
    ("classify_intent", "resolve", True),
    ("handle_faq", "collect_info", True),
    ("handle_faq", "escalate_human", True),
    ("handle_faq", "__end__", True),
    ("collect_info", "resolve", True),
    ("collect_info", "escalate_human", True),
    ("collect_info", "__end__", True),
    ("resolve", "escalate_human", True),
    ("resolve", "__end__", True),
    ("escalate_human", "__end__", False),
}
"""Every edge a turn can take (conditional or not)."""


def test_routes_name_langgraphs_end() -> None:
    assert END_TURN == END


def test_the_drawn_graph_shows_every_edge_a_turn_can_take() -> None:
    drawn = build_graph().compile().get_graph()
    assert {(e.source, e.target, e.conditional) for e in drawn.edges} == EDGES
    mermaid = drawn.draw_mermaid()
    for source, target, _ in EDGES:
        assert f"{source} -" in mermaid and target in mermaid


@pytest.mark.parametrize(
    ("values", "target"),
    [
        ({"status": "escalated", "intent": "order_status"}, "escalate_human"),
        ({"intent": "order_status", "handoff_reason": "negative_sentiment"}, "escalate_human"),
        ({"intent": "refund_request", "pending_action": {"intent": "refund_request"}}, "resolve"),
        ({"intent": "order_status", "status": "awaiting_info"}, "collect_info"),
        ({"intent": "support_ticket"}, "collect_info"),
        ({"intent": "shipping_question"}, "handle_faq"),
        ({"intent": "faq"}, "handle_faq"),
        ({"intent": "other"}, "handle_faq"),
    ],
)
async def test_after_classify_the_readings_choose_the_node(
    ctx: Any, values: SupportState, target: str
) -> None:
    assert await route_after_classify(values, Runtime(context=ctx)) == target


async def test_after_the_faq_an_answer_ends_and_a_miss_goes_on() -> None:
    assert await route_after_faq({"outcome": "answered"}) == END
    assert await route_after_faq({"outcome": "clarified"}) == END
    assert await route_after_faq({"outcome": "no_answer", "intent": "support_ticket"}) == (
        "collect_info"
    )
    miss: SupportState = {"outcome": "no_answer", "handoff_reason": "no_answer"}
    assert await route_after_faq(miss) == "escalate_human"


@pytest.mark.parametrize("values", [{}, {"outcome": "done"}, {"outcome": "asked"}])
async def test_an_impossible_faq_outcome_raises(values: SupportState) -> None:
    with pytest.raises(ValueError, match="impossible route"):
        await route_after_faq(values)


async def test_after_collecting_missing_slots_wait_and_none_missing_resolve() -> None:
    assert await route_after_collect({"missing": ["email"]}) == END
    assert await route_after_collect({"missing": []}) == "resolve"
    gave_up: SupportState = {"missing": ["email"], "handoff_reason": "repeated_failure"}
    assert await route_after_collect(gave_up) == "escalate_human"


async def test_after_resolve_only_a_hand_off_goes_on() -> None:
    assert await route_after_resolve({"outcome": "done"}) == END
    assert await route_after_resolve({"outcome": "not_found"}) == END
    failed: SupportState = {"outcome": "failed", "handoff_reason": "repeated_failure"}
    assert await route_after_resolve(failed) == "escalate_human"


def test_recent_messages_keeps_the_last_window() -> None:
    old = [HumanMessage(content=f"q{i}", id=f"h{i}") for i in range(MAX_WINDOW)]
    new = [AIMessage(content=f"a{i}", id=f"a{i}") for i in range(3)]
    merged = recent_messages(old, new)
    assert len(merged) == MAX_WINDOW
    assert [m.id for m in merged] == [m.id for m in (old + new)[-MAX_WINDOW:]]


def test_recent_messages_replaces_by_id_and_accepts_one_message() -> None:
    old: list[AnyMessage] = [HumanMessage(content="hi", id="1"), AIMessage(content="hello", id="2")]
    merged = recent_messages(old, AIMessage(content="hello again", id="2"))
    assert [(m.id, m.content) for m in merged] == [("1", "hi"), ("2", "hello again")]
    assert old[1].content == "hello", "the left list is not changed"


def test_merge_dict_semantics() -> None:
    left = {"order_number": "1042", "email": "a@example.com"}
    assert merge_dict(left, {"email": "b@example.com", "reason": "torn"}) == {
        "order_number": "1042",
        "email": "b@example.com",
        "reason": "torn",
    }
    assert merge_dict(left, {"email": None, "missing": None}) == {"order_number": "1042"}
    assert merge_dict(left, {}) == left
    assert merge_dict(left, None) == {}
    assert merge_dict(None, {"email": "c@example.com"}) == {"email": "c@example.com"}
    assert left == {"order_number": "1042", "email": "a@example.com"}, "left is not mutated"


async def test_long_conversation_keeps_the_checkpoint_bounded(chat: Any) -> None:
    conv = chat()
    questions = [
        "How many days do I have to return something?",
        "do you ship to Canada?",
        "how much does shipping cost?",
        "how do I reset my password?",
    ]
    sizes = {}
    for turn in range(1, 41):
        out = await conv.say(questions[turn % len(questions)])
        assert out["status"] == "active", out["route"]
        if turn in (20, 40):
            state = await conv.state()
            sizes[turn] = len(repr(state))
            assert len(state["messages"]) == MAX_WINDOW
            assert len(state["tried"]) <= MAX_TRIED
    assert state["turn"] == 40
    assert state["messages"][-1].content == out["reply"]
    assert state["messages"][-2].content == questions[40 % len(questions)]
    assert sizes[40] < sizes[20] * 1.5, sizes
