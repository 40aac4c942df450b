"""A model endpoint on loopback that the test can break: answer, fail, hang, hold or hang up.

The service (its own process, the real ``langchain-openai`` client) talks to it over HTTP.
Its answers come from the bench's stub (``bench.stub_llm.completion``); the test switches
``mode`` at any time:

- ``ok``: answer at once;
- ``500``: answer every request with HTTP 500;
- ``hang``: read the request and never answer (until the server is closed);
- ``close``: read the request and close the connection without a word;
- ``hold``: signal ``held``, wait for ``release``, then answer (a turn kept in flight).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.stub_llm import completion


class FaultyModel:
    """The server's switchable behaviour and what it saw."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests = 0
        self.held = threading.Event()
        self.release = threading.Event()
        self.closing = threading.Event()
        self.url = ""

    def settings(self) -> dict[str, str]:
        """The service's environment that points its model here."""
        return {
            "SUPPORTGRAPH_OPENAI_API_KEY": "sk-faults",
            "SUPPORTGRAPH_OPENAI_BASE_URL": f"{self.url}/v1",
            "SUPPORTGRAPH_MODEL": "stub-model",
        }


def _handler(model: FaultyModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: Any) -> None:  # quiet: the test reports what matters
            return

        def do_POST(self) -> None:  # noqa: N802 - the http.server naming
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            model.requests += 1
            mode = model.mode
            if mode == "hang":
                model.closing.wait()
                self.close_connection = True
                return
            if mode == "close":
                self.close_connection = True
                return
            if mode == "hold":
                model.held.set()
                model.release.wait(timeout=60)
            if mode == "500":
                self._send(500, {"error": {"message": "injected failure", "type": "server_error"}})
                return
            self._send(200, completion(body))

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def faulty_model() -> Iterator[FaultyModel]:
    """Serve a :class:`FaultyModel` on a free loopback port for the block."""
    model = FaultyModel()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(model))
    server.daemon_threads = True
    model.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield model
    finally:
        model.closing.set()
        model.release.set()
        server.shutdown()
        server.server_close()
