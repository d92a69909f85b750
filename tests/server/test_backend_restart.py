"""The database behind the queue restarts under load: nothing acknowledged is lost.

Each backend runs as a private instance on a free port, so the test may stop and start
it while clients keep submitting; the server must reconnect by itself, refuse work with
ERROR QUEUE_ERROR while the database is down, and lose no acknowledged job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.backends import PrivateMariadb, PrivatePostgres, PrivateRedis, PrivateServer
from tests.server.load import Ledger, restart_and_check, run_load
from tests.support import free_port, start_geartrain

pytestmark = pytest.mark.slow

KINDS: dict[str, type[PrivateServer]] = {
    "postgres": PrivatePostgres,
    "mysql": PrivateMariadb,
    "redis": PrivateRedis,
}


@pytest.fixture(params=list(KINDS))
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrivateServer]:
    kind = KINDS[request.param]
    missing = kind.available()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    server = kind()
    try:
        server.start()
        yield server
    finally:
        server.stop()
        server.cleanup()


def test_database_restart_under_load_loses_nothing(database: PrivateServer, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    server = start_geartrain(
        ["--verbose", "INFO"], port=port, queue=database.url, log_path=str(log)
    )
    ledger = Ledger()
    try:
        stop, threads = run_load(
            port, ledger, lambda: len(ledger.acked) >= 300, clients=2, limit=100_000, pause=0.02
        )
        database.restart(down_for=1.0)
        target = len(ledger.acked) + 300
        deadline = time.monotonic() + 60
        while len(ledger.acked) < target and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join(20)
        assert len(ledger.acked) >= target, "submissions did not resume after the restart"
        assert server.stop() == 0
    finally:
        server.kill()
    text = log.read_bytes()
    assert b"reconnect" in text, "the server never noticed the restart"
    restart_and_check(port, database.url, ledger)
