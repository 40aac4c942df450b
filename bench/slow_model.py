"""Turns per second with a slow model: many customers at once, beside two ceilings measured in
the same run.

A stub OpenAI-compatible endpoint on loopback (``bench/stub_llm.py``) answers every call after
``--delay`` seconds (an asyncio sleep: it serves any number of calls at once). The real service
(``supportgraph serve``, LLM mode, pointed at the stub) runs on PostgreSQL (a fresh schema) or
SQLite, with one or two workers. N customers, each in their own session, send 3 FAQ questions
back to back (each after the previous reply); an FAQ turn asks the model to classify it, then
to answer it. Every non-200 answer (and every broken connection) is an error.

Before the N customers, one customer alone (a few 3-message sessions, one after another) gives
the ceilings N customers are held to:

- latency: N ÷ the median turn latency of one customer (no turn waits for another);
- CPU: what the service's CPU per turn allows. One worker runs on one core: 1 ÷ the service's
  CPU seconds per turn. Two workers share the machine's cores with the rest of the turn's work:
  cores ÷ (the service's CPU per turn + the rest's CPU per turn). The lower of these two bounds
  counts, for one worker too.

"The rest" is the processes that work for the turns besides the service: this one (the load
generator), the stub (its child) and, on PostgreSQL, the backends serving the service's
connections (found by their ``application_name``). Counting them by process, rather than the
machine's busy time less the service's, keeps what others run on a shared machine out of the
ceiling; the machine-wide figures are printed beside it (cores busy during the run, and in an
idle moment just before it) and that variant is in the JSON report.

The target: turns/s ≥ 0.8 × the lower ceiling, without errors::

    .venv/bin/python -m bench.slow_model [--backend postgres|sqlite ...] [--workers 1|2 ...]
        [--customers N ...] [--delay SECONDS] [--quick] [--json PATH]

With neither ``--backend`` nor ``--workers`` it runs PostgreSQL with 1 and 2 workers and SQLite
with 1 (SQLite is single-process); either flag alone narrows that set, both give every pair.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import Progress

from bench.common import (
    DEFAULT_PG,
    QUESTIONS,
    Chat,
    Connection,
    RunResult,
    Server,
    bar,
    base_env,
    busy_cores,
    console,
    cpu_seconds,
    drive,
    free_port,
    machine,
    machine_cpu,
    median,
    postgres_schema,
    postgres_up,
    process_tree,
    ratio,
    running,
    serve_args,
    start_stub_model,
    table,
    verdict,
    write_json,
)

TARGET = 0.8
"""Turns/s as a share of the lower ceiling that the issue asks for."""
MESSAGES = 3
"""Messages each customer sends, back to back."""
DEFAULT_CONFIGS = (("postgres", 1), ("postgres", 2), ("sqlite", 1))
NAMES = {"postgres": "PostgreSQL", "sqlite": "SQLite"}
RUN_TIMEOUT = 900.0
"""Seconds one config may take before the bench gives up (a hung service must not hang it)."""


@dataclass
class Customer(Chat):
    """A customer who asks FAQ questions and starts a new session every ``MESSAGES`` turns."""

    index: int = 0
    model_calls: int = 0
    statuses: Counter[int] = field(default_factory=Counter)


async def faq_step(customer: Customer, i: int) -> int:
    """Turn ``i``: the next FAQ question (a new session on every ``MESSAGES``-th turn)."""
    if i % MESSAGES == 0:
        customer.session_id = customer.token = None
    status, body = await customer.say(QUESTIONS[(customer.index + i) % len(QUESTIONS)])
    customer.statuses[status] += 1
    if status == 200:
        customer.model_calls += int((body.get("usage") or {}).get("llm_calls", 0))
    return status


@dataclass
class Rest:
    """The processes that work for the turns besides the service (see the module docstring)."""

    server: Server
    app_name: str | None
    """``application_name`` of the service's PostgreSQL connections (None on SQLite)."""

    def cpu(self) -> dict[int, float]:
        """CPU seconds so far of each process."""
        service = set(self.server.pids())
        pids = [pid for pid in process_tree(os.getpid()) if pid not in service]
        if self.app_name:
            import psycopg

            with psycopg.connect(DEFAULT_PG, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                    (self.app_name,),
                ).fetchall()
            pids += [int(row[0]) for row in rows]
        return {pid: cpu_seconds([pid]) for pid in pids}


def cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the processes of ``after`` used since ``before`` (new ones from zero)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


@dataclass
class Sizes:
    """How much each config runs."""

    customers: list[int]
    solo_sessions: int
    idle_seconds: float


async def _customers(
    rest: Rest, label: str, *, customers: int, turns: int, progress: Progress
) -> RunResult:
    """``customers`` customers at once, ``turns`` turns each; statuses, model calls and the
    rest's CPU in ``extra``."""
    numbers = itertools.count()
    made: list[Customer] = []

    def make(conn: Connection) -> Customer:
        made.append(Customer(conn, index=next(numbers)))
        return made[-1]

    step: Callable[[Any, int], Awaitable[int]] = faq_step
    rest_before = rest.cpu()
    run = await drive(
        label,
        url=rest.server.url,
        concurrency=customers,
        per_client=turns,
        step=step,
        make_client=make,
        server=rest.server,
        progress=progress,
        warmup=0,
    )
    rest_cpu = cpu_since(rest_before, rest.cpu())
    statuses: Counter[int] = Counter()
    for customer in made:
        statuses.update(customer.statuses)
    answered_errors = sum(n for status, n in statuses.items() if status != 200)
    if run.errors > answered_errors:
        statuses[599] += run.errors - answered_errors  # drive's mark for a broken connection
    ok = run.requests - run.errors
    run.extra.update(
        errors_by_status={str(s): n for s, n in sorted(statuses.items()) if s != 200},
        model_calls_per_turn=sum(c.model_calls for c in made) / ok if ok else 0.0,
        machine_busy_s=run.machine_busy_cores * run.seconds,
        rest_cpu_s=rest_cpu,
        rest_cpu_ms_per_turn=1000 * rest_cpu / ok if ok else 0.0,
    )
    return run


async def _measure(
    rest: Rest, *, name: str, workers: int, sizes: Sizes
) -> tuple[float, RunResult, list[RunResult]]:
    """Warm the workers up, read the idle machine, run one customer, then N customers."""
    with bar() as progress:
        # Every worker's first turn pays for lazy set-up (model client, tables, caches).
        await _customers(rest, f"{name} warm-up", customers=4 * workers, turns=1, progress=progress)
        before = machine_cpu()
        await asyncio.sleep(sizes.idle_seconds)
        idle_cores = busy_cores(before, machine_cpu())
        solo = await _customers(
            rest,
            f"{name} 1 customer",
            customers=1,
            turns=MESSAGES * sizes.solo_sessions,
            progress=progress,
        )
        runs = [
            await _customers(
                rest, f"{name} {n} customers", customers=n, turns=MESSAGES, progress=progress
            )
            for n in sizes.customers
        ]
    return idle_cores, solo, runs


def run_config(
    backend: str, workers: int, *, sizes: Sizes, model_env: dict[str, str], workdir: Path
) -> dict[str, Any]:
    """Start the service on one backend and worker count and measure it."""
    name = f"{NAMES[backend]} {workers}w"
    with ExitStack() as stack:
        env = base_env(**model_env)
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=workdir)))
        app_name = None
        if backend == "postgres":
            app_name = f"sg_slow_model_{os.getpid()}"
            url = stack.enter_context(postgres_schema())
            env["SUPPORTGRAPH_DATABASE_URL"] = f"{url}&application_name={app_name}"
        else:
            env["SUPPORTGRAPH_SQLITE_PATH"] = str(folder / "bench.sqlite")
        port = free_port()
        console.print(f"[dim]starting supportgraph / {name}[/dim]")
        server = stack.enter_context(
            running(name, serve_args(port, workers=workers), env, folder, port=port)
        )
        idle_cores, solo, runs = asyncio.run(
            asyncio.wait_for(
                _measure(Rest(server, app_name), name=name, workers=workers, sizes=sizes),
                RUN_TIMEOUT,
            )
        )
    return {"name": name, "workers": workers, "idle_cores": idle_cores, "solo": solo, "runs": runs}


