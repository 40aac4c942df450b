"""Running ``supportgraph`` as a user does: a clean environment, a free port, a served app."""

from __future__ import annotations

import subprocess
from contextlib import AbstractContextManager
from pathlib import Path

from supportgraph.settings import PROJECT_ROOT
from tests.utils.servers import BIN, free_port, serve_process


def run_cli(
    args: list[str], env: dict[str, str], *, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``supportgraph ARGS`` from the repository root to completion."""
    return subprocess.run(
        [str(BIN), *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def serving(tmp_path: Path, env: dict[str, str]) -> AbstractContextManager[str]:
    """``supportgraph serve`` on a free port with exactly ``env``; killed at the end."""
    return serve_process(tmp_path, free_port(), env=env)
