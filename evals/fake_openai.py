"""A fake OpenAI-compatible chat-completions server on loopback, for stubbed and recorded runs.

The real ``langchain-openai`` client talks to it over HTTP. Each eval case opens a
:class:`Channel` with its own API key, so cases run in parallel and are told apart by the
``Authorization`` header. A server under test that holds one key of its own (``--url``) is
told apart by the conversation instead: a request belongs to the case whose customer
messages so far it carries.

A channel answers in one of three ways:

- ``script``: the case's scripted answers for the current turn (or a fault to inject);
- ``replay``: the exchanges of a recording, in order, without any provider;
- ``proxy``: forward to a real provider with the real key and record every exchange.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from evals.cases import ClassifyAnswer, FaqReply, Fault, ModelScript

STUB_MODEL = "stub-model"
KEY_PREFIX = "sk-eval-"


@dataclass(frozen=True)
class Upstream:
    """A real provider a proxy channel forwards to."""

    base_url: str
    api_key: str
    timeout: float = 30.0


@dataclass
class Exchange:
    """One request and the answer it got, as stored in a recording."""

    turn: int
    tool: str
    request: dict[str, Any]
    status: int
    body: Any
    content_type: str = "application/json"

    def to_json(self) -> dict[str, Any]:
        """The exchange as a JSON object."""
        return {
            "turn": self.turn,
            "tool": self.tool,
            "request_sha256": request_digest(self.request),
            "request": self.request,
            "status": self.status,
            "content_type": self.content_type,
            "body": self.body,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Exchange:
        """Read an exchange back from a recording."""
        return cls(
            turn=int(data["turn"]),
            tool=str(data["tool"]),
            request=dict(data.get("request") or {}),
            status=int(data["status"]),
            body=data.get("body"),
            content_type=str(data.get("content_type") or "application/json"),
        )


@dataclass
class CallEvent:
    """A request a channel answered during a turn (what the harness reports per turn)."""

    tool: str
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    problem: str | None = None
    """Why the call does not follow the case (unscripted, not in the recording...)."""
    drift: bool = False
    """A replayed request differs from the recorded one (the prompt or conversation changed)."""


@dataclass
class Channel:
    """One case's line to the fake provider."""

    key: str
    case_id: str
    kind: Literal["script", "replay", "proxy"]
    scripts: list[ModelScript | None] = field(default_factory=list)
    recording: list[Exchange] = field(default_factory=list)
    turn: int = -1
    history: list[str] = field(default_factory=list)
    active: bool = False
    events: list[CallEvent] = field(default_factory=list)
    recorded: list[Exchange] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    """The messages of every request the case sent (JSON), for the canary scan."""
    _queues: dict[str, list[Any]] = field(default_factory=dict)
    _calls: list[Any] | None = None
    _replay_at: int = 0


def request_digest(body: dict[str, Any]) -> str:
    """A stable digest of what a request asks (messages and tools), to notice drift on replay."""
    wanted = {k: body.get(k) for k in ("messages", "tools", "tool_choice", "response_format")}
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()


def requested_tool(body: dict[str, Any]) -> str:
    """The structured-output schema a request asks for (``Classification``, ``SlotValues``...)."""
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return str(choice["function"].get("name", ""))
    tools = body.get("tools") or []
    if tools and isinstance(tools[0], dict):
        return str(tools[0].get("function", {}).get("name", ""))
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and isinstance(fmt.get("json_schema"), dict):
        return str(fmt["json_schema"].get("name", ""))
    return ""


def customer_messages(body: dict[str, Any]) -> list[str]:
    """The user messages of a request, in order."""
    out = []
    for message in body.get("messages") or []:
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            out.append(str(content))
    return out


def _tokens(text: str) -> int:
    """A deterministic token estimate (about four characters a token)."""
    return max(1, (len(text) + 3) // 4)


def completion(body: dict[str, Any], tool: str, arguments: str) -> dict[str, Any]:
    """A chat completion answering ``tool`` with ``arguments``, shaped as the request asked."""
    prompt = _tokens(json.dumps(body.get("messages") or [], ensure_ascii=False))
    done = _tokens(arguments)
    as_tool = bool(body.get("tools"))
    message: dict[str, Any] = {"role": "assistant", "content": None if as_tool else arguments}
    if as_tool:
        message["tool_calls"] = [
            {
                "id": "call_" + secrets.token_hex(6),
                "type": "function",
                "function": {"name": tool, "arguments": arguments},
            }
        ]
    return {
        "id": "chatcmpl-" + secrets.token_hex(8),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model") or STUB_MODEL),
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls" if as_tool else "stop",
                "message": message,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": done,
            "total_tokens": prompt + done,
        },
    }


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    headers = {"retry-after": "0"} if status == 429 else None
    return JSONResponse(
        {"error": {"message": message, "type": kind, "code": None}},
        status_code=status,
        headers=headers,
    )