def ceilings(config: dict[str, Any]) -> dict[str, float]:
    """The one-customer figures and the CPU ceiling they give (see the module docstring)."""
    solo: RunResult = config["solo"]
    cores = os.cpu_count() or 1
    ok = solo.requests - solo.errors
    service = solo.server_cpu_s / ok if ok else 0.0
    rest = solo.extra["rest_cpu_s"] / ok if ok else 0.0
    # The same from machine-wide busy time (less the service's and the idle moment's): what
    # others run on a shared machine lands in it.
    others = config["idle_cores"] * solo.seconds
    machine_rest = max(0.0, solo.extra["machine_busy_s"] - solo.server_cpu_s - others)
    machine_rest = machine_rest / ok if ok else 0.0
    per_worker = min(config["workers"], cores) / service if service else 0.0
    machine_wide = cores / (service + rest) if service else 0.0
    return {
        "latency_ms": median(solo.latencies_ms),
        "service_cpu_ms_per_turn": 1000 * service,
        "rest_cpu_ms_per_turn": 1000 * rest,
        "cpu_per_worker": per_worker,
        "cpu_machine": machine_wide,
        "cpu": min(per_worker, machine_wide),
        "machine_wide_rest_cpu_ms_per_turn": 1000 * machine_rest,
        "cpu_machine_from_machine_wide": cores / (service + machine_rest) if service else 0.0,
    }


def _errors(run: RunResult) -> str:
    by_status = run.extra["errors_by_status"]
    detail = ", ".join(f"{s}×{n}" for s, n in by_status.items())
    return f"{run.errors} ({detail})" if detail else str(run.errors)


def report(configs: list[dict[str, Any]], *, delay: float) -> dict[str, Any]:
    """Print the tables; return the JSON report's figures and targets."""
    solo_rows, rows, targets, figures = [], [], [], {}
    for config in configs:
        limits = ceilings(config)
        solo: RunResult = config["solo"]
        solo_rows.append(
            [
                config["name"],
                solo.requests,
                _errors(solo),
                f"{limits['latency_ms']:.0f}",
                f"{solo.pct(95):.0f}",
                f"{solo.extra['model_calls_per_turn']:.2f}",
                f"{limits['service_cpu_ms_per_turn']:.1f}",
                f"{limits['rest_cpu_ms_per_turn']:.1f}",
                f"{config['idle_cores']:.2f}",
                f"{solo.machine_busy_cores:.2f}",
                f"{limits['cpu_per_worker']:.1f}",
                f"{limits['cpu_machine']:.1f}",
            ]
        )
        runs = []
        for run in config["runs"]:
            latency = run.concurrency / (limits["latency_ms"] / 1000) if limits["latency_ms"] else 0
            lower = min(latency, limits["cpu"])
            share = run.rate / lower if lower else 0.0
            met = share >= TARGET and run.errors == 0
            rows.append(
                [
                    config["name"],
                    run.concurrency,
                    run.requests,
                    _errors(run),
                    f"{run.rate:.1f}",
                    f"{run.pct(50):.0f}",
                    f"{run.pct(95):.0f}",
                    f"{run.cpu_ms_per_request:.1f}",
                    f"{run.extra['rest_cpu_ms_per_turn']:.1f}",
                    f"{run.machine_busy_cores:.2f}",
                    f"{latency:.1f}",
                    f"{limits['cpu']:.1f}",
                    ratio(run.rate, lower),
                    verdict(met),
                ]
            )
            ceiling = {"latency": round(latency, 2), "cpu": round(limits["cpu"], 2)}
            runs.append({**run.summary(), "ceilings": ceiling, "share_of_lower": round(share, 3)})
            targets.append(
                {
                    "target": f"{config['name']} N={run.concurrency} turns/s vs lower ceiling",
                    "value": round(run.rate, 2),
                    "baseline": round(lower, 2),
                    "goal": f">= {TARGET}x, no errors",
                    "met": met,
                }
            )
        figures[config["name"]] = {
            "workers": config["workers"],
            "idle_machine_cores": round(config["idle_cores"], 3),
            "solo": {**solo.summary(), **{k: round(v, 3) for k, v in limits.items()}},
            "runs": runs,
        }
    console.print(
        table(
            f"One customer (3-message sessions, model delay {delay:g} s): the ceilings' inputs",
            [
                "config",
                "turns",
                "errors",
                "p50 ms",
                "p95 ms",
                "model calls/turn",
                "service CPU ms/turn",
                "rest CPU ms/turn",
                "idle cores",
                "cores busy",
                "CPU ceiling/worker",
                "CPU ceiling/machine",
            ],
            solo_rows,
        )
    )
    console.print(
        table(
            f"N customers x {MESSAGES} messages, model delay {delay:g} s "
            f"(target: turns/s >= {TARGET} x the lower ceiling, no errors)",
            [
                "config",
                "N",
                "turns",
                "errors",
                "turns/s",
                "p50 ms",
                "p95 ms",
                "service CPU ms/turn",
                "rest CPU ms/turn",
                "cores busy",
                "latency ceiling",
                "CPU ceiling",
                "x lower",
                "verdict",
            ],
            rows,
        )
    )
    return {"configs": figures, "targets": targets}


