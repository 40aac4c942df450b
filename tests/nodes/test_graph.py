"""The graph's routing functions and the state's reducers (and what they keep a checkpoint to)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END

from graphs.state import MAX_WINDOW, merge_dict, recent_messages
from graphs.support import (
    route_after_classify,
    route_after_collect,
    route_after_faq,
    route_after_resolve,
)
from nodes.common import MAX_TRIED

ROUTES: list[tuple[Callable[[Any], Awaitable[str]], tuple[str, ...]]] = [
    (route_after_classify, ("handle_faq", "collect_info", "escalate_human", "resolve")),
    (route_after_faq, ("collect_info", "escalate_human")),
    (route_after_collect, ("resolve", "escalate_human")),
    (route_after_resolve, ("escalate_human",)),
]
NODES = ("classify_intent", "handle_faq", "collect_info", "escalate_human", "resolve")


@pytest.mark.parametrize(("route", "allowed"), ROUTES, ids=lambda v: getattr(v, "__name__", ""))
def test_routes_follow_next_node(
    route: Callable[[Any], Awaitable[str]], allowed: tuple[str, ...]
) -> None:
    for target in allowed:
        assert asyncio.run(route({"next_node": target})) == target
    assert asyncio.run(route({"next_node": "end"})) == END


@pytest.mark.parametrize(("route", "allowed"), ROUTES, ids=lambda v: getattr(v, "__name__", ""))
def test_impossible_next_node_raises(
    route: Callable[[Any], Awaitable[str]], allowed: tuple[str, ...]
) -> None:
    impossible = [n for n in NODES if n not in allowed] + ["nowhere", None]
    for target in impossible:
        with pytest.raises(ValueError, match="impossible route"):
            asyncio.run(route({"next_node": target}))
    with pytest.raises(ValueError, match="impossible route"):
        asyncio.run(route({}))


def test_recent_messages_keeps_the_last_window() -> None:
    old = [HumanMessage(content=f"q{i}", id=f"h{i}") for i in range(MAX_WINDOW)]
    new = [AIMessage(content=f"a{i}", id=f"a{i}") for i in range(3)]
    merged = recent_messages(old, new)
    assert len(merged) == MAX_WINDOW
    assert [m.id for m in merged] == [m.id for m in (old + new)[-MAX_WINDOW:]]


def test_recent_messages_replaces_by_id_and_accepts_one_message() -> None:
    old = [HumanMessage(content="hi", id="1"), AIMessage(content="hello", id="2")]
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
