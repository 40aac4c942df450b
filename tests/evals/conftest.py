"""Fixtures for the eval harness tests: one event loop, one fake OpenAI server and one
in-process target for the whole session, and the suite cases run in batches per mode."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evals.cases import LoadedCase, Mode
from evals.fake_openai import FakeOpenAI
from evals.runner import CaseRun, Runner, RunOptions
from evals.targets import InProcess
from supportgraph.settings import Settings

STUB_TIMEOUT = 2.0
WORKERS = 4


def eval_settings(**overrides: Any) -> Settings:
    """Settings for the harness: no .env, the store pack, offline unless a run says so."""
    return Settings(_env_file=None, log_json=True, **overrides)


class EvalSession:
    """Runs the suite cases the session selected, all cases of a mode at once, on one loop.

    One loop for the whole session matters: ``langchain-openai`` caches its HTTP client per
    base URL, and a client must stay on the loop it was made on.
    """

    def __init__(
        self,
        loop: asyncio.Runner,
        provider: FakeOpenAI,
        workdir: Path,
        selected: dict[Mode, list[LoadedCase]],
    ) -> None:
        self.loop = loop
        self.provider = provider
        self.target = InProcess(eval_settings(), workdir)
        self.selected = selected
        self._results: dict[Mode, dict[str, CaseRun]] = {}

    def result(self, case: LoadedCase, mode: Mode) -> CaseRun:
        """The run of ``case`` in ``mode`` (the mode's selected cases run together once)."""
        if mode not in self._results:
            cases = self.selected.get(mode) or [case]
            self._results[mode] = self.loop.run(self._run(cases, mode))
        if case.id not in self._results[mode]:
            self._results[mode].update(self.loop.run(self._run([case], mode)))
        return self._results[mode][case.id]

    async def _run(self, cases: list[LoadedCase], mode: Mode) -> dict[str, CaseRun]:
        options = RunOptions(mode=mode, workers=WORKERS, stub_timeout=STUB_TIMEOUT)
        async with Runner(
            options, settings=eval_settings(), provider=self.provider, target=self.target
        ) as runner:
            result = await runner.run(cases)
        return {run.case.id: run for run in result.runs}


@pytest.fixture(scope="session")
def eval_session(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EvalSession]:
    """The shared harness; knows which (case, mode) pairs this pytest run selected."""
    selected: dict[Mode, list[LoadedCase]] = {}
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        case, mode = params.get("case"), params.get("mode")
        if isinstance(case, LoadedCase) and mode in ("offline", "stub"):
            selected.setdefault(mode, []).append(case)
    with asyncio.Runner() as loop:
        with FakeOpenAI(hang_seconds=STUB_TIMEOUT + 1.0) as provider:
            yield EvalSession(loop, provider, tmp_path_factory.mktemp("evals"), selected)
