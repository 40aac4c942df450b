"""Checkpoints load as data: a stored blob naming an arbitrary class is never constructed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde.event_hooks import SerdeEvent, register_serde_event_listener
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from checkpoints import open_persistence
from tests.utils.chat import Customer
from tests.utils.orders import order

BUILT: list[str] = []


@dataclass
class Gadget:
    """Stands for any importable class an attacker names in a forged checkpoint."""

    payload: str

    def __post_init__(self) -> None:
        BUILT.append(self.payload)


def _persistence(backend: dict[str, Any]) -> Any:
    return open_persistence(
        database_url=backend.get("database_url"), sqlite_path=Path(backend["sqlite_path"])
    )


async def _store_and_load(saver: Any, values: dict[str, Any]) -> dict[str, Any]:
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = values
    checkpoint["channel_versions"] = dict.fromkeys(values, 1)
    config = {"configurable": {"thread_id": "forged", "checkpoint_ns": ""}}
    saved = await saver.aput(config, checkpoint, {}, checkpoint["channel_versions"])
    loaded = await saver.aget_tuple(saved)
    assert loaded is not None
    return loaded.checkpoint["channel_values"]


async def test_forged_class_in_a_checkpoint_is_not_constructed(backend: dict[str, Any]) -> None:
    gadget = Gadget("ran")
    BUILT.clear()
    async with _persistence(backend) as persistence:
        values = await _store_and_load(
            persistence.saver,
            {"gadget": gadget, "messages": [HumanMessage(content="hi", id="m1")]},
        )
    assert BUILT == [], "loading the checkpoint ran the forged class's code"
    assert not isinstance(values["gadget"], Gadget)
    assert values["messages"] == [HumanMessage(content="hi", id="m1")], "messages still load"


async def test_the_default_serializer_would_have_constructed_it(backend: dict[str, Any]) -> None:
    """The control: LangGraph's permissive default builds the class, so the test above can fail."""
    gadget = Gadget("ran")
    BUILT.clear()
    async with _persistence(backend) as persistence:
        persistence.saver.serde = JsonPlusSerializer(allowed_msgpack_modules=True)
        values = await _store_and_load(persistence.saver, {"gadget": gadget})
    assert isinstance(values["gadget"], Gadget)
    assert BUILT == ["ran"]


async def test_a_whole_conversation_needs_nothing_outside_the_allow_list(
    app_factory: Any, backend: dict[str, Any]
) -> None:
    events: list[SerdeEvent] = []
    unregister = register_serde_event_listener(events.append)
    shipped = order("shipped")
    try:
        async with app_factory(**backend) as client:
            customer = Customer(client)
            await customer.say("Where is my order?")
            await customer.say(shipped["order_id"])
            done = await customer.say(shipped["email"])
            session = await customer.transcript()
    finally:
        unregister()
    assert done["status"] == "resolved", done
    assert session["slots"]["order_number"] == shipped["order_id"]
    assert [e for e in events if "blocked" in e["kind"] or "unregistered" in e["kind"]] == []
