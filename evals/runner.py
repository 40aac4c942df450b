"""Run eval cases: pick the model for the mode, talk to the target, check every turn.

- ``offline``: no model (the local mode answers everything);
- ``stub``: the real ``langchain-openai`` client against :class:`FakeOpenAI`, which answers
  each case from its script;
- ``live``: the model the ``SUPPORTGRAPH_*`` settings configure; with a recording folder,
  through :class:`FakeOpenAI` as a recording proxy;
- ``replay``: :class:`FakeOpenAI` serves a recording, no key and no provider needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evals.canaries import CASE, MODEL_REQUEST, CaseLogs, Leak, capture_logs, scan
from evals.cases import Expect, LoadedCase, Mode
from evals.checks import Check, Scores, check_turn, scores
from evals.fake_openai import STUB_MODEL, Channel, Exchange, FakeOpenAI, Upstream
from evals.targets import Conversation, InProcess, Observed, OverHttp, Target
from supportgraph.settings import Settings

RECORDING_SCHEMA = 1
DEFAULT_OPENAI_URL = "https://api.openai.com/v1"


def _leak_check(leak: Leak) -> Check:
    """A leak as a failed check: the canary that must not be found, and where it was."""
    return Check("canary", f"{leak.canary} nowhere", f"{leak.where}: {leak.excerpt}", False)


class EvalSetupError(RuntimeError):
    """The run cannot start as asked (no key for live, no recording for replay...)."""


@dataclass(frozen=True)
class RunOptions:
    """How to run the cases."""

    mode: Mode = "offline"
    url: str | None = None
    workers: int = 4
    repeat: int = 1
    record_dir: Path | None = None
    replay_dir: Path | None = None
    stub_port: int = 0
    stub_timeout: float = 2.0
    """The client's timeout in stub and replay runs (a scripted timeout waits a bit longer)."""
    stub_retries: int = 1

    @property
    def target_name(self) -> str:
        """``url`` or ``in-process``."""
        return "url" if self.url else "in-process"


@dataclass
class TurnRun:
    """One turn of a case run: the message, the expectation, what happened, the checks."""

    index: int
    customer: str
    expect: Expect
    observed: Observed
    checks: list[Check]
    scores: Scores

    @property
    def passed(self) -> bool:
        """No check failed (checks that cannot be observed do not count)."""
        return all(c.ok is not False for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if c.ok is False]


@dataclass
class CaseRun:
    """One run of one case."""

    case: LoadedCase
    mode: Mode
    repeat: int
    turns: list[TurnRun] = field(default_factory=list)
    error: str | None = None
    duration_ms: float = 0.0
    warnings: list[str] = field(default_factory=list)
    leaks: list[Leak] = field(default_factory=list)
    """Canaries found outside the service (each is also a failed check of a turn)."""

    @property
    def scanned(self) -> bool:
        """Whether the run was scanned for canaries (the case has some)."""
        return bool(self.case.canaries)

    @property
    def passed(self) -> bool:
        """The case ran to the end and every turn passed."""
        return self.error is None and all(t.passed for t in self.turns)

    @property
    def known_issue(self) -> str | None:
        """The known product bug the case records for this mode, if any."""
        return self.case.known_issue(self.mode)

    @property
    def outcome(self) -> str:
        """``passed``, ``failed``, or for a case with a known issue ``xfail`` / ``xpass``."""
        if self.known_issue is not None:
            return "xpass" if self.passed else "xfail"
        return "passed" if self.passed else "failed"

    @property
    def failed(self) -> bool:
        """Whether the run fails the suite (a known issue that still fails does not)."""
        return self.outcome == "failed"

    @property
    def first_failure(self) -> TurnRun | None:
        """The first turn with a failed check."""
        return next((t for t in self.turns if not t.passed), None)


@dataclass
class RunResult:
    """Every case run, plus the cases the mode skipped."""

    options: RunOptions
    runs: list[CaseRun]
    skipped: list[LoadedCase]
    started_at: str
    duration_s: float
    model: str | None


