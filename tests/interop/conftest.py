"""Fixtures for the interop tests (real clients and the real gearmand)."""

from __future__ import annotations

from collections.abc import Iterator

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
