"""Memory of a worker over 10,000 turns in 1,000 sessions, beside a bare-endpoint baseline.

It starts the real service (``supportgraph serve``, one worker, SQLite, offline mode), sends
10,000 ``GET /health`` first (the baseline: what serving alone does to the worker's memory),
then 10 turns in each of 1,000 sessions from 32 concurrent customers, reading the worker's
RSS every 1,000 requests::

    .venv/bin/python -m bench.memory [--sessions 1000] [--turns 10] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    QUESTIONS,
    Chat,
    Connection,
    Server,
    bar,
    base_env,
    console,
    free_port,
    machine,
    ratio,
    rss_bytes,
    running,
    serve_args,
    table,
    verdict,
    write_json,
)

CONCURRENCY = 32
STEP = 1_000


async def health_load(server: Server, total: int) -> list[int]:
    """``total`` requests to ``/health``; RSS after every 1,000."""
    pid = server.worker_pid()
    conns = [Connection(server.url) for _ in range(CONCURRENCY)]
    samples = []
    with bar() as progress:
        task = progress.add_task("GET /health", total=total)
        for _ in range(total // STEP):
            await asyncio.gather(
                *(
                    _health(conn, STEP // CONCURRENCY + (i < STEP % CONCURRENCY))
                    for i, conn in enumerate(conns)
                )
            )
            samples.append(rss_bytes(pid))
            progress.advance(task, STEP)
    for conn in conns:
        await conn.close()
    return samples


async def _health(conn: Connection, n: int) -> None:
    for _ in range(n):
        await conn.request("GET", "/health")


async def turn_load(server: Server, sessions: int, turns: int) -> tuple[list[int], int]:
    """``sessions`` sessions of ``turns`` turns from 32 customers at once; RSS every 1,000."""
    pid = server.worker_pid()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for s in range(sessions):
        queue.put_nowait(s)
    done = errors = 0
    samples: list[int] = []
    with bar() as progress:
        task = progress.add_task("turns", total=sessions * turns)

        async def customer() -> None:
            nonlocal done, errors
            conn = Connection(server.url)
            while not queue.empty():
                s = queue.get_nowait()
                chat = Chat(conn)
                for t in range(turns):
                    status, _ = await chat.say(f"{QUESTIONS[(s + t) % len(QUESTIONS)]} ({s}/{t})")
                    errors += status != 200
                    done += 1
                    progress.advance(task)
                    if done % STEP == 0:
                        samples.append(rss_bytes(pid))
            await conn.close()

        await asyncio.gather(*(customer() for _ in range(CONCURRENCY)))
    return samples, errors


def main(argv: list[str] | None = None) -> None:
    """Run the memory bench."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1_000)
    parser.add_argument("--turns", type=int, default=10, help="Turns per session.")
    parser.add_argument("--json", type=Path, default=Path("reports/bench/memory.json"))
    args = parser.parse_args(argv)
    total = args.sessions * args.turns
    info = machine()
    console.print(f"[dim]{info}[/dim]")
    with tempfile.TemporaryDirectory(prefix="sgbench-") as tmp:
        folder = Path(tmp)
        env = base_env(SUPPORTGRAPH_SQLITE_PATH=str(folder / "bench.sqlite"))
        port = free_port()
        with running("supportgraph", serve_args(port), env, folder, port=port) as server:
            started = rss_bytes(server.worker_pid())
            health = asyncio.run(health_load(server, total))
            turns, errors = asyncio.run(turn_load(server, args.sessions, args.turns))
    mib = 2**20
    growth = turns[-1] / turns[0] if turns else 0.0
    base_growth = health[-1] / health[0] if health else 0.0
    rows: list[list[Any]] = [["worker RSS at start-up", f"{started / mib:.1f}", "", ""]]
    for i, (h, t) in enumerate(zip(health, turns, strict=False), start=1):
        rows.append([f"after {i * STEP:,} requests", f"{t / mib:.1f}", f"{h / mib:.1f}", ""])
    rows.append(
        [
            f"growth, {total:,} vs first {STEP:,}",
            ratio(turns[-1], turns[0]),
            ratio(health[-1], health[0]),
            "",
        ]
    )
    console.print(
        table(
            f"Worker RSS (MiB): {args.sessions:,} sessions x {args.turns} turns, c={CONCURRENCY}",
            ["", "turns", "GET /health (baseline)", ""],
            rows,
        )
    )
    ok = growth <= 1.10
    console.print(
        table(
            "Targets",
            ["target", "value", "baseline", "verdict"],
            [
                [
                    f"RSS after {total:,} turns within 10% of after {STEP:,}",
                    f"{growth:.3f}x",
                    f"{base_growth:.3f}x",
                    verdict(ok),
                ]
            ],
        )
    )
    write_json(
        args.json,
        {
            "bench": "memory",
            "machine": info,
            "sessions": args.sessions,
            "turns_per_session": args.turns,
            "errors": errors,
            "rss_start": started,
            "rss_turns": turns,
            "rss_health": health,
            "growth": growth,
            "baseline_growth": base_growth,
            "met": ok,
        },
    )


if __name__ == "__main__":
    main()
