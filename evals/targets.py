"""Where a case's conversation runs: in this process (a fresh SQLite per case) or over HTTP.

In-process, each case gets its own SQLite file, checkpointer and :class:`SupportService`
(the same pieces the API wires up), with the pack and its fitted local mode shared between
cases. Over HTTP (``--url``) the harness is a chat client of a running ``supportgraph serve``;
requests the actions write are not visible there, so checks on them are skipped.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import httpx

from checkpoints import open_persistence
from checkpoints.store import SqlStore
from graphs.support import build_graph
from nodes.context import SupportContext
from supportgraph import wiring
from supportgraph.app.graph import SupportGraph
from supportgraph.app.handoff import HandoffService
from supportgraph.app.service import SupportService
from supportgraph.domain.types import Usage
from supportgraph.settings import Settings


@dataclass
class Observed:
    """What a turn produced, as the harness saw it."""

    reply: str
    intent: str | None
    status: str
    route: list[str]
    citations: list[str]
    slots: dict[str, str]
    escalation: dict[str, Any] | None
    usage: Usage
    latency_ms: float
    requests: list[dict[str, Any]] | None = None
    """Requests the conversation's actions wrote so far (``None``: not visible here)."""
    audit: list[dict[str, Any]] | None = None
    """Audit entries of the conversation so far (``None``: not visible here)."""
    model_calls: list[str] = field(default_factory=list)
    """The structured-output tools the model was asked for, in order (stubbed runs)."""
    problems: list[str] = field(default_factory=list)
    """Calls the fake provider could not answer as the case says (unscripted, not recorded)."""
    drift: int = 0
    """Replayed requests that differ from the recorded ones."""

    def to_json(self) -> dict[str, Any]:
        """The observation as JSON (for reports)."""
        return {
            "reply": self.reply,
            "intent": self.intent,
            "status": self.status,
            "route": self.route,
            "citations": self.citations,
            "slots": self.slots,
            "escalation": _escalation_json(self.escalation),
            "usage": self.usage,
            "latency_ms": round(self.latency_ms, 1),
            "requests": self.requests,
            "audit": self.audit,
            "model_calls": self.model_calls,
            "problems": self.problems,
            "drift": self.drift,
        }


def _escalation_json(escalation: dict[str, Any] | None) -> dict[str, Any] | None:
    if escalation is None:
        return None
    return {k: v for k, v in escalation.items() if k != "at"}


class Conversation(Protocol):
    """One case's conversation with the service."""

    async def send(self, message: str) -> Observed:
        """Send a customer message and observe the turn."""
        ...

    async def plant_notes(self, notes: list[str]) -> bool:
        """Add agents' internal notes to the session before it starts; False if impossible."""
        ...

    async def artifacts(self) -> list[tuple[str, str]]:
        """Every place the conversation left text a customer (or a log) may see: (where, text)."""
        ...


class Target(Protocol):
    """Opens a fresh conversation for a case."""

    name: str

    def conversation(
        self, case_id: str, pack_path: Path, model: dict[str, Any] | None
    ) -> AbstractAsyncContextManager[Conversation]:
        """A conversation for one case; ``model`` holds the case's model settings (or None)."""
        ...

    async def aclose(self) -> None:
        """Release what the target holds."""
        ...


class InProcess:
    """Conversations through :class:`SupportService` in this process, one SQLite per case."""

    name = "in-process"

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self._contexts: dict[Path, SupportContext] = {}
        self._building: dict[Path, asyncio.Lock] = {}

    async def context(self, pack_path: Path) -> SupportContext:
        """The pack's context without a model: loaded and fitted once, shared by cases."""
        if pack_path not in self._contexts:
            lock = self._building.setdefault(pack_path, asyncio.Lock())
            async with lock:
                if pack_path not in self._contexts:
                    offline = self.settings.model_copy(
                        update={"pack_path": pack_path, "openai_api_key": None}
                    )
                    built = await asyncio.to_thread(wiring.support_context, offline)
                    self._contexts[pack_path] = built
        return self._contexts[pack_path]

    @asynccontextmanager
    async def conversation(
        self, case_id: str, pack_path: Path, model: dict[str, Any] | None
    ) -> AsyncIterator[InProcessConversation]:
        """A fresh service (its own database file) for one case."""
        base = await self.context(pack_path)
        models = (
            wiring.models(self.settings.model_copy(update=model)) if model is not None else None
        )
        path = self.workdir / f"{case_id}-{secrets.token_hex(4)}.sqlite"
        try:
            async with open_persistence(database_url=None, sqlite_path=path) as persistence:
                store = persistence.store
                service = SupportService(
                    graph=SupportGraph(build_graph().compile(checkpointer=persistence.saver)),
                    context=replace(base, models=models, requests=store, audit=store),
                    store=store,
                    retention=persistence.retention,
                    durability=self.settings.durability,
                )
                yield InProcessConversation(service, persistence.store)
        finally:
            for leftover in path.parent.glob(path.name + "*"):
                leftover.unlink(missing_ok=True)

    async def aclose(self) -> None:
        """Nothing to release: each conversation closes its own database."""


