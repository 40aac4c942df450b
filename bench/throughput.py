"""Turn throughput and latency over HTTP, beside the same-run baselines.

For SQLite (one process) and PostgreSQL (one and two worker processes), at concurrency 1 and
32, it starts as separate processes: the real service (``supportgraph serve``, offline mode),
the same graph on stock LangGraph persistence (``bench/apps.py:stock_app``) and a trivial
2-node graph on our checkpointer (``bench/apps.py:bare_app``); it measures ``GET /health`` of
the service (the bare endpoint in the same server) too. Each client is one customer with its
own session, asking FAQ questions turn after turn::

    .venv/bin/python -m bench.throughput [--backends sqlite,postgres] [--json PATH] [--llm]

``--llm`` points the service and the stock graph at a stub OpenAI-compatible endpoint that
answers at once (``bench/stub_llm.py``) instead of the offline local mode.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.common import (
    Chat,
    RunResult,
    Server,
    bar,
    base_env,
    chat_step,
    console,
    drive,
    escalated_step,
    free_port,
    health_step,
    machine,
    postgres_schema,
    postgres_up,
    ratio,
    running,
    serve_args,
    start_stub_model,
    table,
    uvicorn_args,
    verdict,
    write_json,
)

CONFIGS = [("SQLite", "sqlite", 1), ("PostgreSQL", "postgres", 1), ("PostgreSQL", "postgres", 2)]
APPS = ("supportgraph", "stock LangGraph", "bare 2-node")


def _server_args(app: str, port: int, workers: int) -> list[str]:
    if app == "supportgraph":
        return serve_args(port, workers=workers)
    target = "bench.apps:stock_app" if app.startswith("stock") else "bench.apps:bare_app"
    return uvicorn_args(target, port, workers=workers)


async def _stock_setup(url: str) -> None:
    """Run the stock saver's setup once (it is not safe to run from two workers at once)."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    async with AsyncPostgresSaver.from_conn_string(url) as saver:
        await saver.setup()


async def _measure(server: Server, *, app: str, sizes: dict[str, int]) -> list[RunResult]:
    results = []
    with bar() as progress:
        if app == "supportgraph":
            for c, n in ((1, sizes["health_c1"]), (32, sizes["health_c32"])):
                run = await drive(
                    f"{server.name} GET /health c={c}",
                    url=server.url,
                    concurrency=c,
                    per_client=n,
                    step=health_step,
                    make_client=lambda conn: conn,
                    server=server,
                    progress=progress,
                )
                run.extra["kind"] = "health"
                results.append(run)
        for c, n in ((1, sizes["c1"]), (32, sizes["c32"])):
            run = await drive(
                f"{server.name} turns c={c}",
                url=server.url,
                concurrency=c,
                per_client=n,
                step=chat_step,
                make_client=lambda conn: Chat(conn),
                server=server,
                progress=progress,
            )
            run.extra["kind"] = "turns"
            results.append(run)
        if app == "supportgraph":
            # The framework alone: a person has these sessions, so no node thinks.
            run = await drive(
                f"{server.name} escalated-session turns c=32",
                url=server.url,
                concurrency=32,
                per_client=sizes["c32"],
                step=escalated_step,
                make_client=lambda conn: Chat(conn),
                server=server,
                progress=progress,
            )
            run.extra["kind"] = "escalated"
            results.append(run)
    return results


def run_config(
    label: str,
    backend: str,
    workers: int,
    *,
    sizes: dict[str, int],
    llm_env: dict[str, str],
    workdir: Path,
) -> dict[str, list[RunResult]]:
    """Every app on one backend and worker count."""
    out: dict[str, list[RunResult]] = {}
    for app in APPS:
        name = f"{app} / {label} / {workers}w"
        with ExitStack() as stack:
            env = base_env(**(llm_env if app != "bare 2-node" else {}))
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=workdir)))
            if backend == "postgres":
                url = stack.enter_context(postgres_schema())
                env["SUPPORTGRAPH_DATABASE_URL"] = url
                if app.startswith("stock"):
                    asyncio.run(_stock_setup(url))
            else:
                env["SUPPORTGRAPH_SQLITE_PATH"] = str(folder / "bench.sqlite")
            port = free_port()
            console.print(f"[dim]starting {name}[/dim]")
            server = stack.enter_context(
                running(name, _server_args(app, port, workers), env, folder, port=port)
            )
            out[app] = asyncio.run(_measure(server, app=app, sizes=sizes))
    return out