class FakeOpenAI:
    """The server: an ASGI app run by uvicorn in a background thread on 127.0.0.1."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        hang_seconds: float = 3.0,
        upstream: Upstream | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.hang_seconds = hang_seconds
        self.upstream = upstream
        self._channels: dict[str, Channel] = {}
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
            ]
        )

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The OpenAI base URL clients use (``.../v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        """Bind the port and serve in a background thread; return once it accepts requests."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-openai", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the fake OpenAI server did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- channels ----------------------------------------------------------------------

    def open_channel(
        self,
        case_id: str,
        *,
        scripts: Sequence[ModelScript | None] = (),
        recording: Sequence[Exchange] | None = None,
        proxy: bool = False,
    ) -> Channel:
        """A channel with a fresh key, answering from scripts, a recording, or upstream."""
        if proxy and self.upstream is None:
            raise ValueError("a proxy channel needs an upstream provider")
        kind: Literal["script", "replay", "proxy"] = (
            "proxy" if proxy else "replay" if recording is not None else "script"
        )
        channel = Channel(
            key=KEY_PREFIX + secrets.token_urlsafe(12),
            case_id=case_id,
            kind=kind,
            scripts=list(scripts),
            recording=list(recording or []),
        )
        with self._lock:
            self._channels[channel.key] = channel
        return channel

    def close_channel(self, channel: Channel) -> None:
        """Forget a channel."""
        with self._lock:
            self._channels.pop(channel.key, None)

    @contextmanager
    def channel(self, case_id: str, **kwargs: Any) -> Iterator[Channel]:
        """``open_channel`` for the duration of a block."""
        channel = self.open_channel(case_id, **kwargs)
        try:
            yield channel
        finally:
            self.close_channel(channel)

    def begin_turn(self, channel: Channel, index: int, message: str) -> None:
        """The case is about to send turn ``index``: load its script, note the conversation."""
        with self._lock:
            channel.turn = index
            channel.history.append(message)
            channel.active = True
            channel.events = []
            script = channel.scripts[index] if index < len(channel.scripts) else None
            channel._queues = script.by_tool() if script is not None else {}
            channel._calls = list(script.calls) if script and script.calls is not None else None

    def end_turn(self, channel: Channel) -> list[CallEvent]:
        """The turn is over: the calls it made."""
        with self._lock:
            channel.active = False
            return list(channel.events)

    def _resolve(self, request: Request, body: dict[str, Any]) -> Channel | None:
        """The channel a request belongs to: by key, else by the conversation it carries."""
        auth = request.headers.get("authorization", "")
        key = auth.removeprefix("Bearer ").strip()
        with self._lock:
            if key in self._channels:
                return self._channels[key]
            said = customer_messages(body)
            active = [c for c in self._channels.values() if c.active]
            exact = [c for c in active if c.history == said]
            if len(exact) == 1:
                return exact[0]
            # A long conversation is cut to the graph's recent window: match the tail.
            tail = [c for c in active if said and c.history[-len(said) :] == said]
            return tail[0] if len(tail) == 1 else None

    # --- routes ------------------------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _models(self, request: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": STUB_MODEL, "object": "model", "owned_by": "eval"}]}
        )

    async def _chat(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "the request body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        if body.get("stream"):
            return _error(400, "streaming is not supported by the eval server")
        tool = requested_tool(body)
        channel = self._resolve(request, body)
        if channel is None:
            return _error(401, "no eval case has this key or conversation", "authentication_error")
        with self._lock:
            channel.sent.append(json.dumps(body.get("messages") or [], ensure_ascii=False))
        if channel.kind == "proxy":
            return await self._proxy(channel, tool, body)
        if channel.kind == "replay":
            return self._replay(channel, tool, body)
        return await self._script(channel, tool, body)

    async def _script(self, channel: Channel, tool: str, body: dict[str, Any]) -> Response:
        answer, problem = self._next_scripted(channel, tool)
        if problem is not None:
            self._event(channel, CallEvent(tool, 500, problem=problem))
            return _error(500, problem, "server_error")
        if isinstance(answer, Fault):
            return await self._fault(channel, tool, body, answer)
        arguments = json.dumps(_arguments(answer), ensure_ascii=False)
        payload = completion(body, tool, arguments)
        usage = payload["usage"]
        self._event(
            channel, CallEvent(tool, 200, usage["prompt_tokens"], usage["completion_tokens"])
        )
        return JSONResponse(payload)

    def _next_scripted(self, channel: Channel, tool: str) -> tuple[Any, str | None]:
        """The scripted answer for this call, or why there is none."""
        with self._lock:
            turn = channel.turn + 1
            if channel._calls is not None:
                if not channel._calls:
                    return None, f"turn {turn}: unscripted call to {tool} (all `calls` used)"
                call = channel._calls.pop(0)
                wanted = call.tool()
                if wanted is not None and wanted != tool:
                    return None, f"turn {turn}: the script expected a {wanted} call, got {tool}"
                return call.item(), None
            queue = channel._queues.get(tool)
            if not queue:
                return None, f"turn {turn}: unscripted call to {tool}"
            return (queue.pop(0) if len(queue) > 1 else queue[0]), None

    async def _fault(
        self, channel: Channel, tool: str, body: dict[str, Any], fault: Fault
    ) -> Response:
        """Answer with an injected failure."""
        self._event(channel, CallEvent(tool, fault.status if fault.fault == "http" else 200))
        if fault.fault == "http":
            return _error(fault.status, f"injected HTTP {fault.status}", "server_error")
        if fault.fault == "timeout":
            await asyncio.sleep(fault.seconds or self.hang_seconds)
            return _error(504, "injected timeout", "server_error")
        if fault.fault == "bad_body":
            return Response("<html><body>502 Bad Gateway</body></html>", media_type="text/html")
        if fault.fault == "malformed":
            return JSONResponse(completion(body, tool, '{"intent": "faq", "confidence": 0.9'))
        if fault.fault == "invalid":
            return JSONResponse(completion(body, tool, '{"unexpected": [1, 2, 3]}'))
        payload = completion(body, tool, "I'm not sure what you mean.")
        message = payload["choices"][0]["message"]
        message.pop("tool_calls", None)
        message["content"] = "I'm not sure what you mean."
        payload["choices"][0]["finish_reason"] = "stop"
        return JSONResponse(payload)

    def _replay(self, channel: Channel, tool: str, body: dict[str, Any]) -> Response:
        """Serve the next recorded exchange of this turn."""
        exchange, problem = self._next_recorded(channel, tool)
        if exchange is None:
            self._event(channel, CallEvent(tool, 500, problem=problem))
            return _error(500, problem or "not in the recording", "server_error")
        drift = request_digest(body) != request_digest(exchange.request)
        usage = exchange.body.get("usage", {}) if isinstance(exchange.body, dict) else {}
        self._event(
            channel,
            CallEvent(
                tool,
                exchange.status,
                int(usage.get("prompt_tokens") or 0),
                int(usage.get("completion_tokens") or 0),
                drift=drift,
            ),
        )
        return _stored_response(exchange)

    def _next_recorded(self, channel: Channel, tool: str) -> tuple[Exchange | None, str | None]:
        """The next recorded exchange of the current turn, or why there is none."""
        with self._lock:
            turn = channel.turn
            pending = [
                (i, x)
                for i, x in enumerate(channel.recording)
                if i >= channel._replay_at and x.turn == turn
            ]
            if not pending:
                return None, f"turn {turn + 1}: the recording has no more calls for this turn"
            index, exchange = pending[0]
            if exchange.tool != tool:
                return None, f"turn {turn + 1}: the recording has a {exchange.tool} call here"
            channel._replay_at = index + 1
            return exchange, None

    async def _proxy(self, channel: Channel, tool: str, body: dict[str, Any]) -> Response:
        """Forward to the real provider, record the exchange, and pass the answer on."""
        assert self.upstream is not None
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.upstream.timeout)
        url = self.upstream.base_url.rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {self.upstream.api_key}"}
        try:
            answer = await self._client.post(url, json=body, headers=headers)
            status, ctype = answer.status_code, answer.headers.get("content-type", "")
            try:
                stored: Any = answer.json()
            except ValueError:
                stored = answer.text
        except httpx.TimeoutException:
            status, ctype, stored = 504, "application/json", _timeout_body()
        except httpx.HTTPError as exc:
            status, ctype = 502, "application/json"
            stored = {"error": {"message": f"upstream unreachable: {type(exc).__name__}"}}
        exchange = Exchange(
            channel.turn, tool, body, status, stored, ctype.split(";")[0] or "application/json"
        )
        usage = stored.get("usage", {}) if isinstance(stored, dict) else {}
        with self._lock:
            channel.recorded.append(exchange)
        self._event(
            channel,
            CallEvent(
                tool,
                status,
                int(usage.get("prompt_tokens") or 0),
                int(usage.get("completion_tokens") or 0),
            ),
        )
        return _stored_response(exchange)

    def _event(self, channel: Channel, event: CallEvent) -> None:
        with self._lock:
            channel.events.append(event)


def _timeout_body() -> dict[str, Any]:
    return {"error": {"message": "upstream timed out", "type": "server_error"}}


def _stored_response(exchange: Exchange) -> Response:
    if isinstance(exchange.body, dict | list):
        return JSONResponse(exchange.body, status_code=exchange.status)
    return Response(str(exchange.body), exchange.status, media_type=exchange.content_type)


def _arguments(answer: Any) -> dict[str, Any]:
    """The tool arguments a scripted answer sends."""
    if isinstance(answer, ClassifyAnswer | FaqReply):
        return answer.model_dump()
    if isinstance(answer, dict):
        return {k: v for k, v in answer.items() if v is not None}
    raise TypeError(f"not a scripted answer: {answer!r}")
