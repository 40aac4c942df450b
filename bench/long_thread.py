"""Long threads: stored bytes, latency, server CPU and model context per turn up to 210 turns.

Three threads of 400-character customer messages, turn after turn (round robin, one request
at a time), against the real service, the same graph on stock LangGraph persistence and a
bare 2-node graph (CPU floor), each as its own server process, on SQLite and PostgreSQL. The
model is a stub OpenAI-compatible endpoint on loopback that answers at once and counts the
prompt (``bench/stub_llm.py``); ``--offline`` uses the local mode instead (no tokens then)::

    .venv/bin/python -m bench.long_thread [--turns 210] [--backends sqlite,postgres] [--json PATH]

Stored bytes are the thread's rows in every table (checkpoints, writes, blobs, transcript,
events, the session), read from the database after each turn; an increment at turn t is the
growth per turn over turns t-6..t+6.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
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
    median,
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

THREADS = 3
WINDOW = 6
FILLER = (
    " I have been a customer of yours for several years, and I would really appreciate a clear"
    " answer, because I have asked before and I am planning my next order around it."
)
APPS = {
    "supportgraph": None,
    "stock LangGraph": "bench.apps:stock_app",
    "bare 2-node": "bench.apps:bare_app",
}


def message(turn: int) -> str:
    """A 400-character customer message."""
    text = f"({turn}) {QUESTIONS[turn % len(QUESTIONS)]}"
    while len(text) < 400:
        text += FILLER
    return text[:400]


def late_turn(turns: int) -> int:
    """The late turn compared with turn 10: 200, or the last one with a full window."""
    return min(200, turns - WINDOW)


def sample_turns(turns: int) -> set[int]:
    """Turns after which stored bytes are read: the two windows, and every 10th."""
    late = late_turn(turns)
    windows = set(range(1, 10 + WINDOW + 2)) | set(range(late - WINDOW - 1, late + WINDOW + 1))
    return windows | set(range(10, turns + 1, 10))


class Bytes:
    """Bytes a thread holds in every table that names it (``thread_id`` / ``session_id``)."""

    def __init__(self, *, sqlite_path: Path | None = None, url: str | None = None) -> None:
        self.sqlite_path, self.url = sqlite_path, url

    def __call__(self, thread_id: str) -> int:
        """Total stored bytes of the thread."""
        if self.url:
            return self._postgres(self.url, thread_id)
        return self._sqlite(thread_id)

    def _sqlite(self, thread_id: str) -> int:
        assert self.sqlite_path is not None
        with sqlite3.connect(self.sqlite_path, timeout=30) as db:
            total = 0
            tables = db.execute(
                "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p"
                " WHERE m.type = 'table' AND p.name IN ('thread_id', 'session_id')"
            ).fetchall()
            for table_name, column in [*tables, ("sg_sessions", "id")]:
                columns = [r[1] for r in db.execute(f'PRAGMA table_info("{table_name}")')]
                if not columns:
                    continue
                size = " + ".join(f'COALESCE(LENGTH("{c}"), 0)' for c in columns)
                row = db.execute(
                    f'SELECT SUM({size}) FROM "{table_name}" WHERE "{column}" = ?', (thread_id,)
                ).fetchone()
                total += int(row[0] or 0)
        return total

    def _postgres(self, url: str, thread_id: str) -> int:
        import psycopg

        with psycopg.connect(url) as conn:
            tables = conn.execute(
                "SELECT c.table_name, c.column_name FROM information_schema.columns c"
                " JOIN information_schema.tables t ON t.table_schema = c.table_schema"
                " AND t.table_name = c.table_name WHERE c.table_schema = current_schema()"
                " AND t.table_type = 'BASE TABLE'"
                " AND c.column_name IN ('thread_id', 'session_id')"
            ).fetchall()
            total = 0
            for table_name, column in [*tables, ("sg_sessions", "id")]:
                exists = conn.execute("SELECT to_regclass(%s)", (table_name,)).fetchone()
                if not exists or exists[0] is None:
                    continue
                row = conn.execute(
                    f'SELECT COALESCE(SUM(pg_column_size(t.*)), 0) FROM "{table_name}" t'
                    f' WHERE "{column}" = %s',
                    (thread_id,),
                ).fetchone()
                total += int(row[0] if row else 0)
        return total


@dataclass
class Trace:
    """Per turn: latency, input tokens, stored bytes (sampled) and server CPU."""

    latency_ms: dict[int, list[float]] = field(default_factory=dict)
    tokens: dict[int, list[int]] = field(default_factory=dict)
    stored: dict[int, list[int]] = field(default_factory=dict)
    cpu_s: dict[int, float] = field(default_factory=dict)
    errors: int = 0

    def window(self, values: dict[int, list[Any]], at: int) -> list[Any]:
        """Values of the turns around ``at`` (all threads)."""
        return [v for t in range(at - WINDOW + 1, at + WINDOW) for v in values.get(t, [])]

    def increment(self, at: int) -> float:
        """Stored bytes added per turn around turn ``at`` (mean over the threads)."""
        before, after = self.stored.get(at - WINDOW), self.stored.get(at + WINDOW)
        if not before or not after:
            return 0.0
        return (sum(after) - sum(before)) / len(after) / (2 * WINDOW)

    def total(self, at: int) -> float:
        """Mean stored bytes of a thread after turn ``at``."""
        return sum(self.stored.get(at, [])) / max(1, len(self.stored.get(at, [])))

    def cpu_ms(self, at: int) -> float:
        """Server CPU per turn around turn ``at``."""
        turns = [t for t in range(at - WINDOW + 1, at + WINDOW) if t in self.cpu_s]
        return 1000 * sum(self.cpu_s[t] for t in turns) / (len(turns) * THREADS) if turns else 0.0

    def summary(self, turns: int) -> dict[str, Any]:
        """The figures at turn 10 and turn 200."""
        late = late_turn(turns)
        out: dict[str, Any] = {"errors": self.errors, "late_turn": late}
        for at in (10, late):
            out[f"turn_{at}"] = {
                "increment_bytes": round(self.increment(at)),
                "total_bytes": round(self.total(at)),
                "p50_ms": round(median(self.window(self.latency_ms, at)), 2),
                "input_tokens": median(self.window(self.tokens, at)),
                "cpu_ms": round(self.cpu_ms(at), 2),
            }
        out["stored_bytes_by_turn"] = {t: round(sum(v) / len(v)) for t, v in self.stored.items()}
        return out


async def run_threads(server: Server, measure: Bytes, turns: int, label: str) -> Trace:
    """Three threads, round robin, one request at a time."""
    trace = Trace()
    chats = [Chat(Connection(server.url)) for _ in range(THREADS)]
    sampled = sample_turns(turns)
    with bar() as progress:
        task = progress.add_task(label, total=turns * THREADS)
        for turn in range(1, turns + 1):
            cpu0 = server.cpu()
            for chat in chats:
                t0 = time.perf_counter()
                status, body = await chat.say(message(turn))
                trace.latency_ms.setdefault(turn, []).append(1000 * (time.perf_counter() - t0))
                trace.errors += status != 200
                trace.tokens.setdefault(turn, []).append(
                    int((body.get("usage") or {}).get("input_tokens", 0))
                )
                progress.advance(task)
            trace.cpu_s[turn] = server.cpu() - cpu0
            if turn in sampled:
                trace.stored[turn] = [measure(c.session_id or "") for c in chats]
    for chat in chats:
        await chat.conn.close()
    return trace


def run_backend(
    backend: str, *, turns: int, llm_env: dict[str, str], workdir: Path
) -> dict[str, Trace]:
    """Every app on one backend."""
    out = {}
    for app, target in APPS.items():
        name = f"{app} / {backend}"
        with ExitStack() as stack:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=workdir)))
            env = base_env(**(llm_env if target != "bench.apps:bare_app" else {}))
            if backend == "postgres":
                url = stack.enter_context(postgres_schema())
                env["SUPPORTGRAPH_DATABASE_URL"] = url
                measure = Bytes(url=url)
            else:
                path = folder / "bench.sqlite"
                env["SUPPORTGRAPH_SQLITE_PATH"] = str(path)
                measure = Bytes(sqlite_path=path)
            port = free_port()
            args = serve_args(port) if target is None else uvicorn_args(target, port)
            console.print(f"[dim]starting {name}[/dim]")
            server = stack.enter_context(running(name, args, env, folder, port=port))
            out[app] = asyncio.run(run_threads(server, measure, turns, name))
    return out


def report(results: dict[str, dict[str, Trace]], turns: int) -> dict[str, Any]:
    """Print the tables; return the figures and the targets."""
    late = late_turn(turns)
    rows: list[list[Any]] = []
    targets: list[dict[str, Any]] = []
    figures: dict[str, Any] = {}
    for backend, apps in results.items():
        figures[backend] = {app: trace.summary(turns) for app, trace in apps.items()}
        for app, trace in apps.items():
            inc10, inc_late = trace.increment(10), trace.increment(late)
            p10 = median(trace.window(trace.latency_ms, 10))
            p_late = median(trace.window(trace.latency_ms, late))
            tok10 = median(trace.window(trace.tokens, 10))
            tok_late = median(trace.window(trace.tokens, late))
            rows.append(
                [
                    f"{backend}  {app}",
                    f"{inc10 / 1024:.1f}",
                    f"{inc_late / 1024:.1f}",
                    ratio(inc_late, inc10),
                    f"{trace.total(late) / 2**20:.2f}",
                    f"{p10:.1f}",
                    f"{p_late:.1f}",
                    ratio(p_late, p10),
                    f"{tok10:.0f}",
                    f"{tok_late:.0f}",
                    ratio(tok_late, tok10) if tok10 else "-",
                    f"{trace.cpu_ms(10):.1f}",
                    f"{trace.cpu_ms(late):.1f}",
                    trace.errors,
                ]
            )
        ours, stock, bare = apps["supportgraph"], apps["stock LangGraph"], apps["bare 2-node"]
        checks = [
            (
                f"stored increment at turn {late} vs turn 10",
                ours.increment(late),
                ours.increment(10),
                "<= 2x",
                ours.increment(late) <= 2 * ours.increment(10),
                stock.increment(late) / max(1.0, stock.increment(10)),
            ),
            (
                f"total stored MB at turn {late}",
                ours.total(late) / 2**20,
                5.0,
                "< 5 MB",
                ours.total(late) < 5 * 2**20,
                stock.total(late) / 2**20,
            ),
        ]
        p10 = median(ours.window(ours.latency_ms, 10))
        p_late = median(ours.window(ours.latency_ms, late))
        checks.append(
            (
                f"turn p50 at {late} vs turn 10",
                p_late,
                p10,
                "<= 1.5x",
                p_late <= 1.5 * p10,
                median(stock.window(stock.latency_ms, late))
                / max(1e-9, median(stock.window(stock.latency_ms, 10))),
            )
        )
        tok10 = median(ours.window(ours.tokens, 10))
        tok_late = median(ours.window(ours.tokens, late))
        if tok10:
            checks.append(
                (
                    f"model input tokens at {late} vs turn 10",
                    tok_late,
                    tok10,
                    "<= 1.5x",
                    tok_late <= 1.5 * tok10,
                    median(stock.window(stock.tokens, late))
                    / max(1e-9, median(stock.window(stock.tokens, 10))),
                )
            )
        for at in (10, late):
            checks.append(
                (
                    f"server CPU per turn at {at} vs bare 2-node",
                    ours.cpu_ms(at),
                    bare.cpu_ms(at),
                    "<= 2x",
                    ours.cpu_ms(at) <= 2 * bare.cpu_ms(at),
                    stock.cpu_ms(at) / max(1e-9, bare.cpu_ms(at)),
                )
            )
        for name, value, base, goal, ok, stock_figure in checks:
            targets.append(
                {
                    "backend": backend,
                    "target": name,
                    "value": round(value, 3),
                    "baseline": round(base, 3),
                    "goal": goal,
                    "met": ok,
                    "stock": round(stock_figure, 3),
                }
            )
    console.print(
        table(
            f"Long threads: {THREADS} threads x {turns} turns of 400-character messages",
            [
                "server",
                "KiB/turn @10",
                f"KiB/turn @{late}",
                "x",
                f"MiB @{late}",
                "p50 ms @10",
                f"p50 ms @{late}",
                "x",
                "tokens @10",
                f"tokens @{late}",
                "x",
                "CPU ms @10",
                f"CPU ms @{late}",
                "errors",
            ],
            rows,
        )
    )
    console.print(
        table(
            "Targets (supportgraph; the stock column is the same figure for stock LangGraph)",
            ["backend", "target", "value", "baseline", "ratio", "goal", "verdict", "stock"],
            [
                [
                    t["backend"],
                    t["target"],
                    t["value"],
                    t["baseline"],
                    ratio(t["value"], t["baseline"]),
                    t["goal"],
                    verdict(t["met"]),
                    t["stock"],
                ]
                for t in targets
            ],
        )
    )
    return {"figures": figures, "targets": targets}


def main(argv: list[str] | None = None) -> None:
    """Run the long-thread bench."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=210)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--offline", action="store_true", help="Local mode instead of the stub.")
    parser.add_argument("--json", type=Path, default=Path("reports/bench/long_thread.json"))
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    if "postgres" in backends and not postgres_up():
        console.print(
            "[yellow]PostgreSQL is not reachable (TEST_DATABASE_URL): skipping it[/yellow]"
        )
        backends.remove("postgres")
    info = machine()
    console.print(f"[dim]{info}[/dim]")
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sgbench-")))
        llm_env = {} if args.offline else start_stub_model(stack, workdir)
        results = {
            b: run_backend(b, turns=args.turns, llm_env=llm_env, workdir=workdir) for b in backends
        }
    out = report(results, args.turns)
    mode = "offline" if args.offline else "llm-stub"
    write_json(args.json, {"bench": "long_thread", "machine": info, "mode": mode, **out})


if __name__ == "__main__":
    main()
