"""Fixtures for unit tests of the local mode: the real store and ISP packs, loaded once."""

from __future__ import annotations

import pytest

from supportgraph.domain.loader import load_pack
from supportgraph.domain.pack import Pack
from tests.conftest import ISP_PACK, STORE_PACK


@pytest.fixture(scope="session")
def store_pack() -> Pack:
    """The store pack (packs/store)."""
    return load_pack(STORE_PACK)


@pytest.fixture(scope="session")
def isp_pack() -> Pack:
    """The internet-provider pack used by tests (tests/packs/isp)."""
    return load_pack(ISP_PACK)
