"""A stub OpenAI-compatible chat-completions endpoint that answers at once (bench only).

The service's real ``langchain-openai`` client talks to it over loopback. It answers the
structured-output tool the request forces (``Classification``: an FAQ question;
``FaqAnswer``: a short answer; anything else: no values) and reports prompt tokens as
characters / 4 of what it was sent, so ``usage.input_tokens`` measures the model context.

``STUB_LLM_DELAY`` (seconds, default 0) makes every call wait that long before it answers, as
a slow model would; the wait is an asyncio sleep, so one process serves many calls at once.

    STUB_LLM_DELAY=0.5 uvicorn bench.stub_llm:app --port 8999
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ANSWERS: dict[str, dict[str, Any]] = {
    "Classification": {
        "intent": "faq",
        "confidence": 0.9,
        "sentiment": "neutral",
        "confirmation": "none",
    },
    "FaqAnswer": {
        "answerable": True,
        "answer": "Standard shipping is free on orders over $50; otherwise it costs $4.95.",
        "used_ids": [],
    },
}


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Characters / 4 of every message's text (about one token per 4 characters)."""
    chars = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            chars += sum(len(str(part.get("text", ""))) for part in content)
        else:
            chars += len(str(content or ""))
    return math.ceil(chars / 4)


def forced_tool(body: dict[str, Any]) -> str:
    """The tool a structured-output request forces."""
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("function"):
        return str(choice["function"]["name"])
    tools = body.get("tools") or []
    return str(tools[0]["function"]["name"]) if tools else ""


def completion(body: dict[str, Any]) -> dict[str, Any]:
    """The chat completion answering ``body``."""
    tool = forced_tool(body)
    args = ANSWERS.get(tool, {})
    tokens = prompt_tokens(body.get("messages") or [])
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 1700000000,
        "model": body.get("model", "stub-model"),
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_stub",
                            "type": "function",
                            "function": {"name": tool, "arguments": json.dumps(args)},
                        }
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": tokens, "completion_tokens": 20, "total_tokens": tokens + 20},
    }


async def chat_completions(request: Request) -> JSONResponse:
    """``POST /v1/chat/completions``, after the app's delay."""
    body = json.loads(await request.body())
    delay: float = request.app.state.delay
    if delay > 0:
        await asyncio.sleep(delay)
    return JSONResponse(completion(body))


async def health(_: Request) -> JSONResponse:
    """``GET /health``."""
    return JSONResponse({"status": "healthy"})


def create_app(delay: float = 0.0) -> Starlette:
    """The stub endpoint; every completion waits ``delay`` seconds before it answers."""
    if delay < 0:
        raise ValueError(f"stub model delay must be >= 0 seconds, got {delay}")
    out = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/health", health),
        ]
    )
    out.state.delay = delay
    return out


app = create_app(float(os.environ.get("STUB_LLM_DELAY", "0")))
