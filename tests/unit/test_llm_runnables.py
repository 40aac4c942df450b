"""The structured-output runnable of a model and schema is built once and reused."""

from __future__ import annotations

from pydantic import BaseModel

from supportgraph import wiring
from supportgraph.domain import llm
from supportgraph.settings import Settings


class Answer(BaseModel):
    text: str


class Other(BaseModel):
    n: int


def _models() -> llm.Models:
    models = wiring.models(Settings(_env_file=None, openai_api_key="sk-test", secret_key="x" * 40))
    assert models is not None
    return models


def test_one_runnable_per_model_schema_and_method() -> None:
    a, b = _models(), _models()
    first = llm.structured_runnable(a.answer, Answer, "function_calling")
    assert llm.structured_runnable(a.answer, Answer, "function_calling") is first
    assert llm.structured_runnable(a.answer, Other, "function_calling") is not first
    assert llm.structured_runnable(a.answer, Answer, "json_schema") is not first
    assert llm.structured_runnable(b.answer, Answer, "function_calling") is not first


def test_the_cache_is_bounded() -> None:
    models = [_models() for _ in range(llm.RUNNABLE_CACHE + 5)]
    for m in models:
        llm.structured_runnable(m.answer, Answer, "function_calling")
    assert len(llm._runnables) <= llm.RUNNABLE_CACHE
