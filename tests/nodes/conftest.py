"""Fixtures for node tests: real contexts, a real SQLite store, a compiled graph, a stubbed model.

Fitting a pack's local mode takes seconds, so each (pack, mode) context is built once per
session with ``wiring.support_context`` and every test gets a copy wired to its own store.
The only stub is the LLM provider's HTTP endpoint (respx at ``COMPLETIONS``).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import respx
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END
from langgraph.runtime import Runtime

from checkpoints import open_persistence
from checkpoints.store import SqlStore
from graphs.state import TurnInput
from graphs.support import (
    build_graph,
    route_after_classify,
    route_after_collect,
    route_after_faq,
    route_after_resolve,
)
from nodes.classify import classify_intent
from nodes.collect import collect_info
from nodes.context import SupportContext
from nodes.faq import handle_faq
from nodes.resolve import resolve
from supportgraph import wiring
from supportgraph.domain.types import RequestRecord
from tests.conftest import ISP_PACK, STORE_PACK, make_settings, stub_llm_settings
from tests.utils.openai import COMPLETIONS, ScriptedModel

PACKS = {"store": STORE_PACK, "isp": ISP_PACK}


@pytest.fixture(scope="session")
def base_context() -> Callable[..., SupportContext]:
    """``base_context(pack, model=False)``: a context built once per session (no requests).

    The model variant shares the offline context's fitted local mode (it is the fallback).
    """
    cache: dict[tuple[str, bool], SupportContext] = {}

    def get(pack: str = "store", *, model: bool = False) -> SupportContext:
        key = (pack, model)
        if key not in cache:
            if model:
                settings = make_settings(pack_path=PACKS[pack], **stub_llm_settings())
                models = wiring.models(settings)
                assert models is not None
                cache[key] = dataclasses.replace(get(pack), models=models)
            else:
                settings = make_settings(pack_path=PACKS[pack])
                cache[key] = wiring.support_context(settings)
        return cache[key]

    return get


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    """Our real SQLite tables (sessions, transcript, requests) in a fresh file."""
    async with open_persistence(database_url=None, sqlite_path=tmp_path / "nodes.sqlite") as p:
        yield p.store


@pytest.fixture
def make_ctx(
    base_context: Callable[..., SupportContext], store: SqlStore
) -> Callable[..., SupportContext]:
    """``make_ctx(pack="store", model=False)``: a context writing requests to the test's store."""

    def make(pack: str = "store", *, model: bool = False) -> SupportContext:
        return dataclasses.replace(base_context(pack, model=model), requests=store, audit=store)

    return make


@pytest.fixture
def ctx(make_ctx: Callable[..., SupportContext]) -> SupportContext:
    """The store pack, offline (local mode), with a real request store."""
    return make_ctx("store")


@pytest.fixture
def model_ctx(make_ctx: Callable[..., SupportContext]) -> SupportContext:
    """The store pack with the model pointed at the respx-stubbed endpoint."""
    return make_ctx("store", model=True)


@pytest.fixture
def llm() -> Iterator[Callable[[dict[str, list[Any]]], ScriptedModel]]:
    """``llm(script)``: the provider's HTTP endpoint answers from a script; nothing else is open."""
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        route = mock.post(COMPLETIONS)

        def script(answers: dict[str, list[Any]]) -> ScriptedModel:
            model = ScriptedModel(answers)
            route.mock(side_effect=model)
            return model

        yield script


class Conversation:
    """One thread of the compiled graph (in-memory checkpointer) with a session row in the store."""

    def __init__(self, ctx: SupportContext, store: SqlStore) -> None:
        self.ctx = ctx
        self.store = store
        self.saver = InMemorySaver()
        self.graph = build_graph().compile(checkpointer=self.saver)
        self.session_id = "s-" + secrets.token_hex(6)
        self.config: RunnableConfig = {"configurable": {"thread_id": self.session_id}}
        self.started = False

    async def say(self, text: str) -> dict[str, Any]:
        """Run one customer turn; return the graph's output."""
        if not self.started:
            pack = self.ctx.pack
            await self.store.create_session(
                self.session_id, pack_name=pack.name, pack_version=pack.version
            )
            self.started = True
        turn: TurnInput = {"messages": [HumanMessage(content=text)], "session_id": self.session_id}
        return await self.graph.ainvoke(turn, config=self.config, context=self.ctx)

    async def state(self) -> dict[str, Any]:
        """The checkpointed state of the thread."""
        return dict((await self.graph.aget_state(self.config)).values)

    async def requests(self) -> list[RequestRecord]:
        """Requests this thread's actions wrote."""
        return await self.store.list_requests(self.session_id)


@pytest.fixture
def chat(make_ctx: Callable[..., SupportContext], store: SqlStore) -> Callable[..., Conversation]:
    """``chat(pack="store", model=False)``: a new conversation through the compiled graph."""

    def start(pack: str = "store", *, model: bool = False) -> Conversation:
        return Conversation(make_ctx(pack, model=model), store)

    return start


def turn_state(*texts: str, **fields: Any) -> dict[str, Any]:
    """A hand-built state: alternating customer / bot messages (customer first), plus fields."""
    messages = [
        (HumanMessage if i % 2 == 0 else AIMessage)(content=t, id=f"m{i}")
        for i, t in enumerate(texts)
    ]
    return {"session_id": "s-hand-built", "greeted": True, "messages": messages, **fields}


@pytest.fixture
def state() -> Callable[..., dict[str, Any]]:
    """``state(*texts, **fields)``: see :func:`turn_state`."""
    return turn_state


ROUTES: dict[Callable[..., Any], Callable[..., Any]] = {
    classify_intent: route_after_classify,
    handle_faq: route_after_faq,
    collect_info: route_after_collect,
    resolve: route_after_resolve,
}
"""The routing function that decides where the graph goes after each node."""


@pytest.fixture
def run() -> Callable[..., Any]:
    """``await run(node, state, ctx)``: call a node function as the graph would.

    The node's update comes back with ``goes_to``: where the graph's routing function sends
    the turn from the state the update leaves (``end`` for the end of the turn).
    """

    async def call(node: Callable[..., Any], values: dict[str, Any], ctx: SupportContext) -> Any:
        runtime = Runtime(context=ctx)
        out = await node(values, runtime)
        route = ROUTES.get(node)
        if route is None:
            return {**out, "goes_to": "end"}
        after = {**values, **out}
        if route is route_after_classify:
            target = await route(after, runtime)
        else:
            target = await route(after)
        return {**out, "goes_to": "end" if target == END else target}

    return call
