"""Crash points: the write boundaries of a turn and of an agent's action, where a test may
kill the process (``SUPPORTGRAPH_FAULT_CRASH_AT``) to prove what a restart finds.

A setting, not a mock: the real process dies there as under ``kill -9`` (exit status 137, no
clean-up, no ``finally``), and the test restarts it and reads what the database kept.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import get_args

from supportgraph.domain.types import CrashPoint

CRASH_POINTS: tuple[str, ...] = get_args(CrashPoint)


class CrashPoints:
    """Kill the process at the named points (none by default)."""

    def __init__(self, at: Iterable[str] = ()) -> None:
        self.at = frozenset(at)

    def __call__(self, point: CrashPoint) -> None:
        """Die here if asked to."""
        if point in self.at:
            sys.stderr.write(f"supportgraph: crash point {point} reached; exiting\n")
            sys.stderr.flush()
            os._exit(137)
