"""Every case of every suite under evals/suites, in offline and in stub mode, as a test.

A case that records a known product bug for a mode is reported as xfail while it fails
(with the failure view in the reason), and warns once it passes so the marker is removed.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from evals.cases import LoadedCase, Mode, load_suites
from evals.report import failure_text, first_failure_line

CASES = load_suites()
MODES: tuple[Mode, ...] = ("offline", "stub")


def test_the_store_suites_are_big_enough() -> None:
    store = [c for c in CASES if c.pack_path.name == "store"]
    assert len(store) >= 40
    tags = {t for c in store for t in c.tags}
    intents = {
        "order_status",
        "refund_request",
        "cancel_order",
        "change_address",
        "billing",
        "account_access",
        "shipping_question",
        "product_question",
        "support_ticket",
        "faq",
        "human",
    }
    assert intents <= tags, intents - tags
    assert {"languages", "typos", "emoji", "long-text", "provider-errors", "privacy"} <= tags


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_suite_case(case: LoadedCase, mode: Mode, eval_session: Any) -> None:
    if not case.runs_in(mode):
        pytest.skip(f"{case.id} does not run in {mode} mode")
    run = eval_session.result(case, mode)
    if run.known_issue is not None:
        if not run.passed:
            pytest.xfail(f"known issue: {run.known_issue} [{first_failure_line(run)}]")
        warnings.warn(
            f"{case.id} ({mode}) passes: remove its known issue from {case.path}",
            stacklevel=1,
        )
    assert run.passed, "\n" + failure_text(run)
