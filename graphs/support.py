"""The support graph: classify_intent -> handle_faq / collect_info / escalate_human / resolve.

``build_graph()`` returns the uncompiled builder; each edge (API, CLI, tests, evals) compiles
it with its own checkpointer. Routing functions are pure and read typed state only.
"""

from __future__ import annotations

from typing import Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from graphs.state import SupportState, TurnInput, TurnOutput
from nodes.classify import classify_intent
from nodes.collect import collect_info
from nodes.context import ServerContext, SupportContext, load_default_context
from nodes.escalate import escalate_human
from nodes.faq import handle_faq
from nodes.resolve import resolve

NODES = ("classify_intent", "handle_faq", "collect_info", "escalate_human", "resolve")


# The routing functions are coroutines: LangGraph runs a plain function of an async graph in
# a worker thread (a thread hop per edge, two per FAQ turn), a coroutine in the event loop.


def _next(state: SupportState, allowed: tuple[str, ...]) -> str:
    target = state.get("next_node")
    if target == "end":
        return END
    if target not in allowed:
        raise ValueError(f"impossible route: next_node={target!r}, expected one of {allowed}")
    return str(target)


async def route_after_classify(
    state: SupportState,
) -> Literal["handle_faq", "collect_info", "escalate_human", "resolve"]:
    """Where a classified turn goes."""
    return _next(state, ("handle_faq", "collect_info", "escalate_human", "resolve"))  # type: ignore[return-value]


async def route_after_faq(
    state: SupportState,
) -> Literal["collect_info", "escalate_human", "__end__"]:
    """An answered FAQ ends the turn; a miss goes on by the pack's rule."""
    return _next(state, ("collect_info", "escalate_human"))  # type: ignore[return-value]


async def route_after_collect(
    state: SupportState,
) -> Literal["resolve", "escalate_human", "__end__"]:
    """Complete slots go to resolve; otherwise the turn waits for the customer."""
    return _next(state, ("resolve", "escalate_human"))  # type: ignore[return-value]


async def route_after_resolve(state: SupportState) -> Literal["escalate_human", "__end__"]:
    """Repeated failures go to a person; everything else ends the turn."""
    return _next(state, ("escalate_human",))  # type: ignore[return-value]


def build_graph(
    context_schema: type[SupportContext] | type[ServerContext] = SupportContext,
) -> StateGraph[SupportState, Any, TurnInput, TurnOutput]:
    """The uncompiled support graph (``ServerContext`` only for the LangGraph server)."""
    builder = StateGraph(
        SupportState,
        context_schema=context_schema,
        input_schema=TurnInput,
        output_schema=TurnOutput,
    )
    builder.add_node(classify_intent)
    builder.add_node(handle_faq)
    builder.add_node(collect_info)
    builder.add_node(escalate_human)
    builder.add_node(resolve)
    builder.add_edge(START, "classify_intent")
    builder.add_conditional_edges("classify_intent", route_after_classify)
    builder.add_conditional_edges("handle_faq", route_after_faq)
    builder.add_conditional_edges("collect_info", route_after_collect)
    builder.add_conditional_edges("resolve", route_after_resolve)
    builder.add_edge("escalate_human", END)
    return builder


_studio_graph = build_graph(context_schema=ServerContext).compile(name="support")


async def graph() -> CompiledStateGraph[SupportState, Any, TurnInput, TurnOutput]:
    """The graph for LangGraph Studio (``langgraph.json``), a factory the server calls per use.

    No checkpointer (the LangGraph server brings its own) and the server's JSON context: the
    nodes' ``deps()`` use the environment's default context, which is loaded here, off the
    event loop, before the first run needs it.
    """
    await load_default_context()
    return _studio_graph
