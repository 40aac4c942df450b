"""Shared fixtures: settings per backend (real PostgreSQL or SQLite), the app over HTTP, packs."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from supportgraph.settings import PROJECT_ROOT, Settings
from tests.utils.db import fresh_schema
from tests.utils.openai import BASE_URL

STORE_PACK = PROJECT_ROOT / "packs" / "store"
ISP_PACK = PROJECT_ROOT / "tests" / "packs" / "isp"
TEST_SECRET = "test-secret-of-at-least-32-bytes-for-hs256"

# A developer's environment must not leak into tests (and no test may reach a real provider).
for _name in [n for n in os.environ if n.startswith("SUPPORTGRAPH_") or n.startswith("OPENAI_")]:
    del os.environ[_name]


def make_settings(**overrides: Any) -> Settings:
    """Settings for a test: no .env, offline unless a key is given, fast retries."""
    values: dict[str, Any] = {"log_json": True, "llm_max_retries": 0, "llm_timeout": 5.0}
    values.update(overrides)
    return Settings(_env_file=None, **values)


def stub_llm_settings(**overrides: Any) -> dict[str, Any]:
    """Overrides that point the model at the respx-stubbed OpenAI endpoint."""
    return {
        "openai_api_key": "sk-test",
        "openai_base_url": BASE_URL,
        "model": "stub-model",
        **overrides,
    }


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Settings overrides for each persistence backend."""
    if request.param == "sqlite":
        yield {"sqlite_path": tmp_path / "sg.sqlite", "secret_key": TEST_SECRET}
    else:
        with fresh_schema() as url:
            yield {
                "database_url": url,
                "sqlite_path": tmp_path / "unused.sqlite",
                "secret_key": TEST_SECRET,
            }


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> dict[str, Any]:
    """Settings overrides for SQLite only."""
    return {"sqlite_path": tmp_path / "sg.sqlite", "secret_key": TEST_SECRET}


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app with its lifespan, behind an HTTP client."""
    from api.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
def app_factory() -> Callable[..., Any]:
    """``async with app_factory(**settings) as client``: a running app per call."""

    def factory(**overrides: Any) -> Any:
        return running_app(make_settings(**overrides))

    return factory
