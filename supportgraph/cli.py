"""The ``supportgraph`` command: serve, chat, graph, pack check."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel

from supportgraph.pack import PackError, load_pack
from supportgraph.settings import Settings

app = typer.Typer(
    help="supportgraph: a self-hosted customer-support agent service.", no_args_is_help=True
)
pack_app = typer.Typer(help="Domain packs.", no_args_is_help=True)
app.add_typer(pack_app, name="pack")
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
    from checkpoints import open_persistence
    from graphs.support import build_graph
    from nodes.context import SupportContext
    from supportgraph.service import SessionNotFound, SupportService

    async with open_persistence(
        database_url=settings.database_url, sqlite_path=settings.sqlite_path
    ) as persistence:
        service = SupportService(
            graph=build_graph().compile(checkpointer=persistence.saver),
            context=SupportContext.from_settings(settings, requests=persistence.store),
            store=persistence.store,
            durability=settings.durability,
        )
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
            result = await service.turn(session, line[:4000])
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


def _check_pack(path: Path) -> None:
    try:
        load_pack(path)
    except PackError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None