def configs_to_run(backends: list[str] | None, workers: list[int] | None) -> list[tuple[str, int]]:
    """The (backend, workers) pairs the flags ask for (see the module docstring)."""
    if backends and workers:
        pairs = [(b, w) for b in dict.fromkeys(backends) for w in dict.fromkeys(workers)]
    else:
        pairs = [
            (b, w)
            for b, w in DEFAULT_CONFIGS
            if (not backends or b in backends) and (not workers or w in workers)
        ]
    for backend, count in pairs:
        if backend == "sqlite" and count != 1:
            console.print("[yellow]SQLite is single-process: skipping SQLite 2w[/yellow]")
    return [(b, w) for b, w in pairs if b != "sqlite" or w == 1]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the slow-model bench; returns the report it writes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=("postgres", "sqlite"))
    parser.add_argument("--workers", action="append", type=int, choices=(1, 2))
    parser.add_argument(
        "--customers", action="append", type=int, help="N (repeatable; default 64 and 256)."
    )
    parser.add_argument("--delay", type=float, default=None, help="Seconds per model call (0.5).")
    parser.add_argument(
        "--solo-sessions", type=int, default=None, help="One-customer sessions (default 5)."
    )
    parser.add_argument(
        "--quick", action="store_true", help="A smoke run: N=8, delay 0.05 s, 2 solo sessions."
    )
    parser.add_argument("--json", type=Path, default=Path("reports/bench/slow_model.json"))
    args = parser.parse_args(argv)
    delay = args.delay if args.delay is not None else (0.05 if args.quick else 0.5)
    sizes = Sizes(
        customers=args.customers or ([8] if args.quick else [64, 256]),
        solo_sessions=args.solo_sessions or (2 if args.quick else 5),
        idle_seconds=0.5 if args.quick else 2.0,
    )
    if min(sizes.customers) < 1 or sizes.solo_sessions < 1 or delay < 0:
        parser.error("--customers and --solo-sessions must be >= 1, --delay >= 0")
    pairs = configs_to_run(args.backend, args.workers)
    if any(b == "postgres" for b, _ in pairs) and not postgres_up():
        console.print(
            "[yellow]PostgreSQL is not reachable (TEST_DATABASE_URL): skipping it[/yellow]"
        )
        pairs = [(b, w) for b, w in pairs if b != "postgres"]
    info = machine()
    console.print(f"[dim]{info}[/dim]")
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sgslow-")))
        model_env = start_stub_model(stack, workdir, delay=delay)
        configs = [
            run_config(b, w, sizes=sizes, model_env=model_env, workdir=workdir) for b, w in pairs
        ]
    out = {
        "bench": "slow_model",
        "machine": info,
        "delay_s": delay,
        "messages_per_customer": MESSAGES,
        "customers": sizes.customers,
        "solo_sessions": sizes.solo_sessions,
        "target_share_of_lower_ceiling": TARGET,
        **report(configs, delay=delay),
    }
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
