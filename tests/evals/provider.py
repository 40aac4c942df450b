"""A stand-in for a real OpenAI-compatible provider: deterministic keyword rules, on loopback.

It plays the configured model in "live" runs (``--mode live``), so recording and replaying
can be tested without a key or a network. It knows nothing of eval cases: like a real
model it reads the conversation it is sent.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from evals.fake_openai import completion, customer_messages, requested_tool

API_KEY = "sk-upstream-test"
ORDER = re.compile(r"(?<!\d)(\d{4})(?!\d)")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
ARTICLE = re.compile(r"^\[([A-Za-z0-9_.-]+)\] (.+)$", re.MULTILINE)
RULES = (
    (r"\b(human|person|agent)\b", "human"),
    (r"\b(refund|return)\b", "refund_request"),
    (r"\b(where|status|shipped|track)\b", "order_status"),
    (r"\bship(ping)? to\b", "shipping_question"),
)


def classification(text: str) -> dict[str, Any]:
    """Intent, confidence and yes/no answer by keyword."""
    lowered = text.casefold()
    confirmation = "yes" if re.fullmatch(r"\W*(yes|yes please|go ahead)\W*", lowered) else "none"
    for pattern, intent in RULES:
        if re.search(pattern, lowered):
            return {"intent": intent, "confidence": 0.9, "confirmation": confirmation}
    return {"intent": "other", "confidence": 0.2, "confirmation": confirmation}


def slot_values(said: list[str]) -> dict[str, Any]:
    """The last order number and email in the conversation; a short last reply as reason."""
    text = "\n".join(said)
    orders, emails = ORDER.findall(text), EMAIL.findall(text)
    values: dict[str, Any] = {
        "order_number": orders[-1] if orders else None,
        "email": emails[-1] if emails else None,
    }
    last = said[-1] if said else ""
    if not ORDER.search(last) and not EMAIL.search(last) and len(last.split()) <= 6:
        values["reason"] = last
    return values


def faq_answer(body: dict[str, Any]) -> dict[str, Any]:
    """Answer from the first article of the prompt, citing it."""
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    found = ARTICLE.search(str(system))
    if found is None:
        return {"answerable": False, "answer": "", "used_ids": []}
    return {
        "answerable": True,
        "answer": f"From our help article {found.group(2)!r}: see the details there.",
        "used_ids": [found.group(1)],
    }


async def chat(request: Request) -> Response:
    """``POST /v1/chat/completions`` for structured-output requests."""
    if request.headers.get("authorization") != f"Bearer {API_KEY}":
        return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
    body = json.loads(await request.body())
    tool = requested_tool(body)
    said = customer_messages(body)
    if tool == "Classification":
        arguments = classification(said[-1] if said else "")
    elif tool == "SlotValues":
        arguments = slot_values(said)
    elif tool == "FaqAnswer":
        arguments = faq_answer(body)
    else:
        return JSONResponse({"error": {"message": f"unknown tool {tool}"}}, status_code=400)
    return JSONResponse(completion(body, tool, json.dumps(arguments)))


class RuleProvider:
    """The provider app served by uvicorn in a thread on a free loopback port."""

    def __init__(self) -> None:
        self.app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> RuleProvider:
        """Serve until :meth:`stop`."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        )
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving (the port then refuses connections)."""
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(timeout=10)