class Runner:
    """Runs cases for one mode and target; an async context manager owning its resources.

    A :class:`FakeOpenAI` and a target may be passed in to share them between runners (tests
    do); otherwise the runner starts what the mode needs and stops it on exit.
    """

    def __init__(
        self,
        options: RunOptions,
        *,
        settings: Settings | None = None,
        provider: FakeOpenAI | None = None,
        target: Target | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.options = options
        self.settings = settings or Settings()
        self.provider = provider
        self._own_provider = provider is None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._workdir = workdir
        self._history_locks: dict[tuple[str, ...], asyncio.Lock] = {}
        self._replay_meta: dict[str, Any] = {}
        self.target: Target | None = target
        self._own_target = target is None
        self._logs: CaseLogs | None = None
        self._stack = contextlib.ExitStack()

    async def __aenter__(self) -> Runner:
        self._check_options()
        # Log lines are captured (and scanned for canaries) while the runner is open.
        self._logs = self._stack.enter_context(capture_logs())
        if self.provider is None and self._needs_provider():
            self.provider = FakeOpenAI(
                port=self.options.stub_port,
                hang_seconds=self._client_timeout() + 1.0,
                upstream=self._upstream(),
            ).start()
        if self.target is not None:
            pass
        elif self.options.url:
            self.target = OverHttp(self.options.url)
        else:
            if self._workdir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="sg-eval-")
                self._workdir = Path(self._tmp.name)
            self.target = InProcess(self.settings, self._workdir)
        if self.options.record_dir is not None:
            self._write_manifest(self.options.record_dir)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stack.close()
        self._logs = None
        if self.target is not None and self._own_target:
            await self.target.aclose()
        if self.provider is not None and self._own_provider:
            self.provider.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    # --- set-up ------------------------------------------------------------------------

    def _needs_provider(self) -> bool:
        mode = self.options.mode
        return mode in ("stub", "replay") or (
            mode == "live" and self.options.record_dir is not None
        )

    def _check_options(self) -> None:
        o = self.options
        if o.mode == "live" and self.settings.openai_api_key is None:
            raise EvalSetupError(
                "live mode needs a model: set SUPPORTGRAPH_OPENAI_API_KEY (and "
                "SUPPORTGRAPH_OPENAI_BASE_URL for a non-OpenAI endpoint)"
            )
        if o.mode == "replay":
            if o.replay_dir is None:
                raise EvalSetupError("replay mode needs --replay DIR (a folder --record wrote)")
            manifest = o.replay_dir / "recording.json"
            if not manifest.is_file():
                raise EvalSetupError(f"{manifest}: not found (is {o.replay_dir} a recording?)")
            self._replay_meta = json.loads(manifest.read_text(encoding="utf-8"))
        if o.record_dir is not None and o.mode != "live":
            raise EvalSetupError("--record works with --mode live only")
        if o.repeat < 1 or o.workers < 1:
            raise EvalSetupError("--repeat and --workers must be at least 1")

    def _upstream(self) -> Upstream | None:
        if self.options.mode != "live" or self.settings.openai_api_key is None:
            return None
        return Upstream(
            base_url=self.settings.openai_base_url or DEFAULT_OPENAI_URL,
            api_key=self.settings.openai_api_key.get_secret_value(),
            # Answer before the client gives up, so a slow provider is recorded as a failure.
            timeout=self.settings.llm_timeout * 0.9,
        )

    def _client_timeout(self) -> float:
        if self.options.mode == "replay":
            return float(self._replay_meta.get("llm_timeout", self.options.stub_timeout))
        if self.options.mode == "live":
            return self.settings.llm_timeout
        return self.options.stub_timeout

    def model_settings(self, channel: Channel | None) -> dict[str, Any] | None:
        """Settings overrides for a case's model (``None``: local mode)."""
        mode = self.options.mode
        if mode == "offline":
            return None
        if mode == "live" and channel is None:
            return {}
        assert channel is not None and self.provider is not None
        if mode == "live":  # recording: the same model, through the proxy
            return {"openai_api_key": channel.key, "openai_base_url": self.provider.base_url}
        retries = self.options.stub_retries
        if mode == "replay":
            retries = int(self._replay_meta.get("llm_max_retries", retries))
        return {
            "openai_api_key": channel.key,
            "openai_base_url": self.provider.base_url,
            "model": STUB_MODEL,
            "model_classify": None,
            "model_extract": None,
            "model_answer": None,
            "llm_timeout": self._client_timeout(),
            "llm_max_retries": retries,
        }

    def _write_manifest(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        manifest = {
            "schema_version": RECORDING_SCHEMA,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": self.settings.model,
            "structured_output_method": self.settings.structured_output_method,
            "llm_timeout": self.settings.llm_timeout,
            "llm_max_retries": self.settings.llm_max_retries,
        }
        (folder / "recording.json").write_text(json.dumps(manifest, indent=2) + "\n")

    @property
    def model_name(self) -> str | None:
        """The model the run used, for reports."""
        mode = self.options.mode
        if mode == "offline":
            return None
        if mode == "stub":
            return STUB_MODEL
        if mode == "replay":
            return f"replay of {self._replay_meta.get('model', '?')}"
        return self.settings.model

    # --- running -----------------------------------------------------------------------

    async def run(
        self,
        cases: Sequence[LoadedCase],
        *,
        on_done: Callable[[CaseRun], None] | None = None,
    ) -> RunResult:
        """Run every case ``repeat`` times, ``workers`` at a time."""
        started = datetime.now(UTC).isoformat(timespec="seconds")
        clock = time.perf_counter()
        runnable = [c for c in cases if c.runs_in(self.options.mode)]
        skipped = [c for c in cases if not c.runs_in(self.options.mode)]
        gate = asyncio.Semaphore(self.options.workers)

        async def one(case: LoadedCase, repeat: int) -> CaseRun:
            async with gate:
                result = await self.run_case(case, repeat=repeat)
            if on_done is not None:
                on_done(result)
            return result

        jobs = [one(c, r) for r in range(self.options.repeat) for c in runnable]
        runs = list(await asyncio.gather(*jobs))
        return RunResult(
            options=self.options,
            runs=runs,
            skipped=skipped,
            started_at=started,
            duration_s=time.perf_counter() - clock,
            model=self.model_name,
        )

    async def run_case(self, case: LoadedCase, *, repeat: int = 0) -> CaseRun:
        """Run one case to its end and check every turn; never raises for a case's failure."""
        assert self.target is not None, "use the runner as an async context manager"
        run = CaseRun(case=case, mode=self.options.mode, repeat=repeat)
        clock = time.perf_counter()
        channel: Channel | None = None
        # This task's log lines belong to this run (cases run concurrently).
        log_key = f"{case.id}#{repeat}#{id(run)}"
        token = CASE.set(log_key)
        try:
            channel = self._open_channel(case)
            model = self.model_settings(channel)
            greeting = case.pack().spec.greeting
            async with self.target.conversation(case.id, case.pack_path, model) as conversation:
                if case.case.notes and not await conversation.plant_notes(case.case.notes):
                    run.warnings.append("notes are planted in-process only: not planted")
                history: list[str] = []
                for index, turn in enumerate(case.case.turns):
                    history.append(turn.customer)
                    seen = await self._turn(conversation, channel, index, turn.customer, history)
                    expect = turn.expectation(self.options.mode)
                    run.turns.append(
                        TurnRun(
                            index=index,
                            customer=turn.customer,
                            expect=expect,
                            observed=seen,
                            checks=check_turn(expect, seen, greeting=greeting),
                            scores=scores(expect, seen),
                        )
                    )
                if case.canaries:
                    await self._scan(run, conversation, channel, history, log_key)
        except Exception as exc:  # noqa: BLE001 - a crashing case is a failed case, reported
            run.error = f"{type(exc).__name__}: {exc}\n" + "".join(
                traceback.format_exception(exc)[-6:]
            )
        finally:
            if channel is not None:
                self._close_channel(case, channel, run, repeat)
            if self._logs is not None:
                self._logs.take(log_key)
            CASE.reset(token)
        run.duration_ms = (time.perf_counter() - clock) * 1000
        return run

    async def _scan(
        self,
        run: CaseRun,
        conversation: Conversation,
        channel: Channel | None,
        said: list[str],
        log_key: str,
    ) -> None:
        """Look for the case's canaries everywhere the conversation left text.

        A leak becomes a failed ``canary`` check: of the turn whose reply holds it, else of
        the last turn. A canary the customer typed (by then) is theirs and not looked for.
        """
        canaries = run.case.canaries
        for turn in run.turns:
            where = f"turn {turn.index + 1} reply"
            found = scan(canaries, [(where, turn.observed.reply)], said=said[: turn.index + 1])
            run.leaks += found
            turn.checks += [_leak_check(leak) for leak in found]
        places = list(await conversation.artifacts())
        lines = self._logs.lines.get(log_key, []) if self._logs is not None else []
        places += [(f"log line {i + 1}", line) for i, line in enumerate(lines)]
        if channel is not None:
            sent = list(channel.sent)
            places += [(f"{MODEL_REQUEST} {i + 1}", body) for i, body in enumerate(sent)]
        found = scan(canaries, places, said=said)
        run.leaks += found
        if run.turns:
            run.turns[-1].checks += [_leak_check(leak) for leak in found]

    async def _turn(
        self,
        conversation: Conversation,
        channel: Channel | None,
        index: int,
        message: str,
        history: list[str],
    ) -> Observed:
        """Send one message with the case's channel set to this turn."""
        if channel is None or self.provider is None:
            return await conversation.send(message)
        # Over --url the provider tells cases apart by their conversation: two cases that
        # have said exactly the same so far take their turns one at a time.
        key = tuple(history) if self.options.url else (channel.key,)
        async with self._history_locks.setdefault(key, asyncio.Lock()):
            self.provider.begin_turn(channel, index, message)
            try:
                seen = await conversation.send(message)
            finally:
                events = self.provider.end_turn(channel)
        seen.model_calls = [e.tool for e in events]
        # A retried call repeats its problem: report each once.
        seen.problems = list(dict.fromkeys(e.problem for e in events if e.problem))
        seen.drift = sum(e.drift for e in events)
        return seen

    def _open_channel(self, case: LoadedCase) -> Channel | None:
        mode = self.options.mode
        if self.provider is None or mode == "offline":
            return None
        if mode == "stub":
            return self.provider.open_channel(case.id, scripts=[t.model for t in case.case.turns])
        if mode == "replay":
            return self.provider.open_channel(case.id, recording=self._recording(case))
        if self.options.record_dir is not None:
            return self.provider.open_channel(case.id, proxy=True)
        return None

    def _recording(self, case: LoadedCase) -> list[Exchange]:
        assert self.options.replay_dir is not None
        path = self.options.replay_dir / f"{case.id}.json"
        if not path.is_file():
            raise EvalSetupError(f"{path}: no recording for case {case.id}")
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Exchange.from_json(x) for x in data["exchanges"]]

    def _close_channel(self, case: LoadedCase, channel: Channel, run: CaseRun, repeat: int) -> None:
        assert self.provider is not None
        self.provider.close_channel(channel)
        if channel.kind == "replay":
            drift = sum(t.observed.drift for t in run.turns)
            if drift:
                run.warnings.append(
                    f"{drift} replayed request(s) differ from the recording "
                    "(prompts or the conversation changed since it was recorded)"
                )
        if channel.kind == "proxy" and self.options.record_dir is not None and repeat == 0:
            record = {
                "schema_version": RECORDING_SCHEMA,
                "case": case.id,
                "suite": case.suite,
                "exchanges": [x.to_json() for x in channel.recorded],
            }
            path = self.options.record_dir / f"{case.id}.json"
            path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
