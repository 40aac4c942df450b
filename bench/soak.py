"""Soak: minutes of mixed conversations against the real service: 0 5xx, flat memory, no leak.

It starts the real service (``supportgraph serve``, offline mode, the load profile that lifts
the abuse limits) on SQLite or PostgreSQL, measures ``GET /health`` first (the baseline: the
bare endpoint's rate, and what serving alone does to the worker's memory), then runs
``--concurrency`` customers for ``--minutes``: each opens a session, plays one of a few
conversations (FAQ questions, an order lookup, a refund, a hand-off), reads its transcript
back and sometimes deletes the session, then starts over. Every few seconds it samples the
workers' RSS and, on PostgreSQL, the service's connections in ``pg_stat_activity``::

    .venv/bin/python -m bench.soak [--minutes 5] [--backend sqlite|postgres] [--concurrency 16]
        [--workers 1] [--json PATH]

Targets: no 5xx; RSS growth after the warm-up under 10%; the connection count stays within
the pool (workers x (pool size + the event listener)) and ends where the warm-up left it.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    DEFAULT_PG,
    QUESTIONS,
    REPO,
    Chat,
    Connection,
    HttpError,
    Server,
    base_env,
    console,
    free_port,
    machine,
    percentile,
    postgres_schema,
    postgres_up,
    process_tree,
    ratio,
    rss_bytes,
    running,
    serve_args,
    table,
    verdict,
    write_json,
)

APP_NAME = "sg_soak"
"""``application_name`` of the service's PostgreSQL connections (how they are counted)."""
POOL_MAX = 10
MIB = 2**20


def _orders() -> list[dict[str, str]]:
    with (REPO / "packs" / "store" / "data" / "orders.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


ORDERS = _orders()


def script(kind: str, rng: random.Random) -> list[str]:
    """The customer's messages for one conversation of this kind."""
    order = rng.choice(ORDERS)
    if kind == "faq":
        return rng.sample(QUESTIONS, 3)
    if kind == "order":
        return [f"where is my order {order['order_id']}?", order["email"], "thanks"]
    if kind == "refund":
        return [
            f"I want a refund for order {order['order_id']}, my email is {order['email']}",
            "it arrived damaged",
            "yes",
        ]
    return ["I want to talk to a person", "hello, are you there?"]


KINDS = ("faq", "faq", "order", "refund", "human")


@dataclass
class Tally:
    """Every request's kind, status and latency, and the samples taken along the way."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def record(self, kind: str, status: int, seconds: float) -> None:
        """Count one request."""
        self.statuses[(kind, status)] += 1
        self.latencies.setdefault(kind, []).append(1000 * seconds)

    def requests(self) -> int:
        """Requests so far."""
        return sum(self.statuses.values())

    def count(self, low: int, high: int) -> int:
        """Requests answered with a status in ``[low, high)``."""
        return sum(n for (_, s), n in self.statuses.items() if low <= s < high)


async def _timed(tally: Tally, kind: str, call: Any) -> int:
    """Await a request (its result starts with the status); count it; return the status."""
    start = time.perf_counter()
    try:
        status = int((await call)[0])
    except (ConnectionError, HttpError, asyncio.IncompleteReadError):
        status = 599
    tally.record(kind, status, time.perf_counter() - start)
    return status


async def customer(url: str, deadline: float, tally: Tally, seed: int) -> None:
    """Conversation after conversation until ``deadline``."""
    rng = random.Random(seed)
    conn = Connection(url)
    try:
        while time.monotonic() < deadline:
            chat = Chat(conn)
            for text in script(rng.choice(KINDS), rng):
                status = await _timed(tally, "turn", chat.say(text))
                if status != 200 or time.monotonic() >= deadline:
                    break
            if chat.session_id is None:
                continue
            path = f"/api/support/sessions/{chat.session_id}"
            auth = {"Authorization": f"Bearer {chat.token}"}
            await _timed(tally, "read", conn.request("GET", path, headers=auth))
            if rng.random() < 0.2:
                await _timed(tally, "delete", conn.request("DELETE", path, headers=auth))
    finally:
        await conn.close()


async def health_client(url: str, deadline: float, tally: Tally) -> None:
    """``GET /health`` until ``deadline`` (the baseline)."""
    conn = Connection(url)
    try:
        while time.monotonic() < deadline:
            await _timed(tally, "health", conn.request("GET", "/health"))
    finally:
        await conn.close()


def workers_of(server: Server, workers: int) -> list[int]:
    """The processes serving requests: the server itself, or uvicorn's worker processes."""
    if workers == 1:
        return [server.proc.pid]
    out = []
    for pid in process_tree(server.proc.pid)[1:]:
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            continue
    return out


def pg_connections(admin_url: str) -> int:
    """The service's sessions on the PostgreSQL server."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (APP_NAME,)
        ).fetchone()
    return int(row[0]) if row else 0


async def sampler(
    server: Server, workers: int, tally: Tally, stop: asyncio.Event, every: float, pg: bool
) -> None:
    """Every ``every`` seconds: time, requests, RSS per worker, PostgreSQL connections."""
    start = time.monotonic()
    while True:
        sample: dict[str, Any] = {
            "t": round(time.monotonic() - start, 1),
            "requests": tally.requests(),
            "rss": [rss_bytes(pid) for pid in workers_of(server, workers)],
        }
        if pg:
            sample["connections"] = await asyncio.to_thread(pg_connections, DEFAULT_PG)
        tally.samples.append(sample)
        try:
            await asyncio.wait_for(stop.wait(), every)
            return
        except TimeoutError:
            continue


async def phase(
    server: Server,
    *,
    label: str,
    seconds: float,
    concurrency: int,
    workers: int,
    every: float,
    pg: bool,
    load: str,
) -> Tally:
    """Run one load for ``seconds`` with a progress bar and the sampler."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    tally = Tally()
    deadline = time.monotonic() + seconds
    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler(server, workers, tally, stop, every, pg))
    if load == "health":
        clients = [health_client(server.url, deadline, tally) for _ in range(concurrency)]
    else:
        clients = [customer(server.url, deadline, tally, seed) for seed in range(concurrency)]
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with progress:
        task = progress.add_task(label, total=seconds, info="")
        work = asyncio.gather(*clients)
        while not work.done():
            await asyncio.sleep(0.5)
            left = max(0.0, deadline - time.monotonic())
            info = f"{tally.requests():,} requests, {tally.count(500, 600)} 5xx"
            progress.update(task, completed=seconds - left, info=info)
        await work
    stop.set()
    await sampling
    return tally