def report(results: dict[str, dict[str, list[RunResult]]]) -> dict[str, Any]:
    """Print the tables; return the JSON report's figures and targets."""
    rows = []
    figures: dict[str, Any] = {}
    for key, apps in results.items():
        ours = apps["supportgraph"]
        health = {r.concurrency: r for r in ours if r.extra["kind"] == "health"}
        turns = {
            app: {r.concurrency: r for r in runs if r.extra["kind"] == "turns"}
            for app, runs in apps.items()
        }
        for c in (1, 32):
            h = health[c]
            rows.append(
                [
                    f"{key}  GET /health",
                    c,
                    f"{h.rate:.0f}",
                    "",
                    "",
                    f"{h.pct(50):.1f}",
                    f"{h.pct(95):.1f}",
                    f"{h.pct(99):.1f}",
                    f"{h.cpu_ms_per_request:.2f}",
                    "",
                    h.errors,
                    f"{h.machine_busy_cores:.2f}",
                ]
            )
            stock = turns["stock LangGraph"][c]
            bare = turns["bare 2-node"][c]
            for app in APPS:
                r = turns[app][c]
                rows.append(
                    [
                        f"{key}  {app}",
                        c,
                        f"{r.rate:.1f}",
                        ratio(r.rate, stock.rate) if app == "supportgraph" else "",
                        ratio(r.rate, h.rate),
                        f"{r.pct(50):.1f}",
                        f"{r.pct(95):.1f}",
                        f"{r.pct(99):.1f}",
                        f"{r.cpu_ms_per_request:.2f}",
                        ratio(r.cpu_ms_per_request, bare.cpu_ms_per_request),
                        r.errors,
                        f"{r.machine_busy_cores:.2f}",
                    ]
                )
        escalated = next(r for r in ours if r.extra["kind"] == "escalated")
        bare32 = turns["bare 2-node"][32]
        rows.append(
            [
                f"{key}  supportgraph, escalated sessions",
                32,
                f"{escalated.rate:.1f}",
                "",
                ratio(escalated.rate, health[32].rate),
                f"{escalated.pct(50):.1f}",
                f"{escalated.pct(95):.1f}",
                f"{escalated.pct(99):.1f}",
                f"{escalated.cpu_ms_per_request:.2f}",
                ratio(escalated.cpu_ms_per_request, bare32.cpu_ms_per_request),
                escalated.errors,
                f"{escalated.machine_busy_cores:.2f}",
            ]
        )
        figures[key] = {app: [r.summary() for r in runs] for app, runs in apps.items()}
    console.print(
        table(
            "Turn throughput and latency (each row beside same-run baselines)",
            [
                "server",
                "c",
                "req/s",
                "x stock",
                "x /health",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "CPU ms/req",
                "CPU x bare",
                "errors",
                "cores busy",
            ],
            rows,
        )
    )
    return {"runs": figures, "targets": targets(results)}


def _turns(results: dict[str, dict[str, list[RunResult]]], key: str, app: str, c: int) -> RunResult:
    return next(r for r in results[key][app] if r.extra["kind"] == "turns" and r.concurrency == c)


