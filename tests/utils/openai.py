"""Build OpenAI chat-completion responses, as an OpenAI-compatible server would send them."""

from __future__ import annotations

import json
from typing import Any

import httpx

BASE_URL = "http://llm.test/v1"
COMPLETIONS = f"{BASE_URL}/chat/completions"


def tool_call_response(
    name: str, arguments: dict[str, Any] | str, *, tokens: tuple[int, int] = (50, 10)
) -> dict[str, Any]:
    """A completion calling the tool ``name`` (how function-calling structured output answers)."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "stub-model",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": name, "arguments": args},
                        }
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1],
            "total_tokens": sum(tokens),
        },
    }


def requested_tool(request: httpx.Request) -> str:
    """The tool a structured-output request forces (Classification, SlotValues, FaqAnswer)."""
    body = json.loads(request.content)
    choice = body.get("tool_choice") or {}
    if isinstance(choice, dict) and choice.get("function"):
        return str(choice["function"]["name"])
    tools = body.get("tools") or []
    return str(tools[0]["function"]["name"]) if tools else ""


class ScriptedModel:
    """A respx side effect answering each structured-output request from a per-tool script.

    ``script`` maps a tool name to a list of answers used in order (the last one repeats);
    an answer is a dict of arguments, an ``httpx.Response``, an exception to raise, or a
    string sent as raw (possibly malformed) arguments.
    """

    def __init__(self, script: dict[str, list[Any]]) -> None:
        self.script = {k: list(v) for k, v in script.items()}
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        """Answer one request."""
        tool = requested_tool(request)
        self.calls.append(tool)
        answers = self.script.get(tool)
        if not answers:
            return httpx.Response(
                500, json={"error": {"message": f"no scripted answer for {tool}"}}
            )
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, json=tool_call_response(tool, answer))
