"""Log lines never carry personal data or secrets: the filter, the formatters, a real server."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from uvicorn.config import LOGGING_CONFIG

from supportgraph.logs import configure_logging
from tests.pii.capture import app_log_lines, json_lines
from tests.utils.orders import order
from tests.utils.servers import free_port, serve_process

CARD = "4111 1111 1111 1111"
EMAIL = "caleb.hughes@example.org"
PHONE = "(614) 555-0134"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzZXNzaW9uIn0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
API_KEY = "sk-proj-L0gK3yZq9W8e7R6t5Y4u3I2o1P0aSdF"
RAW = (CARD, "4111111111111111", EMAIL, PHONE, "555-0134", JWT, API_KEY)


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The app's JSON logging, configured as the service does, into a buffer."""
    configure_logging("DEBUG", json_lines=True)
    with app_log_lines() as buffer:
        yield buffer


def _assert_clean(text: str) -> None:
    for value in RAW:
        assert value not in text, f"{value!r} logged"


def test_message_args_extras_and_exception_are_masked(json_logs: io.StringIO) -> None:
    log = logging.getLogger("supportgraph.test")
    try:
        raise ValueError(f"lookup failed for {EMAIL} paying with {CARD}")
    except ValueError:
        log.exception(
            "customer %s called from %s",
            EMAIL,
            PHONE,
            extra={
                "request": {
                    "headers": {"Authorization": f"Bearer {JWT}", "X-Request-ID": "abc-123"},
                    "body": {"message": f"my card is {CARD}", "contacts": [EMAIL, PHONE]},
                },
                "session_token": JWT,
                "detail": f"provider said: key {API_KEY} invalid",
                "order_id": 1042,
                "amount": 4111111111111111,
            },
        )
    [line] = json_lines(json_logs)
    _assert_clean(json_logs.getvalue())
    assert line["msg"] == "customer c***@example.org called from [phone …34]"
    assert line["request"]["headers"] == {"Authorization": "[redacted]", "X-Request-ID": "abc-123"}
    assert line["request"]["body"] == {
        "message": "my card is [card XXXX-XXXX-XXXX-1111]",
        "contacts": ["c***@example.org", "[phone …34]"],
    }
    assert line["session_token"] == "[redacted]"
    assert line["detail"] == "provider said: key [api key removed] invalid"
    assert line["order_id"] == 1042, "numbers that are no card stay numbers"
    assert line["amount"] == "[card XXXX-XXXX-XXXX-1111]"
    assert "ValueError: lookup failed for c***@example.org paying with [card" in line["exc"]
    assert "Traceback" in line["exc"]


@pytest.mark.parametrize("name", ["langgraph.pregel", "langchain_core.callbacks", "psycopg.pool"])
def test_the_libraries_warnings_go_out_masked_as_json(json_logs: io.StringIO, name: str) -> None:
    """Records of other loggers reach the root logger: the same handler masks them."""
    logging.getLogger(name).warning("retrying for %s after %s", EMAIL, f"card {CARD} refused")
    logging.getLogger(name).info("below the root's level: not shown")
    [line] = json_lines(json_logs)
    _assert_clean(json_logs.getvalue())
    assert line["logger"] == name and line["level"] == "WARNING"
    assert (
        line["msg"] == "retrying for c***@example.org after card [card XXXX-XXXX-XXXX-1111] refused"
    )


def test_other_root_handlers_get_the_filter_too() -> None:
    """A handler the host put on the root logger (a console, a log shipper) sees masked text."""
    root = logging.getLogger()
    shipped = io.StringIO()
    theirs = logging.StreamHandler(shipped)
    root.addHandler(theirs)
    try:
        configure_logging("INFO", json_lines=True)
        logging.getLogger("psycopg").warning("connection for %s lost", EMAIL)
    finally:
        root.removeHandler(theirs)
    assert "connection for c***@example.org lost" in shipped.getvalue()
    _assert_clean(shipped.getvalue())


