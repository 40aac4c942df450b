"""Schemathesis fuzzes every operation of the OpenAPI schema the real server publishes.

Each operation gets the examples and coverage phases (boundary values and one deliberately
broken part per case: wrong types, patterns, lengths, missing or unexpected parameters,
unsupported methods) and ``MAX_EXAMPLES`` generated requests, valid and invalid mixed, all
derandomized so CI replays the same requests. Every check schemathesis has runs on every
response: no 5xx, status codes, content types, headers and bodies as documented, invalid
data rejected, valid data accepted, authentication enforced (``ignored_auth`` re-sends each
accepted request without its credential and with a wrong one), a missing required header
refused, an unsupported method answered 405 with ``Allow``.

The stateful phase is not run: the schema declares no links between operations; the pool
of real sessions in ``target.py`` is how requests reach existing sessions instead. The
cases come from the schema the running server publishes, generated when a test runs, not
while pytest collects.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from schemathesis import Case, GenerationMode
from schemathesis.config import HealthCheck
from schemathesis.core.result import Ok
from schemathesis.generation.hypothesis.builder import (
    HypothesisTestConfig,
    HypothesisTestMode,
    create_test,
)
from schemathesis.openapi import from_url

from api.app import create_app
from tests.conftest import make_settings
from tests.fuzz.target import TALLY, FuzzTarget
from tests.utils.servers import TEST_SECRET

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 100
"""Generated requests per operation in the fuzzing phase (coverage cases come on top)."""
REQUEST_TIMEOUT = 20.0
"""Seconds any one request may take; a hung request fails the test instead of CI."""
SMALL_OPERATIONS = frozenset({"GET /health", "GET /ready"})
"""Operations without parameters or credentials: a handful of requests is all there is."""


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_target: FuzzTarget) -> Iterator[schemathesis.BaseSchema]:
    """The schema the server publishes at ``/openapi.json``, configured for a bounded run."""
    schema = from_url(f"{fuzz_target.base_url}/openapi.json")
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=MAX_EXAMPLES,
        deterministic=True,  # derandomized: the same requests on every run
        database="none",  # nothing from earlier runs is replayed (no .hypothesis/ folder)
        no_shrink=True,  # a failure is reported as found; shrinking over HTTP is unbounded
    )
    schema.config.update(
        base_url=fuzz_target.base_url,
        request_timeout=REQUEST_TIMEOUT,
        # Each example is a real HTTP request (a chat turn runs the graph): slow by design.
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    yield schema


def _operations() -> list[str]:
    """The operations of the app's schema (``METHOD /path``), read without generating cases."""
    settings = make_settings(secret_key=TEST_SECRET, sqlite_path=Path("/nonexistent/fuzz.sqlite"))
    spec = create_app(settings).openapi()
    return [f"{method.upper()} {path}" for path, ops in spec["paths"].items() for method in ops]


def _exchange(case: Case, fuzz_target: FuzzTarget) -> None:
    """Send one generated request; its answer must pass every check."""
    call = fuzz_target.prepare(case)
    response = case.call(session=fuzz_target.session_for(case), **call)
    TALLY.record(case, response)
    fuzz_target.after(case, response)
    case.validate_response(response, headers=call["headers"], transport_kwargs=call)


@pytest.mark.parametrize("label", _operations())
def test_operation(
    label: str, fuzz_schema: schemathesis.BaseSchema, fuzz_target: FuzzTarget
) -> None:
    """Every generated request for the operation gets a documented answer."""
    operation = fuzz_schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the schema the server publishes"
    # What ``@schema.parametrize()`` builds at collection, built here when the test runs
    # (its lazy form, ``from_fixture``, does not run on pytest 9.2): cases are generated
    # only for operations that are actually tested.
    run = create_test(
        operation=operation,
        test_func=_exchange,
        config=HypothesisTestConfig(
            project=fuzz_schema.config,
            modes=list(HypothesisTestMode),
            settings=fuzz_schema.config.get_hypothesis_settings(
                operation=operation, phase="fuzzing"
            ),
        ),
    )
    run(fuzz_target=fuzz_target)


def test_every_operation_was_fuzzed(fuzz_schema: schemathesis.BaseSchema) -> None:
    """Each operation got its generated requests, valid and invalid, and no 5xx answer."""
    summary = TALLY.summary()["operations"]
    for result in fuzz_schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        label = result.ok().label
        counts = summary.get(label, {})
        least = 5 if label in SMALL_OPERATIONS else MAX_EXAMPLES
        assert counts.get("requests", 0) >= least, (label, counts)
        assert counts.get("positive", 0) and counts.get("negative", 0), (label, counts)
        assert not [s for s in counts["statuses"] if s.startswith("5")], (label, counts)


def test_server_logged_no_unhandled_error(fuzz_target: FuzzTarget) -> None:
    """Nothing failed inside the server either (an error in a stream cannot change its 200)."""
    log = fuzz_target.log_path.read_text()
    assert "unhandled error" not in log and "Traceback" not in log, log[-5000:]
