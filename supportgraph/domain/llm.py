"""The chat model: ``ChatOpenAI`` for any OpenAI-compatible endpoint, called for structured output.

A call that fails after the client's retries (HTTP 5xx, 429, timeout, malformed output) is
logged and returns ``None``; the node then uses the local mode for that turn. Every call is
counted with its tokens in the turn's usage.

Each turn has a model budget (calls and tokens, from the settings, carried by the model
object): once it is spent, :func:`structured` makes no further call in that turn and the
nodes answer from the local mode, so no conversation can make a turn arbitrarily expensive.
Every call also caps its output tokens (``max_tokens``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AnyMessage
from langchain_core.runnables import Runnable
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from supportgraph.domain.types import Usage

log = logging.getLogger("supportgraph.llm")

M = TypeVar("M", bound=BaseModel)

StructuredMethod = Literal["function_calling", "json_schema", "json_mode"]
"""How structured output is asked for (the provider's tools, its JSON schema, or JSON mode)."""


class BudgetedChatOpenAI(ChatOpenAI):
    """``ChatOpenAI`` carrying the per-turn model budget that :func:`structured` enforces."""

    max_calls_per_turn: int | None = None
    """Model calls one turn may make (``None``: no limit)."""
    max_tokens_per_turn: int | None = None
    """Input plus output tokens one turn may spend before its next call (``None``: no limit)."""


def over_budget(model: ChatOpenAI, usage: Usage) -> str | None:
    """Which of the turn's budgets ``usage`` has spent for ``model`` (``None``: neither)."""
    calls = getattr(model, "max_calls_per_turn", None)
    if calls is not None and usage["llm_calls"] >= calls:
        return "calls"
    tokens = getattr(model, "max_tokens_per_turn", None)
    if tokens is not None and usage["input_tokens"] + usage["output_tokens"] >= tokens:
        return "tokens"
    return None


@dataclass
class Models:
    """The chat models used per node (they may be the same model)."""

    classify: ChatOpenAI
    extract: ChatOpenAI
    answer: ChatOpenAI
    method: StructuredMethod = "function_calling"


Structured = Runnable[LanguageModelInput, dict[str, Any]]
"""A model call that answers the raw message, the parsed object and any parsing error."""

RUNNABLE_CACHE = 64
"""Structured-output runnables kept per (model, schema, method): a handful per process."""
_runnables: OrderedDict[tuple[int, type[BaseModel], str], tuple[ChatOpenAI, Structured]] = (
    OrderedDict()
)


def structured_runnable(
    model: ChatOpenAI, schema: type[BaseModel], method: StructuredMethod
) -> Structured:
    """``model.with_structured_output(schema)``, built once and reused.

    Building it turns the schema into an OpenAI tool definition (JSON schema generation,
    signature inspection), too much client-side CPU to spend on every call.
    """
    key = (id(model), schema, method)
    hit = _runnables.get(key)
    if hit is not None and hit[0] is model:
        _runnables.move_to_end(key)
        return hit[1]
    runnable = model.with_structured_output(schema, method=method, include_raw=True)
    _runnables[key] = (model, runnable)  # the model is kept, so its id is not reused
    while len(_runnables) > RUNNABLE_CACHE:
        _runnables.popitem(last=False)
    return runnable


async def structured(
    model: ChatOpenAI,
    schema: type[M],
    messages: list[AnyMessage],
    usage: Usage,
    *,
    purpose: str,
    method: StructuredMethod = "function_calling",
) -> M | None:
    """Ask ``model`` for a ``schema`` object; count the call; ``None`` on any failure.

    Past the turn's budget nothing is sent: the step counts as degraded and returns ``None``,
    so the node answers from the local mode.
    """
    spent = over_budget(model, usage)
    if spent is not None:
        usage["degraded"] += 1
        log.warning(
            "model budget of the turn spent; using local mode",
            extra={"purpose": purpose, "budget": spent, "llm_calls": usage["llm_calls"]},
        )
        return None
    usage["llm_calls"] += 1
    runnable = structured_runnable(model, schema, method)
    try:
        out: dict[str, Any] = await runnable.ainvoke(messages)
    except Exception as exc:  # noqa: BLE001 - any provider failure degrades to local mode
        usage["degraded"] += 1
        log.warning(
            "model call failed; using local mode",
            extra={"purpose": purpose, "error": type(exc).__name__, "detail": str(exc)[:200]},
        )
        return None
    raw = out.get("raw")
    meta = getattr(raw, "usage_metadata", None) or {}
    usage["input_tokens"] += int(meta.get("input_tokens", 0))
    usage["output_tokens"] += int(meta.get("output_tokens", 0))
    parsed = out.get("parsed")
    if out.get("parsing_error") is not None or not isinstance(parsed, schema):
        usage["degraded"] += 1
        log.warning(
            "model output malformed; using local mode",
            extra={"purpose": purpose, "error": type(out.get("parsing_error")).__name__},
        )
        return None
    return parsed
