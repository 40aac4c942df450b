"""``supportgraph serve`` as a real process for tests, on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent / "supportgraph"
TEST_SECRET = "test-secret-of-at-least-32-bytes-for-hs256"


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment without a developer's SUPPORTGRAPH_/OPENAI_ settings: SQLite in tmp."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPPORTGRAPH_", "OPENAI_"))}
    env.update(
        SUPPORTGRAPH_SQLITE_PATH=str(tmp_path / "sg.sqlite"),
        SUPPORTGRAPH_SECRET_KEY=TEST_SECRET,
        **extra,
    )
    return env


@contextmanager
def serve_process(
    tmp_path: Path,
    port: int,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    **extra: str,
) -> Iterator[str]:
    """Run ``supportgraph serve`` until the block ends, then SIGKILL its process group.

    ``env`` is the whole environment (default: :func:`clean_env` with ``extra``). Yields the
    base URL once ``/health`` answers; the server's output is kept in a log file in tmp.
    """
    environment = env if env is not None else clean_env(tmp_path, **extra)
    log_path = tmp_path / f"serve-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(BIN), "serve", "--port", str(port), *args],
            env=environment,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        # The group may be gone already: a crash-point test's server exits by itself.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
