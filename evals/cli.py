"""``supportgraph eval``: run eval suites and report; ``supportgraph eval intents``: the intent
benchmark (``bench/intents.py``).

``supportgraph eval [PATHS]...`` is short for ``supportgraph eval run [PATHS]...``. Heavy
imports (the graph, the local mode) happen only when a command runs.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from supportgraph.settings import PROJECT_ROOT

if TYPE_CHECKING:
    from evals.cases import LoadedCase, Mode
    from evals.runner import CaseRun, RunOptions, RunResult

DEFAULT_COMMAND = "run"


class ModeName(StrEnum):
    """How the model is provided (see ``evals.runner``)."""

    offline = "offline"
    stub = "stub"
    live = "live"
    replay = "replay"


RUN_MODES: dict[ModeName, Mode] = {
    ModeName.offline: "offline",
    ModeName.stub: "stub",
    ModeName.live: "live",
    ModeName.replay: "replay",
}


class _DefaultToRun(TyperGroup):
    """A group whose first argument, unless it names a subcommand, belongs to ``run``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Insert ``run`` unless the first argument is a subcommand.

        ``ctx`` is a click context: click's own or, from typer 0.2x, typer's vendored copy.
        """
        if not args or args[0] not in self.commands:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(
    cls=_DefaultToRun,
    help="Run eval suites (scripted conversations) and report.",
    no_args_is_help=False,
)
# Logs (CI) are not terminals: give the tables room instead of rich's default 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


@eval_app.command(DEFAULT_COMMAND)
def run_command(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Suite files or folders (default: evals/suites).", show_default=False),
    ] = None,
    mode: Annotated[
        ModeName,
        typer.Option(
            "--mode",
            "-m",
            help="offline: local mode; stub: scripted model on a fake OpenAI server; live: the "
            "configured model (SUPPORTGRAPH_*); replay: a recording (see --replay).",
        ),
    ] = ModeName.offline,
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", "-k", help="Case id (glob), tag or suite name; repeatable."),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Cases at once.")] = 4,
    url: Annotated[
        str | None, typer.Option(help="Run against a server at this URL instead of in-process.")
    ] = None,
    repeat: Annotated[
        int, typer.Option(min=1, help="Run each case k times and report pass^k (live).")
    ] = 1,
    record: Annotated[
        Path | None, typer.Option(help="live: record every model exchange into this folder.")
    ] = None,
    replay: Annotated[
        Path | None, typer.Option(help="Replay the recording in this folder (sets --mode replay).")
    ] = None,
    stub_port: Annotated[
        int,
        typer.Option(
            help="Port of the fake OpenAI server (0: any). With --url, start the server under "
            "test with SUPPORTGRAPH_OPENAI_BASE_URL=http://127.0.0.1:PORT/v1."
        ),
    ] = 0,
    stub_timeout: Annotated[
        float, typer.Option(min=0.1, help="Model timeout (s) in stub mode.")
    ] = 2.0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the JSON report.")] = None,
    junit: Annotated[Path | None, typer.Option(help="Write a JUnit XML report.")] = None,
    markdown_path: Annotated[
        Path | None, typer.Option("--markdown", help="Write a Markdown report.")
    ] = None,
    report_dir: Annotated[
        Path | None,
        typer.Option(help="Write report.json, junit.xml and report.md into this folder."),
    ] = None,
    compare: Annotated[
        Path | None, typer.Option(help="An earlier JSON report: print what changed.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the service's warnings (model fallbacks).")
    ] = False,
) -> None:
    """Run eval suites: scripted conversations checked turn by turn.

    Exits 1 when any case fails, 2 when the suites or options are invalid.
    The intent benchmark is `supportgraph eval intents`.
    """
    from evals.cases import SuiteError, load_suites, select
    from evals.report import load_json
    from evals.runner import EvalSetupError, RunOptions

    run_mode: Mode = "replay" if replay is not None else RUN_MODES[mode]
    if not verbose:
        # Injected provider faults make the service log fallbacks; the report counts them.
        logging.getLogger("supportgraph").setLevel(logging.ERROR)
    shown_paths = [str(p) for p in paths] if paths else ["evals/suites"]
    try:
        cases = select(load_suites(paths or None), filters or [])
    except SuiteError as exc:
        err.print(f"[red]{len(exc.problems)} problem(s) in the eval suites:[/red]")
        for problem in exc.problems:
            err.print(f"  - {problem}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    if not cases:
        err.print(f"[red]no case matches {filters}[/red]")
        raise typer.Exit(2)
    old = None
    if compare is not None:
        try:
            old = load_json(compare)
        except (OSError, ValueError) as exc:
            err.print(f"[red]--compare: {exc}[/red]")
            raise typer.Exit(2) from None
    options = RunOptions(
        mode=run_mode,
        url=url,
        workers=workers,
        repeat=repeat,
        record_dir=record,
        replay_dir=replay,
        stub_port=stub_port,
        stub_timeout=stub_timeout,
    )
    # The console shows errors (warnings with --verbose); the runner captures every line for
    # the canary scan, whatever the console shows.
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING if verbose else logging.ERROR)
    logging.getLogger().addHandler(console)
    try:
        result = asyncio.run(_run(cases, options, quiet=quiet))
    except EvalSetupError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    finally:
        logging.getLogger().removeHandler(console)
    failed = _report(
        result,
        paths=shown_paths,
        filters=filters or [],
        old=old,
        json_path=json_path,
        junit=junit,
        markdown_path=markdown_path,
        report_dir=report_dir,
    )
    raise typer.Exit(1 if failed else 0)


async def _run(cases: list[LoadedCase], options: RunOptions, *, quiet: bool) -> RunResult:
    """Run the cases with a progress bar on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from evals.runner import Runner

    total = len([c for c in cases if c.runs_in(options.mode)]) * options.repeat
    progress = Progress(
        TextColumn("[bold]eval[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=False,
    )
    with progress:
        task = progress.add_task(f"{options.mode}: starting", total=total)
        failures = 0

        def done(run: CaseRun) -> None:
            nonlocal failures
            failures += run.failed
            mark = {
                "passed": "[green]ok[/green]",
                "failed": "[red]FAIL[/red]",
                "xfail": "[yellow]known issue[/yellow]",
                "xpass": "[cyan]known issue fixed?[/cyan]",
            }[run.outcome]
            state = f"[red]{failures} failed[/red]" if failures else "all passing"
            progress.update(task, description=f"{options.mode}: {state} · {run.case.id} {mark}")
            progress.advance(task)

        async with Runner(options) as runner:
            progress.update(task, description=f"{options.mode}: loading packs")
            return await runner.run(cases, on_done=done)


def _report(
    result: RunResult,
    *,
    paths: list[str],
    filters: list[str],
    old: dict[str, Any] | None,
    json_path: Path | None,
    junit: Path | None,
    markdown_path: Path | None,
    report_dir: Path | None,
) -> bool:
    """Print the summary, the failures and the changes; write the reports. True if any failed."""
    from evals.report import build_report, markdown, write_json, write_junit
    from evals.report import compare as compare_reports

    report = build_report(result, paths=paths, filters=filters)
    comparison = compare_reports(old, report) if old is not None else None
    out.print(summary_table(report))
    failed = [r for r in result.runs if r.failed]
    seen: set[str] = set()
    for run in failed:
        if run.case.id not in seen:
            seen.add(run.case.id)
            out.print(failure_panel(run))
    known = {r.case.id: r for r in result.runs if r.outcome == "xfail"}
    for run in known.values():
        out.print(known_issue_line(run), highlight=False)
    fixed = {r.case.id: r for r in result.runs if r.outcome == "xpass"}
    for run in fixed.values():
        out.print(
            f"[cyan]known issue no longer reproduces[/cyan] {run.case.id} ({run.mode}): "
            f"{run.known_issue} — remove it from known_issues in {run.case.path}",
            highlight=False,
        )
    for run in result.runs:
        for warning in run.warnings:
            err.print(f"[yellow]{run.case.id}: {warning}[/yellow]")
    if comparison is not None:
        out.print(compare_table(comparison))
    if report_dir is not None:
        json_path = json_path or report_dir / "report.json"
        junit = junit or report_dir / "junit.xml"
        markdown_path = markdown_path or report_dir / "report.md"
    if json_path is not None:
        write_json(report, json_path)
    if junit is not None:
        write_junit(result, junit)
    if markdown_path is not None:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(markdown(report, result.runs, comparison), encoding="utf-8")
    written = [str(p) for p in (json_path, junit, markdown_path) if p is not None]
    totals = report["totals"]
    verdict = (
        f"[red]{len(seen)} of {totals['cases']} cases failed[/red]"
        if failed
        else f"[green]all {totals['cases']} cases passed[/green]"
    )
    if totals["scanned_runs"]:
        style = "red" if totals["leaks"] else "green"
        out.print(
            f"[{style}]canary scan: {totals['scanned_runs']} runs scanned for "
            f"{totals['canaries']} canaries: {totals['leaks']} leaks "
            f"(in {totals['leaking_runs']} runs)[/{style}]"
        )
    skipped = f", {len(result.skipped)} skipped in this mode" if result.skipped else ""
    if known:
        skipped += f", {len(known)} known issue(s) still failing"
    out.print(f"{verdict}{skipped} ({result.options.mode}, {result.duration_s:.1f} s)")
    if written:
        out.print("reports: " + ", ".join(written), highlight=False)
    return bool(failed)


def summary_table(report: dict[str, Any]) -> Table:
    """Per-suite metrics and the totals."""
    from evals.metrics import METRICS, show
    from evals.report import metrics_rows

    run = report["run"]
    keys = [m for m in METRICS if m[0] != "pass_hat_k" or run["repeat"] > 1]
    table = Table(
        title=f"eval · {run['mode']} · {run['target']} · model {run['model'] or 'none (local)'}",
        title_justify="left",
    )
    table.add_column("suite", no_wrap=True)
    for _, label, _ in keys:
        table.add_column(label, justify="right")
    rows = metrics_rows(report)
    for i, (name, metrics) in enumerate(rows):
        style = "bold" if i == len(rows) - 1 else None
        rate = metrics.get("pass_rate")
        cells = [show(metrics.get(k), fmt) for k, _, fmt in keys]
        if rate is not None and rate < 1:
            cells[1] = f"[red]{cells[1]}[/red]"
        table.add_row(name, *cells, style=style, end_section=i == len(rows) - 2)
    return table


def known_issue_line(run: CaseRun) -> Text:
    """One line for a case that fails as a recorded known issue."""
    from evals.report import first_failure_line

    line = Text()
    line.append("KNOWN ISSUE ", style="bold yellow")
    line.append(f"{run.case.id} ({run.mode}): {run.known_issue}")
    line.append(f" [{first_failure_line(run)}]", style="dim")
    return line


def failure_panel(run: CaseRun) -> Panel:
    """Expected vs actual for the first failing turn of a case."""
    from evals.checks import excerpt, without_greeting
    from evals.report import _short

    title = f"[red]FAIL[/red] {run.case.id} [dim]({run.case.path})[/dim]"
    turn = run.first_failure
    if turn is None:
        return Panel(Text(run.error or "failed"), title=title, title_align="left")
    seen = turn.observed
    head = Text()
    head.append(f"turn {turn.index + 1} of {len(run.case.case.turns)}  ", style="bold")
    head.append(f"customer: {_short(turn.customer, 160)}\n")
    reply = without_greeting(seen.reply, run.case.pack().spec.greeting)
    head.append(f"reply: {_short(excerpt(reply), 300)}\n", style="dim")
    head.append(
        f"intent={seen.intent} status={seen.status} route={' → '.join(seen.route)}",
        style="dim",
    )
    table = Table(show_edge=False, box=None, padding=(0, 2))
    table.add_column("field", style="bold")
    table.add_column("expected", style="green", overflow="fold")
    table.add_column("actual", style="red", overflow="fold")
    for check in turn.failures:
        table.add_row(check.field, _short(check.expected, 80), _short(check.actual, 80))
    parts: list[Any] = [head, Text(""), table]
    if run.error:
        parts.append(Text(f"then: {run.error.splitlines()[0]}", style="red"))
    return Panel(Group(*parts), title=title, title_align="left")


def compare_table(comparison: dict[str, Any]) -> Group:
    """What changed since an earlier report."""
    from evals.metrics import METRICS, show
    from evals.report import show_delta

    lines = Text()
    for key, title, style in (
        ("newly_failing", "newly failing", "red"),
        ("newly_passing", "newly passing", "green"),
        ("added", "added", "cyan"),
        ("removed", "removed", "yellow"),
    ):
        items = comparison[key]
        lines.append(f"{title} ({len(items)}): ", style=f"bold {style}")
        lines.append((", ".join(items) or "none") + "\n")
    table = Table(title="changes since the earlier report", title_justify="left")
    for name in ("metric", "old", "new", "change"):
        table.add_column(name, justify="left" if name == "metric" else "right")
    for key, label, fmt in METRICS:
        d = comparison["totals"][key]
        table.add_row(label, show(d["old"], fmt), show(d["new"], fmt), show_delta(d["delta"], fmt))
    return Group(lines, table)


@eval_app.command(
    "intents",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def intents_command(ctx: typer.Context) -> None:
    """Intent accuracy of the offline classifier on Banking77 and CLINC150 (bench/intents.py)."""
    script = PROJECT_ROOT / "bench" / "intents.py"
    if not script.is_file():
        err.print(f"[red]{script} is not here (the benchmark ships with the repository)[/red]")
        raise typer.Exit(2)
    spec = importlib.util.spec_from_file_location("bench_intents", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    raise typer.Exit(int(module.main(list(ctx.args)) or 0))
