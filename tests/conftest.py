"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from tests.support import GEARMAND, ServerProcess, start_gearmand, start_geartrain


@pytest.fixture(scope="session", autouse=True)
def _state_directory() -> Iterator[str]:
    """Servers started by tests keep their state (spool files, default queue) in a
    directory of the test run, never in the machine's own state directory."""
    given = os.environ.get("STATE_DIRECTORY")
    path = tempfile.mkdtemp(prefix="geartrain-test-state-")
    os.chmod(path, 0o1777)  # a server started with --user may write here too
    os.environ["STATE_DIRECTORY"] = path
    yield path
    if given is None:
        del os.environ["STATE_DIRECTORY"]
    else:
        os.environ["STATE_DIRECTORY"] = given
    shutil.rmtree(path, ignore_errors=True)


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """With env CI set, an interop test skipped for a missing client or server fails instead.

    Locally such tests skip with a "<tool> not installed: apt-get install ..." reason; in CI the
    clients are installed by scripts/install-deps, so a skip there would hide a broken setup.
    """
    import os

    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    if not (ci and report.skipped and item.get_closest_marker("interop") is not None):
        return
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
    if "not installed" in reason:
        report.outcome = "failed"
        report.longrepr = f"CI is set, so this interop test must run: {reason}"
