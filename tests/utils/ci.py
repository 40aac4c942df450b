"""The one rule for tests that need a service: under CI they fail, never skip."""

from __future__ import annotations

import os

import pytest


def under_ci() -> bool:
    """Whether the suite runs under CI (``CI=true``, as ``.ci/run`` is started)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(available: bool, message: str, *, needed_by: str, hint: str = "") -> None:
    """Go on when ``available``; otherwise fail loudly under CI, skip on a developer's laptop.

    ``needed_by`` names the tests that must run under CI; ``hint`` says how to provide it.
    """
    if available:
        return
    if under_ci():
        pytest.fail(f"{message} (CI=true: {needed_by} must run)", pytrace=False)
    pytest.skip(f"{message} ({hint})" if hint else message)
