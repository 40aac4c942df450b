"""What the benchmarks share: server processes, a lean HTTP load generator, /proc readings,
percentiles, and the table and JSON every bench prints and writes.

Linux only (CPU time and RSS come from ``/proc``). Servers run as their own processes on
loopback; the load generator is a minimal keep-alive HTTP/1.1 client on asyncio streams, so
the client takes as little as possible of the CPU the server needs on a small machine.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from dotenv import dotenv_values
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DEFAULT_PG = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
SECRET = "bench-secret-of-at-least-32-bytes-for-hs256"
LOAD_PROFILE = REPO / "bench" / "load.env"
console = Console(width=None if sys.stdout.isatty() else 170)

QUESTIONS = (
    "How much does shipping cost?",
    "How many days do I have to return something?",
    "Do you ship internationally?",
    "Can I pick up my order in a store?",
    "Do you charge sales tax?",
    "Can I check out without an account?",
    "How long does delivery take?",
    "How can I contact you?",
)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------- processes


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(_children(current))
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds the processes have used (living ones)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def rss_bytes(pid: int) -> int:
    """Resident set size of one process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Server:
    """A server process (and its workers) on loopback."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def pids(self) -> list[int]:
        """The server's processes (a uvicorn supervisor and its workers, or one process)."""
        return process_tree(self.proc.pid)

    def cpu(self) -> float:
        """CPU seconds used by the server's processes so far."""
        return cpu_seconds(self.pids())

    def worker_pid(self) -> int:
        """The process that serves requests (the only worker of a one-worker server)."""
        pids = self.pids()
        return pids[-1]


def load_profile() -> dict[str, str]:
    """The load profile (``bench/load.env``): the environment that lifts the abuse limits."""
    return {k: v for k, v in dotenv_values(LOAD_PROFILE).items() if v is not None}


def load_profile_settings() -> dict[str, str]:
    """The load profile as ``Settings`` keyword arguments, for an app run in-process."""
    return {k.removeprefix("SUPPORTGRAPH_").lower(): v for k, v in load_profile().items()}


def base_env(**extra: str) -> dict[str, str]:
    """The bench's environment: no developer settings, the load profile, quiet logs, loopback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPPORTGRAPH_", "OPENAI_"))}
    env.update(load_profile())
    env.update(
        SUPPORTGRAPH_SECRET_KEY=SECRET,
        SUPPORTGRAPH_LOG_LEVEL="WARNING",
        PYTHONPATH=str(REPO),
    )
    env.update(extra)
    return env


@contextmanager
def running(
    name: str, args: Sequence[str], env: dict[str, str], workdir: Path, *, port: int
) -> Iterator[Server]:
    """Start a server command, wait for ``/health``, and kill its process group at the end."""
    log = workdir / f"{name.replace(' ', '_').replace('/', '_')}.log"
    handle = log.open("wb")
    proc = subprocess.Popen(
        list(args),
        env=env,
        cwd=workdir,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {log}:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield Server(name=name, url=url, proc=proc, log=log)
    finally:
        _stop(proc)
        handle.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group; SIGKILL what is left after 20 s."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def uvicorn_args(app: str, port: int, *, workers: int = 1, factory: bool = True) -> list[str]:
    """Run an ASGI app with uvicorn, as ``supportgraph serve`` does."""
    args = [str(VENV_BIN / "python"), "-m", "uvicorn", app, "--host", "127.0.0.1"]
    args += ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    return args + (["--factory"] if factory else [])


def serve_args(port: int, *, workers: int = 1) -> list[str]:
    """The real service, started the way the README says."""
    return [str(VENV_BIN / "supportgraph"), "serve", "--port", str(port), "--workers", str(workers)]


@contextmanager
def postgres_schema(url: str = DEFAULT_PG) -> Iterator[str]:
    """A database URL on a fresh, empty schema (dropped at the end)."""
    import secrets
    from urllib.parse import quote

    import psycopg

    schema = "sgbench_" + secrets.token_hex(5)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def postgres_up(url: str = DEFAULT_PG) -> bool:
    """Whether PostgreSQL answers at ``url``."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