def test_text_logs_are_masked_too() -> None:
    configure_logging("INFO", json_lines=False)
    with app_log_lines() as buffer:
        try:
            raise RuntimeError(f"refused {API_KEY}")
        except RuntimeError:
            logging.getLogger("supportgraph.test").exception("card %s from %s", CARD, EMAIL)
    text = buffer.getvalue()
    _assert_clean(text)
    assert "card [card XXXX-XXXX-XXXX-1111] from c***@example.org" in text
    assert "RuntimeError: refused [api key removed]" in text


def test_uvicorn_access_lines_are_masked_and_keep_their_shape() -> None:
    logging.config.dictConfig(LOGGING_CONFIG)
    configure_logging("INFO")
    [handler] = logging.getLogger("uvicorn.access").handlers
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    try:
        # uvicorn's AccessFormatter unpacks these five arguments: the filter must keep them.
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:50000",
            "GET",
            f"/api/support/sessions/abc?email={EMAIL}&card={CARD.replace(' ', '')}",
            "1.1",
            200,
        )
    finally:
        handler.setStream(previous)
    text = buffer.getvalue()
    _assert_clean(text)
    assert '127.0.0.1:50000 - "GET /api/support/sessions/abc?email=c***@example.org' in text
    assert "card=[card XXXX-XXXX-XXXX-1111] HTTP/1.1" in text and "200" in text


@pytest.mark.slow
def test_a_real_server_logs_no_personal_data(tmp_path: Path) -> None:
    """``supportgraph serve`` as its own process: everything it prints, uvicorn's lines too."""
    delivered = order("delivered")
    port = free_port()
    with serve_process(tmp_path, port) as url, httpx.Client(base_url=url, timeout=60) as http:

        def say(message: str, session: dict[str, Any] | None) -> dict[str, Any]:
            headers = {"Authorization": f"Bearer {session['session_token']}"} if session else {}
            body = {"message": message, "session_id": session and session["session_id"]}
            response = http.post("/api/support/chat", json=body, headers=headers)
            assert response.status_code == 200, response.text
            return response.json()

        first = say(f"where is order {delivered['order_id']}? card {CARD} if needed", None)
        second = say(f"{delivered['email']}, or call me on {PHONE}; key {API_KEY}", first)
        token = second["session_token"]
        sid = second["session_id"]
        # A client that puts personal data in the URL: it reaches uvicorn's access log.
        response = http.get(
            f"/api/support/sessions/{sid}",
            params={"email": delivered["email"], "phone": "6145550134"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200
        assert "removed the card number" in first["reply"]
        output = (tmp_path / f"serve-{port}.log").read_text()
    for value in (*RAW, delivered["email"], "6145550134", token, first["session_token"]):
        assert value not in output, f"{value!r} in the server's output"
    turns = [json.loads(line) for line in output.splitlines() if '"msg": "turn"' in line]
    assert [t["redacted"] for t in turns] == [["card"], ["api_key"]]
    assert turns[1]["slots"]["email"].endswith("***@" + delivered["email"].split("@")[1])
    access = [line for line in output.splitlines() if f"GET /api/support/sessions/{sid}" in line]
    assert access, f"no access line for the session in:\n{output}"
    local, domain = delivered["email"].split("@")
    assert f"email={local[0]}***@{domain}&phone=[phone …34]" in access[0]


def test_format_templates_survive_the_filter(json_logs: io.StringIO) -> None:
    """ "%05d" looks like a URL escape; the template must still format its arguments."""
    logging.getLogger("supportgraph.test").info("%05d items for %s", 42, EMAIL)
    logging.getLogger("supportgraph.test").info(
        "%(who)s paid %(card)s", {"who": EMAIL, "card": CARD}
    )
    first, second = json_lines(json_logs)
    assert first["msg"] == "00042 items for c***@example.org"
    assert second["msg"] == "c***@example.org paid [card XXXX-XXXX-XXXX-1111]"
