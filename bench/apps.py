"""Baseline servers for the benchmarks (bench only; never part of the service).

- ``stock_app``: the same support graph on stock LangGraph persistence: the whole transcript
  in ``add_messages`` state, ``AsyncSqliteSaver`` / ``AsyncPostgresSaver`` opened with
  ``from_conn_string`` and default settings, LangGraph's default durability, no transcript
  table and no session locks.
- ``bare_app``: a trivial 2-node graph (``a -> b``, two integers of state) behind the same
  kind of FastAPI route, on *our* checkpointer set-up (``open_persistence``) and durability:
  the floor a turn cannot go below.

Both answer ``POST /api/support/chat`` with the service's JSON shape and have ``GET /health``.
Configuration comes from the ``SUPPORTGRAPH_*`` environment, as for the service.
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, get_args, get_type_hints

from fastapi import FastAPI
from langchain_core.messages import AnyMessage, HumanMessage
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from checkpoints import open_persistence
from graphs import support
from graphs.state import SupportState, TurnInput, TurnOutput
from nodes.context import SupportContext
from supportgraph import wiring
from supportgraph.settings import Settings


class ChatIn(BaseModel):
    """The service's chat request."""

    message: str = Field(min_length=1, max_length=4000)
    session_id: str | None = None


def _stock_state() -> type:
    """``SupportState`` with the whole transcript in ``add_messages`` (no window)."""
    hints = get_type_hints(SupportState, include_extras=True)
    hints["messages"] = Annotated[list[AnyMessage], add_messages]
    # Built at run time from SupportState's own hints: a class statement cannot override
    # the messages key, and mypy reads only literal TypedDict() calls.
    return TypedDict("StockState", hints, total=False)  # type: ignore[operator]


def stock_builder() -> StateGraph[Any, SupportContext, TurnInput, TurnOutput]:
    """The support graph's nodes and routing on the stock state."""
    state = _stock_state()
    builder: StateGraph[Any, SupportContext, TurnInput, TurnOutput] = StateGraph(
        state, context_schema=SupportContext, input_schema=TurnInput, output_schema=TurnOutput
    )
    for node in support.NODES:
        # Each node reads the stock state (its annotation names the windowed one).
        builder.add_node(node.__name__, node, input_schema=state)
    builder.add_edge(START, "classify_intent")
    for source, route in (
        ("classify_intent", support.route_after_classify),
        ("handle_faq", support.route_after_faq),
        ("collect_info", support.route_after_collect),
        ("resolve", support.route_after_resolve),
    ):
        builder.add_conditional_edges(source, _plain(route), _targets(route))
    builder.add_edge("escalate_human", END)
    return builder


def _plain(route: Callable[..., Awaitable[str]]) -> Callable[..., Awaitable[str]]:
    """The routing function without its annotations (which name the windowed state)."""

    async def plain(state: Any, runtime: Runtime[SupportContext]) -> str:
        if "runtime" in inspect.signature(route).parameters:
            return await route(state, runtime)
        return await route(state)

    return plain


def _targets(route: Callable[..., Any]) -> list[str]:
    """The node names a routing function may return (its ``Literal`` return type)."""
    return list(get_args(get_type_hints(route)["return"]))


@asynccontextmanager
async def stock_saver(settings: Settings) -> AsyncIterator[Any]:
    """A stock saver, opened as LangGraph's documentation shows, with default settings."""
    if settings.database_url:
        async with AsyncPostgresSaver.from_conn_string(settings.database_url) as saver:
            await saver.setup()
            yield saver
    else:
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        async with AsyncSqliteSaver.from_conn_string(str(settings.sqlite_path)) as saver:
            await saver.setup()
            yield saver


def _app(lifespan: Any, turn: Any) -> FastAPI:
    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    @app.post("/api/support/chat")
    async def chat(body: ChatIn) -> dict[str, Any]:
        session_id = body.session_id or secrets.token_urlsafe(24)
        out = await turn(app, session_id, body.message)
        return {
            "session_id": session_id,
            "reply": str(out.get("reply") or ""),
            "status": out.get("status"),
            "usage": out.get("usage") or {},
        }

    return app


def stock_app() -> FastAPI:
    """The support graph on stock LangGraph persistence."""
    settings = Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with stock_saver(settings) as saver:
            app.state.context = wiring.support_context(settings)
            app.state.graph = stock_builder().compile(checkpointer=saver)
            yield

    async def turn(app: FastAPI, session_id: str, message: str) -> dict[str, Any]:
        return await app.state.graph.ainvoke(
            {"messages": [HumanMessage(content=message)], "session_id": session_id},
            config={"configurable": {"thread_id": session_id}},
            context=app.state.context,
        )

    return _app(lifespan, turn)


class BareState(TypedDict, total=False):
    """Two integers: a turn counter and the value the second node writes."""

    turn: int
    reply: int


def _first(state: BareState) -> dict[str, int]:
    return {"turn": state.get("turn", 0) + 1}


def _second(state: BareState) -> dict[str, int]:
    return {"reply": state["turn"]}


def bare_app() -> FastAPI:
    """A trivial 2-node graph on the service's own checkpointer set-up and durability."""
    settings = Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_persistence(
            database_url=settings.database_url,
            sqlite_path=settings.sqlite_path,
            pool_min_size=settings.pool_min_size,
            pool_max_size=settings.pool_max_size,
        ) as persistence:
            builder = StateGraph(BareState)
            builder.add_node("first", _first)
            builder.add_node("second", _second)
            builder.add_edge(START, "first")
            builder.add_edge("first", "second")
            builder.add_edge("second", END)
            app.state.graph = builder.compile(checkpointer=persistence.saver)
            yield

    async def turn(app: FastAPI, session_id: str, message: str) -> dict[str, Any]:
        out = await app.state.graph.ainvoke(
            {"reply": 0},
            config={"configurable": {"thread_id": session_id}},
            durability=settings.durability,
        )
        return {"reply": f"turn {out['reply']}", "status": "active"}

    return _app(lifespan, turn)
