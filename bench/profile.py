"""Where a turn's CPU goes: py-spy samples the real service while it serves turns.

Starts ``supportgraph serve`` as its own process (offline mode, or ``--llm``: the stub
OpenAI-compatible endpoint that answers at once), drives FAQ turns (or turns in sessions a
person has: ``--escalated``) over HTTP at the given concurrency, as ``bench/throughput.py``
does, and records the worker with py-spy meanwhile::

    .venv/bin/python -m bench.profile [--backend sqlite|postgres] [--seconds 20]
        [--concurrency 32] [--escalated] [--llm] [--out reports/bench]

It prints the share of the worker's busy samples by package (the innermost frame) and by
the service's own function (the innermost frame in this repository), beside turns/s and
server CPU per turn of the same run, and writes the folded stacks (``profile-*.txt``, input
for flamegraph.pl or speedscope) and a JSON summary. py-spy reads another process's memory:
it needs ptrace rights (root, or ``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    VENV_BIN,
    Chat,
    bar,
    base_env,
    chat_step,
    console,
    drive,
    escalated_step,
    free_port,
    machine,
    postgres_schema,
    running,
    serve_args,
    start_stub_model,
    table,
    write_json,
)

#: Innermost frames of a thread that waits (the event loop's poll, an idle worker thread).
IDLE_LEAVES = ("Runner.run ", "_worker ", "Condition.wait ", "Event.wait ", "Queue.get ")
OWN_CODE = ("supportgraph/", "nodes/", "api/", "checkpoints/", "graphs/")
NOT_OURS = "(none: the event loop, the framework or a library)"
TOP = 15


def fold(raw: str) -> tuple[int, Counter[str], Counter[str]]:
    """Busy samples, and their counts by package and by our innermost function.

    ``raw`` is py-spy's ``--format raw`` output: one ``frame;frame;... count`` line per stack,
    each frame ``function (file:line)``.
    """
    packages: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    busy = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        leaf = frames[-1]
        if leaf.startswith(IDLE_LEAVES) or "aiosqlite/core.py:59" in leaf:
            continue  # waiting, not working
        n = int(count)
        busy += n
        where = leaf.partition("(")[2]
        packages[where.split("/")[0].split(":")[0] or "?"] += n
        # The CLI's ``serve`` starts the server: below it, frames of ours or none.
        own = [f for f in frames if any(f"({p}" in f for p in OWN_CODE) and "/cli.py:" not in f]
        ours[own[-1].split(":")[0] + ")" if own else NOT_OURS] += n
    return busy, packages, ours


def _share_rows(counts: Counter[str], busy: int) -> list[list[Any]]:
    return [[name, f"{100 * n / busy:.1f}%"] for name, n in counts.most_common(TOP)]


def main(argv: list[str] | None = None) -> None:
    """Run the profile."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--escalated", action="store_true", help="sessions a person has")
    parser.add_argument("--llm", action="store_true", help="the stub model instead of offline")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench")
    args = parser.parse_args(argv)
    kind = ("escalated" if args.escalated else "faq") + ("-llm" if args.llm else "")
    stem = f"profile-{args.backend}-{kind}-c{args.concurrency}"
    info = machine()
    console.print(info)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        env = base_env(**(start_stub_model(stack, workdir) if args.llm else {}))
        if args.backend == "postgres":
            env["SUPPORTGRAPH_DATABASE_URL"] = stack.enter_context(postgres_schema())
        else:
            env["SUPPORTGRAPH_SQLITE_PATH"] = str(workdir / "bench.sqlite")
        port = free_port()
        server = stack.enter_context(
            running("supportgraph", serve_args(port), env, workdir, port=port)
        )
        folded = args.out / f"{stem}.txt"
        folded.parent.mkdir(parents=True, exist_ok=True)
        step = escalated_step if args.escalated else chat_step

        async def load(per_client: int) -> Any:
            with bar() as progress:
                return await drive(
                    f"{kind} turns c={args.concurrency}",
                    url=server.url,
                    concurrency=args.concurrency,
                    per_client=per_client,
                    step=step,
                    make_client=lambda conn: Chat(conn),
                    server=server,
                    progress=progress,
                )

        asyncio.run(load(5))  # warm: sessions, caches, connections
        spy = subprocess.Popen(
            [str(VENV_BIN / "py-spy"), "record", "--pid", str(server.worker_pid())]
            + ["--duration", str(args.seconds), "--rate", str(args.rate), "--nonblocking"]
            + ["--format", "raw", "--output", str(folded)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # Enough turns to outlast the recording at the warm-up's pace.
        run = asyncio.run(load(max(10, args.seconds * 3)))
        _, err = spy.communicate(timeout=args.seconds + 60)
        if spy.returncode != 0 or not folded.exists():
            raise SystemExit(f"py-spy failed ({spy.returncode}): {err.decode()[-2000:]}")
    busy, packages, ours = fold(folded.read_text())
    console.print(
        table(
            f"{kind} turns, c={args.concurrency}, {args.backend}: {run.rate:.1f} turns/s, "
            f"server CPU {run.cpu_ms_per_request:.2f} ms/turn, {busy} busy samples",
            ["innermost frame's package", "share of busy samples"],
            _share_rows(packages, busy),
        )
    )
    console.print(
        table(
            "Innermost frame in this repository (the service's own function on the stack)",
            ["function", "share of busy samples"],
            _share_rows(ours, busy),
        )
    )
    write_json(
        args.out / f"{stem}.json",
        {
            "bench": "profile",
            "machine": info,
            "backend": args.backend,
            "kind": kind,
            "run": run.summary(),
            "busy_samples": busy,
            "by_package": dict(packages.most_common()),
            "by_function": dict(ours.most_common()),
            "folded_stacks": str(folded),
        },
    )


if __name__ == "__main__":
    main()
