"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import GEARMAND, ServerProcess, start_gearmand, start_geartrain


@pytest.fixture
def geartrain_server() -> Iterator[ServerProcess]:
    """A fresh in-memory geartrain server process on a free loopback port."""
    server = start_geartrain()
    yield server
    server.stop()


@pytest.fixture
def gearmand_server() -> Iterator[ServerProcess]:
    """The real gearmand on a free loopback port (skips when not installed)."""
    if GEARMAND is None:
        pytest.skip("gearmand not installed: apt-get install gearman-job-server")
    server = start_gearmand()
    yield server
    server.stop()


@pytest.fixture(params=["geartrain", "gearmand"])
def any_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """Each test using this runs once against geartrain and once against gearmand."""
    if request.param == "gearmand":
        if GEARMAND is None:
            pytest.skip("gearmand not installed: apt-get install gearman-job-server")
        server = start_gearmand()
    else:
        server = start_geartrain()
    yield server
    server.stop()
