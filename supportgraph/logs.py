"""Structured logging: one JSON object a line, with the request id and session id.

Every record passes :class:`RedactingFilter` on its way out: card numbers, secrets, emails and
phone numbers are masked in the message, its arguments, every extra field (nested dicts and
lists too) and the exception text, and fields named like credentials (``authorization``,
``password``, ``*_token``...) are dropped to ``[redacted]`` whatever they hold. The app's
handler serves our loggers and the root logger, so the libraries' records (LangGraph,
LangChain, psycopg...) come out the same way; every other handler on the root logger and
uvicorn's own get the filter too.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from supportgraph.domain.pii import REDACTED, mask_for_log

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
session_id_var: ContextVar[str] = ContextVar("session_id", default="-")

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

SECRET_KEYS = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "x_api_key",
        "api_key",
        "apikey",
        "password",
        "passwd",
        "secret",
        "secret_key",
        "client_secret",
        "private_key",
        "token",
        "jwt",
        "credentials",
    }
)
"""Fields whose value is a credential by name: never logged, whatever it looks like."""

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def is_secret_key(key: str) -> bool:
    """Whether a field named ``key`` holds a credential (``Authorization``, ``session_token``)."""
    name = key.lower().replace("-", "_")
    return name in SECRET_KEYS or name.endswith(("_token", "_secret", "_password", "_apikey"))


def redact(value: Any, *, key: str = "") -> Any:
    """``value`` fit for a log: strings masked, containers walked, credentials by name dropped."""
    if key and is_secret_key(key):
        return REDACTED
    if isinstance(value, str):
        return mask_for_log(value)
    if isinstance(value, Mapping):
        return {k: redact(v, key=str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if isinstance(value, bool | float | None):
        return value
    if isinstance(value, int):
        # A card number logged as a number is still a card number.
        text = str(value)
        masked = mask_for_log(text)
        return value if masked == text else masked
    return mask_for_log(str(value))


class RedactingFilter(logging.Filter):
    """Mask personal data and secrets in a record before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        if getattr(record, "_sg_redacted", False):
            return True
        # With arguments, msg is a %-format template: mask it, but leave "%05d" alone.
        record.msg = mask_for_log(str(record.msg), urls=not record.args)
        if isinstance(record.args, Mapping):
            record.args = redact(record.args)
        elif record.args:
            # Kept a tuple of the same length: uvicorn's access formatter unpacks it.
            record.args = tuple(a if isinstance(a, int | float) else redact(a) for a in record.args)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, redact(value, key=key))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_for_log(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_for_log(record.stack_info)
        record._sg_redacted = True
        return True


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line with the ids of the current request."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON."""
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id_var.get(),
            "session_id": getattr(record, "session_id", None) or session_id_var.get(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in payload and not key.startswith("_sg_"):
                payload[key] = value
        if record.exc_text:
            # The filter left the masked text here; never format the live exception again.
            payload["exc"] = record.exc_text
        elif record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal, still carrying the request id."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as text."""
        base = super().format(record)
        return f"{base} request_id={request_id_var.get()}"


class AppHandler(logging.StreamHandler[TextIO]):
    """The handler :func:`configure_logging` installs."""


class LibraryLevel(logging.Filter):
    """Our loggers at the level they are set to; the libraries' records from WARNING up.

    Some libraries set their own loggers to DEBUG; their chatter stays out of the app's log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep ours, and others at WARNING or above."""
        ours = record.name == "supportgraph" or record.name.startswith("supportgraph.")
        return ours or record.levelno >= logging.WARNING


def app_handler() -> AppHandler | None:
    """The handler the app's log lines go out through, once :func:`configure_logging` ran."""
    return next((h for h in logging.getLogger().handlers if isinstance(h, AppHandler)), None)


def install_filter(handler: logging.Handler) -> None:
    """Give ``handler`` the redacting filter (once)."""
    if not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(RedactingFilter())


def configure_logging(level: str = "INFO", *, json_lines: bool = True) -> None:
    """Send every log record to stderr, as JSON lines or text, with personal data masked.

    Our loggers log at ``level``; the libraries' records reach the root logger, at its level
    (WARNING unless the host configured another), through the same handler.
    """
    handler = AppHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    handler.addFilter(LibraryLevel())
    install_filter(handler)
    ours = logging.getLogger("supportgraph")
    ours.handlers[:] = [handler]
    ours.setLevel(level.upper())
    ours.propagate = False
    root = logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, AppHandler)]:
        root.removeHandler(previous)
    root.addHandler(handler)
    for existing in root.handlers:
        install_filter(existing)
    for name in ("httpx", "openai", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # uvicorn configures its handlers before it builds the app: mask what they print too.
    for name in UVICORN_LOGGERS:
        for existing in logging.getLogger(name).handlers:
            install_filter(existing)
