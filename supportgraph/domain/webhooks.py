"""Webhooks: which events are sent where, their payloads, signatures and retry schedule.

Deliveries are outbox rows written with the event that causes them (the dispatcher in
``connectors.webhooks`` sends them). Receivers verify ``X-Supportgraph-Signature``
(``t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``) and drop repeats by ``Idempotency-Key``
(the same on every attempt).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from tenacity import RetryCallState, wait_exponential_jitter

from supportgraph.domain.pii import redact_data
from supportgraph.domain.types import OutboxItem

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


WebhookEvent = Literal["escalated", "agent_reply", "resolved"]
"""Events a webhook can be sent for."""


@dataclass(frozen=True)
class WebhookConfig:
    """Where webhooks go, which events, how they are signed and retried."""

    urls: tuple[str, ...]
    secret: str
    events: frozenset[WebhookEvent]
    max_age: timedelta
    timeout: float = 10.0
    backoff_initial: float = 2.0
    backoff_max: float = 600.0
    poll_seconds: float = 2.0

    def outbox_items(
        self, event: WebhookEvent, *, session_id: str, data: dict[str, Any]
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
        # tenacity's wait strategies read only the attempt number; a schedule computed outside
        # a retry loop has no Retrying object to give the state.
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = max(attempts, 1)
        return float(wait(state))