def targets(results: dict[str, dict[str, list[RunResult]]]) -> list[dict[str, Any]]:
    """The issue's targets, each with the figure, the baseline and the verdict."""
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float, baseline: float, goal: str, ok: bool) -> None:
        rows.append(
            {
                "target": name,
                "value": round(value, 2),
                "baseline": round(baseline, 2),
                "goal": goal,
                "met": ok,
            }
        )

    if "SQLite 1w" in results:
        ours = _turns(results, "SQLite 1w", "supportgraph", 32)
        stock = _turns(results, "SQLite 1w", "stock LangGraph", 32)
        add(
            "SQLite c=32 turns/s vs stock",
            ours.rate,
            stock.rate,
            ">= 3x",
            ours.rate >= 3 * stock.rate,
        )
        add("SQLite c=32 p50 ms", ours.pct(50), stock.pct(50), "< 100 ms", ours.pct(50) < 100)
    if "PostgreSQL 2w" in results:
        ours2 = _turns(results, "PostgreSQL 2w", "supportgraph", 32)
        stock2 = _turns(results, "PostgreSQL 2w", "stock LangGraph", 32)
        add(
            "PostgreSQL 2w c=32 turns/s vs stock",
            ours2.rate,
            stock2.rate,
            ">= 2x",
            ours2.rate >= 2 * stock2.rate,
        )
        if "PostgreSQL 1w" in results:
            ours1 = _turns(results, "PostgreSQL 1w", "supportgraph", 32)
            add(
                "PostgreSQL c=32 turns/s, 2 workers vs 1",
                ours2.rate,
                ours1.rate,
                ">= 1.6x",
                ours2.rate >= 1.6 * ours1.rate,
            )
    for key in results:
        ours = _turns(results, key, "supportgraph", 32)
        bare = _turns(results, key, "bare 2-node", 32)
        add(
            f"{key} server CPU per turn (turns 1-15) vs bare 2-node",
            ours.cpu_ms_per_request,
            bare.cpu_ms_per_request,
            "<= 2x",
            ours.cpu_ms_per_request <= 2 * bare.cpu_ms_per_request,
        )
        plumbing = next(r for r in results[key]["supportgraph"] if r.extra["kind"] == "escalated")
        add(
            f"{key} server CPU per turn, escalated sessions (no brains) vs bare 2-node",
            plumbing.cpu_ms_per_request,
            bare.cpu_ms_per_request,
            "<= 2x",
            plumbing.cpu_ms_per_request <= 2 * bare.cpu_ms_per_request,
        )
    console.print(
        table(
            "Targets",
            ["target", "value", "baseline", "ratio", "goal", "verdict"],
            [
                [
                    t["target"],
                    t["value"],
                    t["baseline"],
                    ratio(t["value"], t["baseline"]),
                    t["goal"],
                    verdict(t["met"]),
                ]
                for t in rows
            ],
        )
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run the throughput bench."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--turns-c1", type=int, default=40, help="Timed turns at c=1.")
    parser.add_argument("--turns-c32", type=int, default=15, help="Timed turns per client at c=32.")
    parser.add_argument("--llm", action="store_true", help="Use the stub model, not local mode.")
    parser.add_argument("--json", type=Path, default=Path("reports/bench/throughput.json"))
    args = parser.parse_args(argv)
    backends = set(args.backends.split(","))
    if "postgres" in backends and not postgres_up():
        console.print(
            "[yellow]PostgreSQL is not reachable (TEST_DATABASE_URL): skipping it[/yellow]"
        )
        backends.discard("postgres")
    sizes = {"c1": args.turns_c1, "c32": args.turns_c32, "health_c1": 300, "health_c32": 100}
    info = machine()
    console.print(f"[dim]{info}[/dim]")
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sgbench-")))
        llm_env = start_stub_model(stack, workdir) if args.llm else {}
        results = {}
        for label, backend, workers in CONFIGS:
            if backend in backends:
                results[f"{label} {workers}w"] = run_config(
                    label, backend, workers, sizes=sizes, llm_env=llm_env, workdir=workdir
                )
    out = report(results)
    write_json(
        args.json,
        {
            "bench": "throughput",
            "machine": info,
            "mode": "llm-stub" if args.llm else "offline",
            **out,
        },
    )


if __name__ == "__main__":
    main()