# ---------------------------------------------------------------------------- HTTP client


class HttpError(RuntimeError):
    """The connection broke or the answer could not be read."""


class Connection:
    """One keep-alive HTTP/1.1 connection: JSON in, status and JSON out."""

    def __init__(self, url: str) -> None:
        host_port = url.split("://", 1)[1]
        self.host, port = host_port.split(":")
        self.port = int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """Send one request and read the whole answer (reconnecting once if the peer closed)."""
        for attempt in (0, 1):
            if self.writer is None:
                await self._open()
            try:
                return await self._exchange(method, path, body, headers or {})
            except (ConnectionError, asyncio.IncompleteReadError, HttpError):
                await self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _exchange(
        self, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], Any]:
        assert self.reader is not None and self.writer is not None
        payload = json.dumps(body).encode() if body is not None else b""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise HttpError(f"bad status line {status_line!r}")
        got = {}
        for line in header_lines:
            if ":" in line:
                k, v = line.split(":", 1)
                got[k.strip().lower()] = v.strip()
        length = int(got.get("content-length", "0"))
        raw = await self.reader.readexactly(length) if length else b""
        if got.get("connection", "").lower() == "close":
            await self.close()
        data = json.loads(raw) if raw and "json" in got.get("content-type", "") else raw
        return int(parts[1]), got, data

    async def close(self) -> None:
        """Close the connection."""
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        self.reader = self.writer = None


@dataclass
class Chat:
    """A customer: one session, its token, one connection."""

    conn: Connection
    path: str = "/api/support/chat"
    session_id: str | None = None
    token: str | None = None
    turns: int = 0

    async def say(self, message: str) -> tuple[int, dict[str, Any]]:
        """One turn; returns the status and the JSON body."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        status, _, data = await self.conn.request(
            "POST", self.path, {"message": message, "session_id": self.session_id}, headers
        )
        if status == 200:
            self.session_id = data["session_id"]
            self.token = data.get("session_token")
            self.turns += 1
        return status, data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------- load


@dataclass
class RunResult:
    """One load run: how many requests, how fast, how long each took."""

    label: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    """CPU the load generator (this process) spent driving the run."""
    machine_busy_cores: float = 0.0
    """Cores the whole machine kept busy on average (server, database, load generator...)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        """Latency percentile in milliseconds."""
        return percentile(self.latencies_ms, q)

    @property
    def cpu_ms_per_request(self) -> float:
        """Server CPU per successful request, in milliseconds."""
        done = self.requests - self.errors
        return 1000 * self.server_cpu_s / done if done else 0.0

    def summary(self) -> dict[str, Any]:
        """The figures, for the JSON report."""
        out = asdict(self)
        out.pop("latencies_ms")
        out.update(
            rate=round(self.rate, 2),
            p50_ms=round(self.pct(50), 2),
            p95_ms=round(self.pct(95), 2),
            p99_ms=round(self.pct(99), 2),
            cpu_ms_per_request=round(self.cpu_ms_per_request, 3),
        )
        return out


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank on the sorted values); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return float(ordered[rank - 1])


def median(values: Sequence[float]) -> float:
    """The median (0 for no values)."""
    return float(statistics.median(values)) if values else 0.0


