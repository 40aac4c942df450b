"""Live updates: an event log in the database, and wake-ups for the streams that follow it.

Every new message, claim, hand-back and status change is a row of ``sg_events`` (the record a
stream replays from ``Last-Event-ID``). Streams sleep until woken: in-process on SQLite, and on
PostgreSQL also by ``LISTEN/NOTIFY``, whose payload carries only ids (the row holds the data;
NOTIFY payloads are capped and cannot be replayed). Streams re-read the log on every heartbeat
too, so a lost notification costs latency, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from supportgraph.domain.ports import EventLog, Store
from supportgraph.domain.types import Audience, Event
from supportgraph.domain.webhooks import WebhookConfig, WebhookEvent

log = logging.getLogger("supportgraph.events")

CUSTOMER_FIELDS: dict[str, tuple[str, ...]] = {
    "message": ("message_id", "role", "content", "citations"),
    "status": ("status", "by"),
    "claimed": (),
    "released": (),
}
"""What a customer's stream shows of each event kind (a whitelist; notes are not listed)."""


def customer_view(event: Event) -> dict[str, Any] | None:
    """The event as the customer may see it; None when it is for agents only."""
    fields = CUSTOMER_FIELDS.get(event.kind)
    if event.audience != "all" or fields is None:
        return None
    shown = {k: event.data[k] for k in fields if k in event.data}
    return {"id": event.id, "kind": event.kind, "created_at": event.created_at, **shown}


def agent_view(event: Event) -> dict[str, Any]:
    """The event as agents see it."""
    return {
        "id": event.id,
        "kind": event.kind,
        "session_id": event.session_id,
        "created_at": event.created_at,
        **event.data,
    }


@dataclass(eq=False)
class _Subscriber:
    session_id: str | None
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class EventHub:
    """Append events (with the webhooks they cause) and wake the streams that follow them."""

    def __init__(
        self,
        store: EventLog,
        *,
        webhooks: WebhookConfig | None = None,
        heartbeat: float = 15.0,
    ) -> None:
        self.store = store
        self.webhooks = webhooks
        self.heartbeat = heartbeat
        self.outbox_added = asyncio.Event()
        self._subscribers: set[_Subscriber] = set()
        self._listener: asyncio.Task[None] | None = None

    async def publish(
        self,
        session_id: str,
        kind: str,
        data: dict[str, Any],
        *,
        audience: Audience = "all",
        webhook: WebhookEvent | None = None,
        webhook_data: dict[str, Any] | None = None,
        via: Store | None = None,
    ) -> int:
        """Log an event (and the ``webhook`` it triggers, if configured); wake its followers.

        ``via``: a transaction to log it in; followers and the dispatcher are woken once it
        commits.
        """
        outbox = []
        if webhook is not None and self.webhooks is not None:
            outbox = self.webhooks.outbox_items(
                webhook, session_id=session_id, data=webhook_data or data
            )
        log_to: EventLog = via if via is not None else self.store
        event_id = await log_to.append_event(
            session_id, kind=kind, audience=audience, data=data, outbox=outbox
        )

        def wake() -> None:
            self._wake(session_id)
            if outbox:
                self.outbox_added.set()

        if via is not None:
            via.after_commit(wake)
        else:
            wake()
        return event_id

    async def follow(
        self,
        *,
        after: int,
        session_id: str | None = None,
        audiences: tuple[Audience, ...] = ("all",),
    ) -> AsyncIterator[Event]:
        """Events after ``after`` (one session's, or all), forever, as they are logged."""
        subscriber = _Subscriber(session_id)
        self._subscribers.add(subscriber)
        try:
            while True:
                subscriber.wake.clear()
                rows = await self.store.events_after(
                    after, session_id=session_id, audiences=audiences
                )
                for row in rows:
                    after = row.id
                    yield row
                if rows:
                    continue
                with contextlib.suppress(TimeoutError):
                    # Not wait_for: on Python 3.11 it can swallow the cancellation of a
                    # stream whose client left, as a wake-up lands.
                    async with asyncio.timeout(self.heartbeat):
                        await subscriber.wake.wait()
        finally:
            self._subscribers.discard(subscriber)

    async def last_event_id(self) -> int:
        """The newest event's id (0 when there is none)."""
        return await self.store.last_event_id()

    async def start(self) -> None:
        """Listen for events other processes log (when other processes can log any)."""
        if self._listener is None and self.store.listen() is not None:
            self._listener = asyncio.create_task(self._listen(), name="sg-listen")

    async def stop(self) -> None:
        """Stop listening."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None

    def _wake(self, session_id: str | None) -> None:
        for subscriber in self._subscribers:
            if session_id is None or subscriber.session_id in (None, session_id):
                subscriber.wake.set()

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            listening = self.store.listen()
            if listening is None:
                return
            try:
                async with listening as notifications:
                    delay = 0.5
                    self._wake(None)  # catch up on whatever was logged while not listening
                    async for _event_id, session_id in notifications:
                        self._wake(session_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect whatever went wrong
                log.warning("event listener lost its connection", extra={"error": str(exc)[:200]})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