class InProcessConversation:
    """A conversation with an in-process service."""

    def __init__(self, service: SupportService, store: SqlStore) -> None:
        self.service = service
        self.store = store
        self.session_id: str | None = None

    async def plant_notes(self, notes: list[str]) -> bool:
        """Start the session and add the notes as an agent would (the hand-off service)."""
        if self.session_id is None:
            self.session_id = await self.service.new_session()
        handoff = HandoffService(self.service)
        for note in notes:
            await handoff.note(self.session_id, agent="agent-eval", text=note)
        return True

    async def artifacts(self) -> list[tuple[str, str]]:
        """The session as the API returns it, the customer's events, every checkpoint, the
        requests and the audit entries of the conversation."""
        if self.session_id is None:
            return []
        sid = self.session_id
        view = await self.service.view(sid)
        places = [(f"transcript #{m.id} ({m.role})", m.content) for m in view.messages]
        places.append(("session slots (API)", _dump(view.slots)))
        places.append(("hand-off packet (API)", _dump(view.escalation)))
        events = await self.store.events_after(0, session_id=sid, audiences=("all",), limit=10_000)
        places += [(f"event #{e.id} ({e.kind}, customer stream)", _dump(e.data)) for e in events]
        n = 0
        async for snapshot in self.service.graph.history(sid):
            n += 1
            places.append((f"checkpoint {n} (newest first)", _dump(snapshot.values)))
        requests = await self.store.list_requests(sid)
        places += [(f"request {r['id']}", _dump(r)) for r in requests]
        places += [(f"audit entry {a['id']}", _dump(a)) for a in await self.store.list_audit(sid)]
        return places

    async def send(self, message: str) -> Observed:
        """Run one turn and read the requests the conversation wrote."""
        if self.session_id is None:
            self.session_id = await self.service.new_session()
        started = time.perf_counter()
        result = await self.service.turn(self.session_id, message)
        latency = (time.perf_counter() - started) * 1000
        requests = await self.store.list_requests(self.session_id)
        audit = await self.store.list_audit(self.session_id)
        return Observed(
            reply=result.reply,
            intent=result.intent,
            status=result.status,
            route=list(result.route),
            citations=[c["id"] for c in result.citations],
            slots=dict(result.slots),
            escalation=dict(result.escalation) if result.escalation else None,
            usage=result.usage,
            latency_ms=latency,
            requests=[
                {"id": r["id"], "kind": r["kind"], "data": r["data"], "status": r["status"]}
                for r in requests
            ],
            audit=[{k: a[k] for k in ("action", "kind", "outcome", "reason")} for a in audit],
        )


def _dump(value: Any) -> str:
    """JSON of anything a scan reads (messages and other objects as their text)."""
    return json.dumps(value, default=str, ensure_ascii=False)


class OverHttp:
    """Conversations with a running server through its public API."""

    name = "url"

    def __init__(self, url: str, *, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def conversation(
        self, case_id: str, pack_path: Path, model: dict[str, Any] | None
    ) -> AsyncIterator[HttpConversation]:
        """A new session on the server (it starts with the first message)."""
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.url, timeout=self.timeout)
        yield HttpConversation(self._client)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class ServerError(RuntimeError):
    """The server under test answered a turn with an error."""


class HttpConversation:
    """A chat-widget-like client: keeps the session id and token between turns."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.session_id: str | None = None
        self.token: str | None = None

    async def plant_notes(self, notes: list[str]) -> bool:
        """Not over HTTP: notes need an agent's token, which a chat client does not hold."""
        return False

    async def artifacts(self) -> list[tuple[str, str]]:
        """The session as the API returns it to the customer."""
        if self.session_id is None:
            return []
        session = await self.client.get(
            f"/api/support/sessions/{self.session_id}",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        return [("session (API)", session.text)]

    async def send(self, message: str) -> Observed:
        """POST the message, then read the session for its slots and hand-off packet."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        started = time.perf_counter()
        response = await self.client.post(
            "/api/support/chat",
            json={"message": message, "session_id": self.session_id},
            headers=headers,
        )
        latency = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise ServerError(
                f"POST /api/support/chat: HTTP {response.status_code}: {response.text}"
            )
        body = response.json()
        self.session_id, self.token = body["session_id"], body["session_token"]
        session = await self.client.get(
            f"/api/support/sessions/{self.session_id}",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        if session.status_code != 200:
            raise ServerError(f"GET session: HTTP {session.status_code}: {session.text}")
        state = session.json()
        return Observed(
            reply=body["reply"],
            intent=body["intent"],
            status=body["status"],
            route=list(body["route"]),
            citations=[c["id"] for c in body["citations"]],
            slots=dict(state.get("slots") or {}),
            escalation=state.get("escalation"),
            usage=body["usage"],
            latency_ms=latency,
            requests=None,
        )