def summarize(
    soak: Tally, health: Tally, *, seconds: float, baseline: float, warmup: float, workers: int
) -> dict[str, Any]:
    """The figures and the targets, from the two phases' tallies and samples."""
    warm = [s for s in soak.samples if s["t"] >= warmup] or soak.samples[-1:]
    first, last = warm[0], soak.samples[-1]
    growth = [
        (end - begin) / begin if begin else 0.0
        for begin, end in zip(first["rss"], last["rss"], strict=False)
    ]
    health_growth = (
        (health.samples[-1]["rss"][0] - health.samples[0]["rss"][0]) / health.samples[0]["rss"][0]
        if health.samples and health.samples[0]["rss"]
        else 0.0
    )
    connections = [s["connections"] for s in warm if "connections" in s]
    ceiling = workers * (POOL_MAX + 1)
    turns = soak.latencies.get("turn", [])
    errors_5xx = soak.count(500, 600)
    out: dict[str, Any] = {
        "requests": soak.requests(),
        "by_kind": {k: len(v) for k, v in soak.latencies.items()},
        "status_counts": {f"{k} {s}": n for (k, s), n in sorted(soak.statuses.items())},
        "rate": soak.requests() / seconds,
        "turn_rate": len(turns) / seconds,
        "health_rate": health.requests() / baseline,
        "errors_5xx": errors_5xx,
        "non_2xx": soak.requests() - soak.count(200, 300),
        "turn_p50_ms": percentile(turns, 50),
        "turn_p95_ms": percentile(turns, 95),
        "turn_p99_ms": percentile(turns, 99),
        "rss_start": soak.samples[0]["rss"],
        "rss_after_warmup": first["rss"],
        "rss_end": last["rss"],
        "rss_max": [
            max(s["rss"][i] for s in warm if i < len(s["rss"])) for i in range(len(first["rss"]))
        ],
        "rss_growth": growth,
        "health_rss_growth": health_growth,
        "connections_min": min(connections) if connections else None,
        "connections_max": max(connections) if connections else None,
        "connections_after_warmup": connections[0] if connections else None,
        "connections_end": connections[-1] if connections else None,
        "connections_ceiling": ceiling if connections else None,
        "warmup_seconds": warmup,
    }
    targets = [
        {"target": "no 5xx", "value": errors_5xx, "goal": "0", "met": errors_5xx == 0},
        {
            "target": "RSS growth after the warm-up (worst worker)",
            "value": f"{100 * max(growth):.1f}%",
            "goal": "< 10%",
            "met": max(growth) < 0.10,
        },
    ]
    if connections:
        targets.append(
            {
                "target": "connections within the pool, back to the warm-up level",
                "value": f"{min(connections)}-{max(connections)}, end {connections[-1]}",
                "goal": f"<= {ceiling}, end <= {connections[0]} + {workers}",
                "met": max(connections) <= ceiling and connections[-1] <= connections[0] + workers,
            }
        )
    out["targets"] = targets
    return out


