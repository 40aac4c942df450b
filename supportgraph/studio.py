"""The LangGraph Studio entry (``langgraph.json``): the support graph for the LangGraph server.

The server brings its own checkpointer and store and runs the graph with a JSON context, so
the graph is compiled without a checkpointer and each run gets a :class:`SupportContext` built
from the same ``SUPPORTGRAPH_*`` settings as the service, with requests and audit entries
written to the server's store: Studio users get what API users get.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from functools import lru_cache
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from checkpoints.langgraph_store import LangGraphStoreSink
from graphs.state import SupportState, TurnInput, TurnOutput
from graphs.support import build_graph
from nodes.context import SupportContext
from supportgraph import wiring
from supportgraph.settings import Settings


class ServerContext(TypedDict, total=False):
    """The run context the LangGraph server (Studio) sends: JSON, read by no node.

    LangGraph turns a dict context into an instance of a dataclass schema
    (``SupportContext(**context)``, which fails on every run), but passes it through unchanged
    for a ``TypedDict``; and the server can publish this schema (Studio's schemas endpoint
    fails on ``SupportContext``). It comes from ``typing_extensions`` because pydantic needs
    that on Python < 3.12.
    """


@lru_cache(maxsize=1)
def _context() -> SupportContext:
    return wiring.support_context(Settings())


def run_context(runtime: Runtime[Any]) -> SupportContext:
    """The context of one run: the settings' pack and models, the server's store."""
    context = _context()
    if runtime.store is None:
        return context
    sink = LangGraphStoreSink(runtime.store)
    return replace(context, requests=sink, audit=sink)


_graph = build_graph(ServerContext, provide_context=run_context).compile(name="support")


async def graph() -> CompiledStateGraph[SupportState, Any, TurnInput, TurnOutput]:
    """The graph, a factory the server calls per use.

    Loading the pack and fitting the local mode reads files and takes seconds: done inside a
    node it would stall the server's event loop (``langgraph dev`` rejects that with a
    ``BlockingError``), so it happens here, in a worker thread, before the first run.
    """
    await asyncio.to_thread(_context)
    return _graph
