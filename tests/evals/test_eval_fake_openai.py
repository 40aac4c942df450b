"""The fake OpenAI-compatible server on its own: keys, conversations, scripts, faults, replay."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from evals.cases import ModelScript
from evals.fake_openai import Exchange, FakeOpenAI


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    """A fake server with a short hang for timeouts."""
    with FakeOpenAI(hang_seconds=0.2) as fake:
        yield fake


def request(tool: str, *said: str) -> dict[str, Any]:
    """A function-calling structured-output request as langchain-openai sends it."""
    return {
        "model": "m",
        "messages": [{"role": "system", "content": "sys"}]
        + [{"role": "user", "content": s} for s in said],
        "tools": [{"type": "function", "function": {"name": tool, "parameters": {}}}],
        "tool_choice": {"type": "function", "function": {"name": tool}},
    }


def post(server: FakeOpenAI, body: dict[str, Any], key: str = "sk-other") -> httpx.Response:
    """POST a chat completion."""
    return httpx.post(
        f"{server.base_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=5,
    )


def script(**steps: Any) -> ModelScript:
    """A one-turn script."""
    return ModelScript.model_validate(steps)


def test_a_key_picks_the_case_and_its_script(server: FakeOpenAI) -> None:
    one = server.open_channel("one", scripts=[script(classify="faq")])
    two = server.open_channel("two", scripts=[script(classify="human")])
    for channel in (one, two):
        server.begin_turn(channel, 0, "hello")
    answer = post(server, request("Classification", "hello"), key=two.key).json()
    call = answer["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call["name"] == "Classification" and '"intent": "human"' in call["arguments"]
    assert answer["usage"]["prompt_tokens"] > 0
    events = server.end_turn(two)
    assert [(e.tool, e.status, e.problem) for e in events] == [("Classification", 200, None)]


def test_without_a_known_key_the_conversation_picks_the_case(server: FakeOpenAI) -> None:
    a = server.open_channel("a", scripts=[script(classify="faq"), script(classify="human")])
    b = server.open_channel("b", scripts=[script(classify="other"), script(classify="faq")])
    server.begin_turn(a, 0, "where is my order")
    server.begin_turn(b, 0, "hello")
    server.end_turn(b)
    server.begin_turn(b, 1, "where is my order")
    # Both have just said the same thing; their histories differ.
    first = post(server, request("Classification", "where is my order")).json()
    second = post(server, request("Classification", "hello", "where is my order")).json()
    for answer in (first, second):
        arguments = answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        assert '"intent": "faq"' in arguments
    assert [e.tool for e in server.end_turn(a)] == ["Classification"]
    assert [e.tool for e in server.end_turn(b)] == ["Classification"]
    unknown = post(server, request("Classification", "nobody said this"))
    assert unknown.status_code == 401


def test_unscripted_calls_are_reported(server: FakeOpenAI) -> None:
    channel = server.open_channel("c", scripts=[script(classify="faq")])
    server.begin_turn(channel, 0, "hi")
    answer = post(server, request("SlotValues", "hi"), key=channel.key)
    assert answer.status_code == 500
    (event,) = server.end_turn(channel)
    assert event.problem == "turn 1: unscripted call to SlotValues"


@pytest.mark.parametrize(
    ("fault", "status", "check"),
    [
        ({"fault": "http", "status": 429}, 429, lambda r: r.headers["retry-after"] == "0"),
        ({"fault": "timeout"}, 504, lambda r: r.elapsed.total_seconds() >= 0.2),
        ({"fault": "bad_body"}, 200, lambda r: r.text.startswith("<html>")),
        ({"fault": "malformed"}, 200, lambda r: "0.9" in r.text),
        ({"fault": "no_tool_call"}, 200, lambda r: "tool_calls" not in r.text),
    ],
)
def test_faults(server: FakeOpenAI, fault: dict[str, Any], status: int, check: Any) -> None:
    channel = server.open_channel("f", scripts=[script(classify=[fault, "faq"])])
    server.begin_turn(channel, 0, "hi")
    first = post(server, request("Classification", "hi"), key=channel.key)
    assert first.status_code == status and check(first)
    second = post(server, request("Classification", "hi"), key=channel.key)
    assert second.status_code == 200 and "tool_calls" in second.text


def test_replay_serves_the_recording_in_order(server: FakeOpenAI) -> None:
    body = request("Classification", "hi")
    recorded = [
        Exchange(0, "Classification", body, 200, {"id": "x", "choices": [], "usage": {}}),
        Exchange(0, "FaqAnswer", body, 503, {"error": {"message": "busy"}}),
    ]
    channel = server.open_channel("r", recording=recorded)
    server.begin_turn(channel, 0, "hi")
    assert post(server, body, key=channel.key).json()["id"] == "x"
    wrong = post(server, request("SlotValues", "hi"), key=channel.key)
    assert wrong.status_code == 500
    busy = post(server, request("FaqAnswer", "hi", "changed"), key=channel.key)
    assert busy.status_code == 503
    events = server.end_turn(channel)
    assert [e.problem is not None for e in events] == [False, True, False]
    assert events[2].drift, "a request that differs from the recorded one is noticed"
