"""Fixtures for the interop tests (real clients and the real gearmand)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.interop.helpers import MISSING, Processes
from tests.support import GEARMAND, ServerProcess, start_gearmand, start_geartrain


@pytest.fixture
def procs() -> Iterator[Processes]:
    """Start background programs (workers); whatever still runs is stopped after the test."""
    group = Processes()
    yield group
    group.stop_all()


@pytest.fixture
def server_pair() -> Iterator[dict[str, ServerProcess]]:
    """gearmand (the reference) and geartrain side by side, for scenarios run on both."""
    if GEARMAND is None:
        pytest.skip(f"gearmand {MISSING}: apt-get install gearman-job-server")
    reference = start_gearmand()
    try:
        ours = start_geartrain()
    except BaseException:
        reference.stop()
        raise
    yield {"gearmand": reference, "geartrain": ours}
    ours.stop()
    reference.stop()


@pytest.fixture(params=["geartrain", "gearmand"])
def server_kind(request: pytest.FixtureRequest) -> str:
    """Parametrizes a test over both servers when it starts them itself (see make_server)."""
    kind = str(request.param)
    if kind == "gearmand" and GEARMAND is None:
        pytest.skip(f"gearmand {MISSING}: apt-get install gearman-job-server")
    return kind


@pytest.fixture
def make_server() -> Iterator[Callable[..., ServerProcess]]:
    """Start a server of a given kind with extra command-line options; stopped after the test."""
    started: list[ServerProcess] = []

    def start(kind: str, *args: str) -> ServerProcess:
        server = start_gearmand(args=args) if kind == "gearmand" else start_geartrain(args=args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
