"""A poison function (every one of 10,000 jobs fails) stays within the dead-letter
bounds, in memory and in the persistent queue."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from geartrain.client import Client
from geartrain.worker import WorkFail
from tests.client.helpers import wait_until, worker_thread
from tests.interop.wire import admin
from tests.support import ServerProcess, start_geartrain

pytestmark = pytest.mark.slow

JOBS = 10_000
KEPT = 100


def poison(job: Any) -> bytes:
    raise WorkFail()


def stats(server: ServerProcess) -> dict[bytes, int]:
    reply = admin(server, "dead stats")
    return {k: int(v) for k, v in (row.split(b"\t") for row in reply.split(b"\n") if b"\t" in row)}


def test_a_poison_function_stays_within_the_dead_letter_bounds(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    server = start_geartrain(
        ["--dead-letter", "--dead-letter-max-jobs", str(KEPT)], queue=f"sqlite:///{path}"
    )
    try:
        with Client([server.address], timeout=30) as client:
            for n in range(JOBS):
                client.submit_background("poison", b"%d" % n)
        with worker_thread(server.address, {"poison": poison}):
            wait_until(lambda: stats(server)[b"dropped"] == JOBS - KEPT, timeout=120)
        assert stats(server)[b"jobs"] == KEPT
    finally:
        server.stop()
    con = sqlite3.connect(path)
    try:
        rows = con.execute('SELECT data FROM "geartrain_dead" ORDER BY id').fetchall()
        left = con.execute('SELECT count(*) FROM "geartrain_jobs"').fetchone()[0]
    finally:
        con.close()
    assert [bytes(row[0]) for row in rows] == [b"%d" % n for n in range(JOBS - KEPT, JOBS)]
    assert left == 0
