"""Running ``supportgraph`` as a user does: a clean environment, a free port, a served app."""

from __future__ import annotations

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

from supportgraph.settings import PROJECT_ROOT

BIN = Path(sys.executable).parent / "supportgraph"
TEST_SECRET = "test-secret-of-at-least-32-bytes-for-hs256"


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment without the developer's SUPPORTGRAPH_/OPENAI_ settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPPORTGRAPH_", "OPENAI_"))}
    env.update(
        SUPPORTGRAPH_SQLITE_PATH=str(tmp_path / "sg.sqlite"),
        SUPPORTGRAPH_SECRET_KEY=TEST_SECRET,
        **extra,
    )
    return env


def run_cli(
    args: list[str], env: dict[str, str], *, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``supportgraph ARGS`` from the repository root to completion."""
    return subprocess.run(
        [str(BIN), *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def serving(tmp_path: Path, env: dict[str, str]) -> Iterator[str]:
    """``supportgraph serve`` on a free port as its own process; killed at the end."""
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN), "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "server did not start:\n" + (tmp_path / "serve.log").read_text()
                )
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
