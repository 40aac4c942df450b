"""Fixtures for the security tests: contexts built once per pack, a stubbed model endpoint."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import respx

from nodes.context import SupportContext
from supportgraph import wiring
from tests.conftest import make_settings, stub_llm_settings
from tests.utils.openai import COMPLETIONS, ScriptedModel


@pytest.fixture(scope="session")
def context() -> Callable[..., SupportContext]:
    """``context(pack_path, model=False)``: a pack's context, fitted once per session.

    The model variant points at the respx-stubbed endpoint and shares the offline one's
    fitted local mode.
    """
    cache: dict[tuple[Path, bool], SupportContext] = {}

    def get(pack: Path, *, model: bool = False) -> SupportContext:
        if (pack, model) not in cache:
            if model:
                models = wiring.models(make_settings(pack_path=pack, **stub_llm_settings()))
                cache[pack, model] = dataclasses.replace(get(pack), models=models)
            else:
                cache[pack, model] = wiring.support_context(make_settings(pack_path=pack))
        return cache[pack, model]

    return get


@pytest.fixture
def llm() -> Iterator[Callable[[dict[str, list[Any]]], ScriptedModel]]:
    """``llm(script)``: the provider's endpoint answers from a per-tool script (respx)."""
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        route = mock.post(COMPLETIONS)

        def script(answers: dict[str, list[Any]]) -> ScriptedModel:
            model = ScriptedModel(answers)
            route.mock(side_effect=model)
            return model

        yield script
