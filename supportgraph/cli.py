"""The ``supportgraph`` command: serve, chat, graph, pack check."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel

from evals.cli import eval_app
from supportgraph.domain.loader import load_pack
from supportgraph.domain.pack import PackError
from supportgraph.settings import Settings

if TYPE_CHECKING:
    from checkpoints.retention import PruneReport

app = typer.Typer(
    help="supportgraph: a self-hosted customer-support agent service.", no_args_is_help=True
)
pack_app = typer.Typer(help="Domain packs.", no_args_is_help=True)
app.add_typer(pack_app, name="pack")
agent_app = typer.Typer(help="Agents of the hand-off console.", no_args_is_help=True)
app.add_typer(agent_app, name="agent")
app.add_typer(eval_app, name="eval")
console = Console()
err = Console(stderr=True)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (PostgreSQL only).")] = 1,
) -> None:
    """Start the HTTP service (uvicorn)."""
    import uvicorn

    settings = Settings()
    _check_pack(settings.pack_path)
    if workers > 1 and not settings.database_url:
        err.print(
            "[red]SQLite is single-process: run one worker, or set SUPPORTGRAPH_DATABASE_URL "
            "to a PostgreSQL database for several.[/red]"
        )
        raise typer.Exit(2)
    if workers > 1 and settings.rate_limit_enabled and not settings.shared_rate_limits:
        err.print(
            "[red]Rate limits in memory are per process: with several workers each would allow"
            " the whole limit. Set SUPPORTGRAPH_RATE_LIMIT_STORAGE=redis://HOST:6379/0 for"
            " limits the workers share (or SUPPORTGRAPH_RATE_LIMIT_ENABLED=false when a proxy"
            " in front limits requests).[/red]"
        )
        raise typer.Exit(2)
    mode = "local offline mode" if settings.offline else f"model {settings.model}"
    db = "PostgreSQL" if settings.database_url else f"SQLite {settings.sqlite_path}"
    err.print(f"supportgraph: pack {settings.pack_path}, {db}, {mode}")
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level=settings.log_level.lower(),
        # X-Forwarded-For is believed only from SUPPORTGRAPH_TRUSTED_PROXIES (the app applies
        # it), never from uvicorn's default of 127.0.0.1.
        proxy_headers=False,
        # Live event streams never end on their own: give them a few seconds, then stop.
        timeout_graceful_shutdown=5,
    )


@app.command()
def chat(
    session: Annotated[str | None, typer.Option(help="Continue this session id.")] = None,
) -> None:
    """Talk to the bot in the terminal (same persistence as the service)."""
    settings = Settings()
    _check_pack(settings.pack_path)
    try:
        asyncio.run(_chat(settings, session))
    except (KeyboardInterrupt, EOFError):
        console.print()


async def _chat(settings: Settings, session: str | None) -> None:
    from supportgraph import wiring
    from supportgraph.app.service import SessionNotFound, TurnLimitReached

    # Escalations here reach the agents' queue too; a running service sends the webhooks.
    async with wiring.running(settings, deliver_webhooks=False) as services:
        service = services.support
        if session is None:
            session = await service.new_session()
        else:
            try:
                await service.require(session)
            except SessionNotFound:
                err.print(f"[red]No session {session!r}.[/red]")
                raise typer.Exit(1) from None
        console.print(f"[dim]session {session} — Ctrl-D to leave[/dim]")
        interactive = sys.stdin.isatty()
        while True:
            line = (
                console.input("[bold cyan]you>[/bold cyan] ")
                if interactive
                else sys.stdin.readline()
            )
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            try:
                result = await service.turn(session, line[: settings.max_message_chars])
            except TurnLimitReached as exc:
                err.print(f"[yellow]{exc}[/yellow]")
                break
            meta = f"{result.intent} · {result.status} · {' → '.join(result.route)}"
            if result.citations:
                meta += " · cites " + ", ".join(c["id"] for c in result.citations)
            body = Markdown(result.reply) if result.reply else "[dim](a person will answer)[/dim]"
            console.print(Panel(body, title="bot", subtitle=meta, title_align="left"))


@app.command()
def graph(
    png: Annotated[Path | None, typer.Option(help="Also render a PNG with graphviz.")] = None,
) -> None:
    """Print the support graph as Mermaid."""
    from graphs.support import build_graph

    drawable = build_graph().compile().get_graph()
    console.print(drawable.draw_mermaid(), markup=False, highlight=False)
    if png is not None:
        dot = shutil.which("dot")
        if dot is None:
            err.print(
                "[yellow]graphviz is not installed (no 'dot' on PATH), so no PNG was written. "
                "Install it (e.g. apt-get install graphviz) or paste the Mermaid above into a "
                "Mermaid viewer.[/yellow]"
            )
            raise typer.Exit(1)
        source = _to_dot(drawable)
        subprocess.run([dot, "-Tpng", "-o", str(png)], input=source.encode(), check=True)
        err.print(f"wrote {png}")


def _to_dot(drawable: object) -> str:
    """Graphviz source for a LangGraph drawable graph (dashed edges are conditional)."""
    nodes = getattr(drawable, "nodes")  # noqa: B009 - drawable is langchain's Graph
    edges = getattr(drawable, "edges")  # noqa: B009
    lines = ["digraph support {", "  rankdir=TB;", "  node [shape=box, style=rounded];"]
    lines += [f'  "{n}";' for n in nodes]
    for e in edges:
        style = " [style=dashed]" if e.conditional else ""
        lines.append(f'  "{e.source}" -> "{e.target}"{style};')
    lines.append("}")
    return "\n".join(lines)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w`` or ``45s`` as a duration."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if match is None:
        raise typer.BadParameter(
            f"{text!r} is not a duration: use a number and a unit, e.g. 30d, 12h, 90m, 2w"
        )
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


@app.command()
def prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Delete sessions with no activity for this long (30d, 12h, 2w)."
        ),
    ],
    keep_checkpoints: Annotated[
        int | None,
        typer.Option(min=0, help="Checkpoints kept per live thread (default from settings)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count only; delete nothing.")] = False,
) -> None:
    """Delete idle sessions everywhere (audited) and trim live threads to their latest checkpoints.

    Safe while the service runs: each session is handled under its lock, and the latest state
    of a live thread never changes.
    """
    settings = Settings()
    age = parse_age(older_than)
    keep = settings.keep_checkpoints if keep_checkpoints is None else keep_checkpoints
    report = asyncio.run(_prune(settings, age, keep, dry_run))
    verb = "would delete" if dry_run else "deleted"
    console.print(
        f"{verb} {report.deleted} session(s) idle for {older_than}; "
        f"trimmed {report.trimmed_threads} thread(s) to their latest {keep} checkpoint(s) "
        f"({report.checkpoints_removed} removed)"
    )


async def _prune(settings: Settings, age: timedelta, keep: int, dry_run: bool) -> PruneReport:
    from checkpoints.retention import prune as prune_store
    from supportgraph import wiring

    async with wiring.persistence(settings) as persistence:
        return await prune_store(persistence.store, older_than=age, keep=keep, dry_run=dry_run)


@pack_app.command("check")
def pack_check(path: Annotated[Path, typer.Argument(help="The pack folder.")]) -> None:
    """Validate a domain pack and print its errors."""
    try:
        pack = load_pack(path)
    except PackError as exc:
        err.print(f"[red]{path}: {len(exc.problems)} problem(s)[/red]")
        for problem in exc.problems:
            err.print(f"  - {problem}", markup=False)
        raise typer.Exit(1) from None
    console.print(
        f"[green]ok[/green] {pack.name} {pack.version}: {len(pack.spec.intents)} intents, "
        f"{len(pack.spec.slots)} slots, {len(pack.faq)} FAQ entries, "
        f"{len(pack.spec.actions)} actions"
    )


_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _ttl_seconds(text: str) -> float:
    """``90``, ``30m``, ``12h`` or ``7d`` in seconds."""
    unit = text[-1:].lower()
    number = text[:-1] if unit in _TTL_UNITS else text
    try:
        value = float(number) * _TTL_UNITS.get(unit, 1)
    except ValueError:
        value = 0
    if value <= 0:
        raise typer.BadParameter(f"{text!r} is not a duration like 3600, 30m, 12h or 7d")
    return value


@agent_app.command("token")
def agent_token(
    name: Annotated[str, typer.Argument(help="The agent's name (the token's subject).")],
    role: Annotated[str, typer.Option(help="agent, or admin (may take over claims).")] = "agent",
    ttl: Annotated[
        str | None, typer.Option(help="Lifetime: 3600, 30m, 12h, 7d (default from settings).")
    ] = None,
) -> None:
    """Print an agent token for the agent console and /api/agent (same secret as the service)."""
    from datetime import timedelta

    from api.agent_auth import ROLES, AgentTokens

    if role not in ROLES:
        err.print(f"[red]--role must be one of {', '.join(ROLES)}, not {role!r}[/red]")
        raise typer.Exit(2)
    if not name.strip() or len(name) > 200:
        err.print("[red]NAME must be 1 to 200 characters[/red]")
        raise typer.Exit(2)
    settings = Settings()
    seconds = _ttl_seconds(ttl) if ttl else settings.agent_token_ttl_hours * 3600
    token = AgentTokens.from_settings(settings).issue(
        name, role=role, ttl=timedelta(seconds=seconds)
    )
    print(token)


def _check_pack(path: Path) -> None:
    try:
        load_pack(path)
    except PackError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None
