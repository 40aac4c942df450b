"""Webhook delivery from the durable outbox: signed, retried with backoff, at least once.

Deliveries are outbox rows written with the event that causes them, so a restart loses
nothing: any process's dispatcher leases due rows, POSTs them, and on failure schedules the
next attempt with the configured backoff until the row expires. A dispatcher sends several
at once, so a receiver that hangs until the timeout takes up one slot, not the whole queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from supportgraph.domain.ports import Outbox
from supportgraph.domain.types import CrashPoint, Delivery
from supportgraph.domain.webhooks import (
    EVENT_HEADER,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    WebhookConfig,
    encode,
    sign,
)

log = logging.getLogger("supportgraph.webhooks")


class WebhookDispatcher:
    """Deliver due outbox rows, ``concurrency`` at a time; woken when an event adds some, and
    polling for retries."""

    def __init__(
        self,
        store: Outbox,
        config: WebhookConfig,
        *,
        wake: asyncio.Event,
        concurrency: int = 8,
        crash: Callable[[CrashPoint], None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"WebhookDispatcher concurrency must be at least 1, not {concurrency}")
        self.store = store
        self.config = config
        self.wake = wake
        self.concurrency = concurrency
        self.crash = crash or (lambda point: None)
        self._slots = asyncio.Semaphore(concurrency)
        self._sending: set[asyncio.Task[None]] = set()
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
        for task in self._sending:
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def deliver_due(self) -> int:
        """Attempt every delivery that is due now; return how many were attempted."""
        started = await self._start_due()
        await asyncio.gather(*started)
        return len(started)

    async def _start_due(self) -> list[asyncio.Task[None]]:
        """Claim due rows while a slot is free, each sent by a task of its own."""
        started: list[asyncio.Task[None]] = []
        while True:
            # A row is claimed only once a slot is free, so its attempt starts at once and
            # ends well within its lease (no other dispatcher takes it meanwhile).
            await self._slots.acquire()
            try:
                row = await self.store.claim_due_webhook(
                    now=datetime.now(UTC), lease=self.config.timeout + 5
                )
            except BaseException:
                self._slots.release()
                raise
            if row is None:
                self._slots.release()
                return started
            task = asyncio.create_task(self._send(row), name=f"sg-webhook-{row.id}")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
            started.append(task)

    async def _send(self, row: Delivery) -> None:
        try:
            await self._attempt(row)
        except Exception as exc:  # noqa: BLE001 - the row is tried again once its lease ends
            log.warning(
                "webhook dispatch failed", extra={"outbox_id": row.id, "error": str(exc)[:200]}
            )
        finally:
            self._slots.release()

    async def _run(self) -> None:
        while True:
            self.wake.clear()
            try:
                await self._start_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a database blip
                log.warning("webhook dispatch failed", extra={"error": str(exc)[:200]})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.poll_seconds):  # see SqlStore._acquire
                    await self.wake.wait()

    async def _attempt(self, row: Delivery) -> None:
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
            self.crash("webhook.sent")
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
