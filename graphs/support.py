"""The support graph: classify_intent -> handle_faq / collect_info / escalate_human / resolve.

``build_graph()`` returns the uncompiled builder; each edge (API, CLI, tests, evals, Studio)
compiles it with its own checkpointer. The routing functions below are the graph's policy:
each chooses the next node from typed readings the nodes wrote (the status, why the turn needs
a person, a pending confirmation, the topic's intent, the slots still missing, the FAQ's
outcome), never from a reply's text or a node's say-so.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal, Protocol, TypeVar

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from graphs.state import StateUpdate, SupportState, TurnInput, TurnOutput
from nodes.classify import classify_intent
from nodes.collect import collect_info
from nodes.context import SupportContext, deps
from nodes.escalate import escalate_human
from nodes.faq import handle_faq
from nodes.resolve import resolve
from supportgraph.domain import policy

R = TypeVar("R", covariant=True)


class Step(Protocol[R]):
    """A node, or a routing function that needs the context: ``(state, runtime)``."""

    __name__: str

    def __call__(self, state: SupportState, runtime: Runtime[SupportContext]) -> Awaitable[R]:
        """Run on the turn's state."""
        ...


ContextProvider = Callable[[Runtime[Any]], SupportContext]
"""Builds the nodes' context from a run's runtime (for a server that cannot pass one)."""

END_TURN: Final = "__end__"
"""LangGraph's ``END``, as the literal the routing functions' return types name."""

NODES: tuple[Step[StateUpdate], ...] = (
    classify_intent,
    handle_faq,
    collect_info,
    escalate_human,
    resolve,
)

# The routing functions are coroutines: LangGraph runs a plain function of an async graph in
# a worker thread, a coroutine in the event loop.


async def route_after_classify(
    state: SupportState, runtime: Runtime[SupportContext]
) -> Literal["handle_faq", "collect_info", "escalate_human", "resolve"]:
    """A person's conversation, or a turn that needs one, goes to escalate_human; an answer
    to a pending yes/no to resolve; a topic that collects details to collect_info; the rest
    to the FAQ."""
    if state.get("status") == "escalated" or state.get("handoff_reason") is not None:
        return "escalate_human"
    if state.get("pending_action") is not None:
        return "resolve"
    if policy.collects(deps(runtime).pack, state.get("intent")):
        return "collect_info"
    return "handle_faq"


async def route_after_faq(
    state: SupportState,
) -> Literal["collect_info", "escalate_human", "__end__"]:
    """An answer (or a request to rephrase) ends the turn; a miss goes to a person, or to
    collect a question for the team when the pack says so."""
    if state.get("handoff_reason") is not None:
        return "escalate_human"
    outcome = state.get("outcome")
    if outcome == "no_answer":
        return "collect_info"
    if outcome in ("answered", "clarified"):
        return END_TURN
    raise ValueError(f"impossible route after handle_faq: outcome {outcome!r}")


async def route_after_collect(
    state: SupportState,
) -> Literal["resolve", "escalate_human", "__end__"]:
    """All details collected go to resolve; too many invalid values to a person; otherwise
    the turn waits for the customer's answer."""
    if state.get("handoff_reason") is not None:
        return "escalate_human"
    if not state.get("missing"):
        return "resolve"
    return END_TURN


async def route_after_resolve(state: SupportState) -> Literal["escalate_human", "__end__"]:
    """Too many failed attempts go to a person; everything else ends the turn."""
    return "escalate_human" if state.get("handoff_reason") is not None else END_TURN


def build_graph(
    context_schema: type[Any] = SupportContext,
    *,
    provide_context: ContextProvider | None = None,
) -> StateGraph[SupportState, Any, TurnInput, TurnOutput]:
    """The uncompiled support graph.

    ``provide_context``: for a host that runs the graph with a context of its own schema
    (the LangGraph server's JSON); every node and routing function then gets the
    :class:`SupportContext` it returns instead.
    """
    builder = StateGraph(
        SupportState,
        context_schema=context_schema,
        input_schema=TurnInput,
        output_schema=TurnOutput,
    )
    for node in NODES:
        builder.add_node(node.__name__, _with_context(node, provide_context))
    builder.add_edge(START, "classify_intent")
    builder.add_conditional_edges(
        "classify_intent", _with_context(route_after_classify, provide_context)
    )
    builder.add_conditional_edges("handle_faq", route_after_faq)
    builder.add_conditional_edges("collect_info", route_after_collect)
    builder.add_conditional_edges("resolve", route_after_resolve)
    builder.add_edge("escalate_human", END)
    return builder


def _with_context(fn: Step[R], provide: ContextProvider | None) -> Step[R]:
    """``fn``, or ``fn`` run with the provided context (its name and annotations kept, which
    LangGraph reads for the node's name and the routing function's targets)."""
    if provide is None:
        return fn

    @functools.wraps(fn)
    async def with_context(state: SupportState, runtime: Runtime[Any]) -> R:
        return await fn(state, runtime.override(context=provide(runtime)))

    return with_context
