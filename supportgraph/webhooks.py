"""Escalation webhooks from a durable outbox: signed, retried with backoff, at least once.

Deliveries are rows of ``sg_outbox`` written with the event that causes them, so a restart
loses nothing: any process's dispatcher leases due rows, POSTs them, and on failure schedules
the next attempt with tenacity's exponential backoff (with jitter) until the row expires.
Receivers verify ``X-Supportgraph-Signature`` (``t=<unix>,v1=<hex HMAC-SHA256 of
"<t>.<body>">``) and drop repeats by ``Idempotency-Key`` (the same on every attempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from tenacity import RetryCallState, wait_exponential_jitter

from checkpoints import Store
from checkpoints.store import OutboxItem, OutboxRow
from supportgraph.pii import redact_data
from supportgraph.settings import Settings

log = logging.getLogger("supportgraph.webhooks")

SIGNATURE_HEADER = "X-Supportgraph-Signature"
EVENT_HEADER = "X-Supportgraph-Event"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(secret: str, body: bytes, header: str, *, tolerance: float = 300.0) -> bool:
    """Whether a signature header is genuine and recent (what a receiver checks)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    stamp = parts.get("t", "")
    if not stamp.isdigit() or abs(time.time() - int(stamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, int(stamp)), f"t={stamp},v1={parts.get('v1')}")


def encode(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): the same on every attempt."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class WebhookConfig:
    """Where webhooks go, which events, how they are signed and retried."""

    urls: tuple[str, ...]
    secret: str
    events: frozenset[str]
    max_age: timedelta
    timeout: float = 10.0
    backoff_initial: float = 2.0
    backoff_max: float = 600.0
    poll_seconds: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookConfig | None:
        """The configuration, or None when no URL is set."""
        if not settings.webhook_urls:
            return None
        if settings.webhook_secret is None:
            raise ValueError(
                "SUPPORTGRAPH_WEBHOOK_SECRET must be set when SUPPORTGRAPH_WEBHOOK_URLS is "
                "(receivers check the signature with it)"
            )
        for url in settings.webhook_urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"SUPPORTGRAPH_WEBHOOK_URLS: {url!r} is not an http(s) URL")
        return cls(
            urls=tuple(settings.webhook_urls),
            secret=settings.webhook_secret.get_secret_value(),
            events=frozenset(settings.webhook_events),
            max_age=timedelta(hours=settings.webhook_max_age_hours),
            timeout=settings.webhook_timeout,
            backoff_initial=settings.webhook_backoff_initial,
            backoff_max=settings.webhook_backoff_max,
            poll_seconds=settings.webhook_poll_seconds,
        )

    def outbox_items(
        self, event: str, *, session_id: str, data: dict[str, Any]
    ) -> list[OutboxItem]:
        """The deliveries of one event (none if the event is not configured)."""
        if event not in self.events:
            return []
        now = datetime.now(UTC)
        key = uuid.uuid4().hex
        payload = {
            "id": key,
            "type": f"conversation.{event}",
            "created_at": now.isoformat(),
            "session_id": session_id,
            # Leaves this system: no card number or pasted secret, whatever produced the data.
            "data": redact_data(data),
        }
        return [
            OutboxItem(
                event_type=event,
                url=url,
                idempotency_key=key,
                payload=payload,
                expires_at=now + self.max_age,
            )
            for url in self.urls
        ]

    def backoff(self, attempts: int) -> float:
        """Seconds before the next try after ``attempts`` failed ones (exponential, jittered)."""
        wait = wait_exponential_jitter(
            multiplier=self.backoff_initial, max=self.backoff_max, jitter=self.backoff_initial / 4
        )
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = max(attempts, 1)
        return float(wait(state))


class WebhookDispatcher:
    """Deliver due outbox rows; woken when an event adds some, and polling for retries."""

    def __init__(self, store: Store, config: WebhookConfig, *, wake: asyncio.Event) -> None:
        self.store = store
        self.config = config
        self.wake = wake
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Run in the background until :meth:`stop`."""
        self._client = httpx.AsyncClient(timeout=self.config.timeout, follow_redirects=False)
        self._task = asyncio.create_task(self._run(), name="sg-webhooks")

    async def stop(self) -> None:
        """Stop delivering (a leased row is picked up again once its lease ends)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    async def deliver_due(self) -> int:
        """Attempt every delivery that is due now; return how many were attempted."""
        attempted = 0
        while True:
            row = await self.store.claim_due_webhook(
                now=datetime.now(UTC), lease=self.config.timeout + 30
            )
            if row is None:
                return attempted
            attempted += 1
            await self._attempt(row)

    async def _run(self) -> None:
        while True:
            self.wake.clear()
            try:
                await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a database blip
                log.warning("webhook dispatch failed", extra={"error": str(exc)[:200]})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.config.poll_seconds)

    async def _attempt(self, row: OutboxRow) -> None:
        assert self._client is not None
        body = encode(row.payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "supportgraph-webhooks",
            SIGNATURE_HEADER: sign(self.config.secret, body, int(time.time())),
            IDEMPOTENCY_HEADER: row.idempotency_key,
            EVENT_HEADER: row.payload.get("type", row.event_type),
        }
        extra = {"outbox_id": row.id, "session_id": row.session_id, "attempt": row.attempts}
        try:
            response = await self._client.post(row.url, content=body, headers=headers)
            error = None if response.is_success else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error is None:
            await self.store.webhook_delivered(row.id)
            log.info("webhook delivered", extra=extra)
            return
        retry_at = datetime.now(UTC) + timedelta(seconds=self.config.backoff(row.attempts))
        expired = retry_at >= datetime.fromisoformat(row.expires_at)
        await self.store.webhook_failed(
            row.id, error=error, next_attempt_at=None if expired else retry_at
        )
        log.warning(
            "webhook expired" if expired else "webhook failed; will retry",
            extra={**extra, "error": error[:200]},
        )