def report(figures: dict[str, Any], *, backend: str, minutes: float, concurrency: int) -> None:
    """Print the figures and the targets."""
    f = figures
    rows = [
        ["requests (turns / reads / deletes)", f"{f['requests']:,}", _kinds(f["by_kind"]), ""],
        ["requests/s, turns/s", f"{f['rate']:.1f}", f"{f['turn_rate']:.1f}", ""],
        ["GET /health/s (baseline, same server)", f"{f['health_rate']:.0f}", "", ""],
        ["turns/s vs GET /health/s", ratio(f["turn_rate"], f["health_rate"]), "", ""],
        ["5xx", f["errors_5xx"], "", ""],
        ["other non-2xx", f["non_2xx"] - f["errors_5xx"], "", ""],
        [
            "turn p50 / p95 / p99 ms",
            f"{f['turn_p50_ms']:.0f}",
            f"{f['turn_p95_ms']:.0f}",
            f"{f['turn_p99_ms']:.0f}",
        ],
        ["worker RSS MiB: start", _mib(f["rss_start"]), "", ""],
        [f"  after warm-up ({f['warmup_seconds']:.0f} s)", _mib(f["rss_after_warmup"]), "", ""],
        ["  end / max", _mib(f["rss_end"]), _mib(f["rss_max"]), ""],
        [
            "  growth after warm-up",
            ", ".join(f"{100 * g:+.1f}%" for g in f["rss_growth"]),
            f"/health: {100 * f['health_rss_growth']:+.1f}%",
            "",
        ],
    ]
    if f["connections_max"] is not None:
        rows.append(
            [
                "PostgreSQL connections min / max (after warm-up)",
                f["connections_min"],
                f["connections_max"],
                f"end {f['connections_end']}",
            ]
        )
    console.print(
        table(
            f"Soak: {minutes:g} min, {backend}, {concurrency} customers",
            ["figure", "value", "", ""],
            rows,
        )
    )
    console.print(
        table(
            "Targets",
            ["target", "value", "goal", "verdict"],
            [[t["target"], t["value"], t["goal"], verdict(t["met"])] for t in f["targets"]],
        )
    )


def _kinds(by_kind: dict[str, int]) -> str:
    return " / ".join(f"{by_kind.get(k, 0):,}" for k in ("turn", "read", "delete"))


def _mib(values: list[int]) -> str:
    return ", ".join(f"{v / MIB:.0f}" for v in values)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the soak bench; returns the report it writes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="Worker processes (PostgreSQL).")
    parser.add_argument("--sample", type=float, default=5.0, help="Seconds between samples.")
    parser.add_argument(
        "--warmup", type=float, default=None, help="Seconds excluded (default: 20%%, <= 60)."
    )
    parser.add_argument("--baseline", type=float, default=None, help="Seconds of GET /health.")
    parser.add_argument("--json", type=Path, default=Path("reports/bench/soak.json"))
    args = parser.parse_args(argv)
    if args.backend == "postgres" and not postgres_up():
        raise SystemExit("PostgreSQL is not reachable (TEST_DATABASE_URL)")
    if args.backend == "sqlite" and args.workers != 1:
        raise SystemExit("SQLite is single-process: --workers 1")
    seconds = 60 * args.minutes
    warmup = args.warmup if args.warmup is not None else min(60.0, 0.2 * seconds)
    baseline = args.baseline if args.baseline is not None else min(20.0, 0.1 * seconds)
    every = min(args.sample, max(0.5, seconds / 10))
    pg = args.backend == "postgres"
    info = machine()
    console.print(f"[dim]{info}[/dim]")
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sgsoak-")))
        env = base_env(SUPPORTGRAPH_POOL_MAX_SIZE=str(POOL_MAX))
        if pg:
            url = stack.enter_context(postgres_schema())
            env["SUPPORTGRAPH_DATABASE_URL"] = f"{url}&application_name={APP_NAME}"
        else:
            env["SUPPORTGRAPH_SQLITE_PATH"] = str(folder / "soak.sqlite")
        port = free_port()
        args_ = serve_args(port, workers=args.workers)
        server = stack.enter_context(running("supportgraph", args_, env, folder, port=port))
        common = {"concurrency": args.concurrency, "workers": args.workers, "pg": pg}
        health = asyncio.run(
            phase(
                server, label="GET /health", seconds=baseline, every=every, load="health", **common
            )
        )
        soak = asyncio.run(
            phase(server, label="soak", seconds=seconds, every=every, load="turns", **common)
        )
    figures = summarize(
        soak, health, seconds=seconds, baseline=baseline, warmup=warmup, workers=args.workers
    )
    report(figures, backend=args.backend, minutes=args.minutes, concurrency=args.concurrency)
    out = {
        "bench": "soak",
        "machine": info,
        "backend": args.backend,
        "minutes": args.minutes,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "pool_max_size": POOL_MAX,
        **figures,
        "samples": soak.samples,
        "baseline_samples": health.samples,
    }
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