async def drive(
    label: str,
    *,
    url: str,
    concurrency: int,
    per_client: int,
    step: Callable[[Any, int], Awaitable[int]],
    make_client: Callable[[Connection], Any],
    server: Server | None = None,
    progress: Progress | None = None,
    warmup: int = 1,
) -> RunResult:
    """``concurrency`` clients each make ``per_client`` requests with ``step(client, i)``.

    ``step`` returns the HTTP status. The first ``warmup`` requests of each client are not
    timed (connections open, the first turn of a session is created).
    """
    latencies: list[float] = []
    errors = 0
    task = progress.add_task(label, total=concurrency * per_client) if progress else None
    clients = [make_client(Connection(url)) for _ in range(concurrency)]
    for client in clients:
        for i in range(warmup):
            await step(client, -1 - i)

    async def one(client: Any) -> None:
        nonlocal errors
        for i in range(per_client):
            t0 = time.perf_counter()
            try:
                status = await step(client, i)
            except (ConnectionError, HttpError, asyncio.IncompleteReadError):
                status = 599
            latencies.append(1000 * (time.perf_counter() - t0))
            errors += status != 200
            if progress is not None and task is not None:
                progress.advance(task)

    cpu0 = server.cpu() if server else 0.0
    client0, machine0 = time.process_time(), machine_cpu()
    start = time.perf_counter()
    await asyncio.gather(*(one(c) for c in clients))
    seconds = time.perf_counter() - start
    cpu = (server.cpu() - cpu0) if server else 0.0
    client_cpu, machine1 = time.process_time() - client0, machine_cpu()
    for client in clients:
        await getattr(client, "conn", client).close()
    if progress is not None and task is not None:
        progress.remove_task(task)
    return RunResult(
        label=label,
        concurrency=concurrency,
        requests=concurrency * per_client,
        errors=errors,
        seconds=seconds,
        latencies_ms=latencies,
        server_cpu_s=cpu,
        client_cpu_s=client_cpu,
        machine_busy_cores=busy_cores(machine0, machine1),
    )


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat ((0, 0) elsewhere)."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / hz, total / hz


def busy_cores(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Average cores busy between two :func:`machine_cpu` readings."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return (os.cpu_count() or 1) * busy / total if total > 0 else 0.0


async def chat_step(client: Chat, i: int) -> int:
    """One customer turn with the next FAQ question."""
    status, _ = await client.say(QUESTIONS[(client.turns + i) % len(QUESTIONS)])
    return status


async def escalated_step(client: Chat, i: int) -> int:
    """A message in a session a person has (warm-up: ask for one): no brains, all plumbing."""
    text = "I want to talk to a person" if i < 0 else f"hello, are you there? ({i})"
    status, _ = await client.say(text)
    return status


async def health_step(client: Connection, turn: int) -> int:
    """``GET /health`` (the bare endpoint in the same server); ``turn`` is not used."""
    status, _, _ = await client.request("GET", "/health")
    return status


def bar() -> Progress:
    """The progress bar every bench shows."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


# ---------------------------------------------------------------------------- reports


def ratio(value: float, baseline: float) -> str:
    """``value / baseline`` as ``1.23x`` (or ``-``)."""
    return f"{value / baseline:.2f}x" if baseline else "-"


def verdict(ok: bool | None) -> str:
    """A target's mark in the table."""
    if ok is None:
        return ""
    return "[green]met[/green]" if ok else "[red]missed[/red]"


def machine() -> dict[str, Any]:
    """Where the figures come from."""
    load = os.getloadavg()
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A rich table with right-aligned figures."""
    out = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        out.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        out.add_row(*(str(c) for c in row))
    return out


def write_json(path: Path | None, report: dict[str, Any]) -> None:
    """Write the report (default: ``reports/bench/<name>.json``) and say where."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    console.print(f"[dim]wrote {path}[/dim]")


def start_stub_model(stack: ExitStack, workdir: Path, *, delay: float = 0.0) -> dict[str, str]:
    """Start the stub OpenAI endpoint for the rest of ``stack``; return the settings that point
    the service at it. It answers at once, or after ``delay`` seconds per call."""
    port = free_port()
    stack.enter_context(
        running(
            "stub model",
            uvicorn_args("bench.stub_llm:app", port, factory=False),
            base_env(STUB_LLM_DELAY=str(delay)),
            workdir,
            port=port,
        )
    )
    return {
        "SUPPORTGRAPH_OPENAI_API_KEY": "sk-bench",
        "SUPPORTGRAPH_OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
        "SUPPORTGRAPH_MODEL": "stub-model",
    }
