"""The per-turn model budget over HTTP with the real ``langchain-openai`` client (provider stubbed
with respx): every call caps its output tokens; past the calls or tokens a turn may spend, no
request is sent and the local mode answers; the next turn has a fresh budget."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import respx

from supportgraph.settings import Settings
from tests.conftest import stub_llm_settings
from tests.utils.chat import Customer
from tests.utils.openai import COMPLETIONS, ScriptedModel

QUESTION = "How long do I have to send something back?"
MODEL_ANSWER = "You have 30 days from delivery to return items."


def faq_model() -> ScriptedModel:
    """A model that classifies as FAQ and answers it (2 calls a FAQ turn)."""
    return ScriptedModel(
        {
            "Classification": [{"intent": "faq", "confidence": 0.92, "sentiment": "neutral"}],
            "FaqAnswer": [{"answerable": True, "answer": MODEL_ANSWER, "used_ids": []}],
        }
    )


@contextmanager
def stubbed(model: ScriptedModel, *, called: bool = True) -> Iterator[respx.Route]:
    """The provider's endpoint answered by ``model``; yields the route (its calls)."""
    with respx.mock(assert_all_mocked=True, assert_all_called=called) as mock:
        yield mock.post(COMPLETIONS).mock(side_effect=model)


@asynccontextmanager
async def customer_of(app_factory: Any, backend: dict[str, Any], **overrides: Any) -> Any:
    """A customer of an app whose model is the stub."""
    async with app_factory(**backend, **stub_llm_settings(**overrides)) as client:
        yield Customer(client)


def sent(route: respx.Route) -> list[dict[str, Any]]:
    """The JSON bodies the client sent to the provider."""
    return [json.loads(call.request.content) for call in route.calls]


async def test_default_budget_leaves_a_normal_turn_alone_and_caps_output_tokens(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    defaults = Settings.model_fields
    model = faq_model()
    with stubbed(model) as route:
        async with customer_of(app_factory, sqlite_backend) as customer:
            body = await customer.say(QUESTION)
    assert model.calls == ["Classification", "FaqAnswer"]
    assert body["usage"]["llm_calls"] == 2 and body["usage"]["degraded"] == 0
    assert body["reply"].endswith(MODEL_ANSWER)
    # langchain-openai sends max_tokens under OpenAI's current name.
    cap = defaults["llm_max_tokens"].default
    assert [b["max_completion_tokens"] for b in sent(route)] == [cap, cap]
    assert 2 < defaults["llm_max_calls_per_turn"].default <= 10


async def test_output_token_cap_is_a_setting(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    with stubbed(faq_model()) as route:
        async with customer_of(app_factory, sqlite_backend, llm_max_tokens=77) as customer:
            await customer.say(QUESTION)
    assert {b["max_completion_tokens"] for b in sent(route)} == {77}


async def test_past_the_call_budget_the_local_mode_answers(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    """Budget 1: the classification is the model's, the FAQ answer the local mode's."""
    model = faq_model()
    with stubbed(model) as route:
        async with customer_of(app_factory, sqlite_backend, llm_max_calls_per_turn=1) as customer:
            first = await customer.say(QUESTION)
            after_first = len(route.calls)
            second = await customer.say("And do you ship internationally?")
    assert model.calls[:after_first] == ["Classification"]
    assert first["usage"] == {**first["usage"], "llm_calls": 1, "degraded": 1}
    assert first["reply"] and MODEL_ANSWER not in first["reply"]
    assert first["citations"], "the local mode answered from the FAQ"
    assert "handle_faq" in first["route"]
    # The next turn has its budget again: one call, no more.
    assert len(route.calls) == after_first + 1
    assert second["usage"]["llm_calls"] == 1


async def test_past_the_token_budget_no_further_call_is_made(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    """The stub reports 50 + 10 tokens a call: a budget of 60 allows the first call only."""
    model = faq_model()
    with stubbed(model):
        async with customer_of(app_factory, sqlite_backend, llm_max_tokens_per_turn=60) as customer:
            body = await customer.say(QUESTION)
    assert model.calls == ["Classification"]
    assert body["usage"]["input_tokens"] + body["usage"]["output_tokens"] == 60
    assert body["usage"]["degraded"] == 1
    assert body["reply"] and body["citations"]


async def test_a_budget_of_zero_calls_never_reaches_the_model(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    with stubbed(faq_model(), called=False) as route:
        async with customer_of(app_factory, sqlite_backend, llm_max_calls_per_turn=0) as customer:
            body = await customer.say(QUESTION)
    assert route.calls.call_count == 0
    assert body["usage"]["llm_calls"] == 0 and body["usage"]["degraded"] >= 1
    assert body["reply"] and body["citations"]


def test_the_budget_is_carried_by_the_models_the_settings_build() -> None:
    from supportgraph import wiring
    from supportgraph.domain.llm import BudgetedChatOpenAI

    settings = Settings(
        _env_file=None,
        **stub_llm_settings(llm_max_calls_per_turn=3, llm_max_tokens_per_turn=900),
    )
    models = wiring.models(settings)
    assert models is not None
    for model in (models.classify, models.extract, models.answer):
        assert isinstance(model, BudgetedChatOpenAI)
        assert (model.max_calls_per_turn, model.max_tokens_per_turn) == (3, 900)
        assert model.max_tokens == settings.llm_max_tokens
