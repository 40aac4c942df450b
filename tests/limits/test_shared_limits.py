"""Rate limits shared through Redis: they hold across apps and worker processes; the
CLI refuses several workers whose limits would each live in their own memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.common import process_tree
from tests.limits.conftest import REDIS_URL, assert_rate_limited, redis_keys
from tests.utils.chat import Customer
from tests.utils.db import fresh_schema
from tests.utils.servers import BIN, clean_env, free_port, serve_process


async def test_two_apps_on_one_redis_share_the_limit(
    app_factory: Any, sqlite_backend: dict[str, Any], redis_limits: dict[str, str]
) -> None:
    """Two apps stand in for two workers: one client's allowance is spent across both."""
    limit = {"rate_limit_new_sessions": "4/minute", **redis_limits}
    async with (
        app_factory(**sqlite_backend, **limit) as one,
        app_factory(**sqlite_backend, **limit) as two,
    ):
        codes = [
            (await app.post("/api/support/chat", json={"message": "hi"})).status_code
            for app in (one, two, one, two)
        ]
        refused = await two.post("/api/support/chat", json={"message": "hi"})
        also = await one.post("/api/support/chat", json={"message": "hi"})
    assert codes == [200] * 4
    assert_rate_limited(refused, "new_sessions")
    assert_rate_limited(also, "new_sessions")
    # The counters live in Redis, under this test's prefix.
    keys = await redis_keys(redis_limits["rate_limit_key_prefix"])
    assert any("/new_sessions/" in k for k in keys), keys
    assert all(k.startswith(redis_limits["rate_limit_key_prefix"] + ":") for k in keys)


def serve_workers(port: int) -> list[int]:
    """The worker processes of ``supportgraph serve --port PORT`` (Linux ``/proc``)."""
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in args and b"--port" in args and str(port).encode() in args:
            children = process_tree(int(entry))[1:]
            return [pid for pid in children if b"spawn_main" in _cmdline(pid)]
    raise AssertionError(f"no server on port {port}")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def talking_to_redis(pids: list[int]) -> set[int]:
    """Which of ``pids`` hold an established TCP connection to the Redis port."""
    port = f":{int(REDIS_URL.rsplit(':', 1)[1].split('/')[0]):04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[2].endswith(port) and fields[3] == "01":  # remote port, ESTABLISHED
                inodes.add(f"socket:[{fields[9]}]")
    talking = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                        talking.add(pid)
    return talking


@pytest.mark.slow
async def test_the_limit_holds_across_worker_processes(
    tmp_path: Path, redis_limits: dict[str, str]
) -> None:
    """``serve --workers 2`` on one PostgreSQL and one Redis: of 30 or more requests from one
    address, a connection each, until both workers have answered some, exactly the allowance
    gets through."""
    allowance = 12
    port = free_port()
    with fresh_schema() as db:
        env = clean_env(
            tmp_path,
            SUPPORTGRAPH_DATABASE_URL=db,
            SUPPORTGRAPH_LOG_LEVEL="WARNING",
            SUPPORTGRAPH_RATE_LIMIT_STORAGE=redis_limits["rate_limit_storage"],
            SUPPORTGRAPH_RATE_LIMIT_KEY_PREFIX=redis_limits["rate_limit_key_prefix"],
            # Per hour: a slow machine cannot let the window move on during the test.
            SUPPORTGRAPH_RATE_LIMIT_CLIENT=f"{allowance}/hour",
        )
        with serve_process(tmp_path, port, "--workers", "2", env=env) as base:
            workers = serve_workers(port)
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                customer = Customer(client)
                await customer.say("hi")  # 1 of the allowance
            headers = {"Authorization": f"Bearer {customer.token}"}
            path = f"/api/support/sessions/{customer.session_id}"
            # A connection each, so both workers' accept loops take some.
            no_keepalive = httpx.Limits(max_keepalive_connections=0)

            async def get() -> httpx.Response:
                async with httpx.AsyncClient(timeout=60, limits=no_keepalive) as one:
                    return await one.get(f"{base}{path}", headers=headers)

            responses: list[httpx.Response] = []
            deadline = time.monotonic() + 90
            # A worker that counted a request holds a Redis connection: go on until both do
            # (the second may still be starting when /health first answers).
            while time.monotonic() < deadline and (
                len(responses) < 30 or talking_to_redis(workers) != set(workers)
            ):
                responses += await asyncio.gather(*(get() for _ in range(10)))
            serving = talking_to_redis(workers)
    assert len(workers) == 2 and serving == set(workers), (workers, serving)
    codes = Counter(r.status_code for r in responses)
    assert codes == {200: allowance - 1, 429: len(responses) - (allowance - 1)}, codes
    assert_rate_limited(next(r for r in responses if r.status_code == 429), "client")


def test_serve_refuses_several_workers_with_limits_in_memory(tmp_path: Path) -> None:
    env = clean_env(tmp_path, SUPPORTGRAPH_DATABASE_URL="postgresql://unused@127.0.0.1:1/x")
    result = subprocess.run(
        [str(BIN), "serve", "--workers", "2", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Rate limits in memory are per process" in result.stderr
    assert "SUPPORTGRAPH_RATE_LIMIT_STORAGE=redis://" in result.stderr
