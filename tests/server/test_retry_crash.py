"""kill -9 in the middle of a retry backoff loses nothing, in every persistent queue:
the job comes back retrying, with its attempt count and run-at time, and a job that
then dies is still dead after another kill -9."""

from __future__ import annotations

import signal

import pytest

from tests.interop.helpers import wait_until
from tests.interop.wire import Conn, P, admin
from tests.server.test_crash import Backend, backend
from tests.support import ServerProcess, free_port, start_geartrain

pytestmark = pytest.mark.slow

__all__ = ["backend"]  # the fixture, parametrized over the queues

POLICY = "flaky=3,backoff=fixed,min=2"


def record(server: ServerProcess, line: str) -> dict[bytes, bytes]:
    """An admin reply of ``key<TAB>value`` lines as a dict."""
    return dict(
        tuple(row.split(b"\t", 1))  # type: ignore[misc]
        for row in admin(server, line).split(b"\n")
        if b"\t" in row
    )


def fail_next(server: ServerProcess) -> bytes:
    """Grab the job as soon as it is due and fail it; the reschedule is then made
    durable by a marker job's add, which commits with it (JOB_CREATED means durable)."""
    with Conn(server, timeout=10) as worker:
        worker.register(b"flaky")
        handle, *_ = worker.grab_next(timeout=15)
        worker.send(P.WORK_FAIL, handle)
        worker.sync()
        worker.submit(b"marker", b"", b"", P.SUBMIT_JOB_BG)
    return handle


def kill_and_restart(server: ServerProcess, url: str) -> ServerProcess:
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    return start_geartrain(["--retry", POLICY], port=server.port, queue=url)


def test_kill_9_during_a_backoff_loses_nothing(backend: Backend) -> None:
    server = start_geartrain(["--retry", POLICY], port=free_port(), queue=backend.url)
    try:
        with Conn(server) as client:
            client.submit(b"flaky", b"order-7", b"payload", P.SUBMIT_JOB_BG)
        fail_next(server)
        before = record(server, "job unique flaky order-7")
        assert before[b"state"] == b"retrying" and before[b"attempts"] == b"1"

        server = kill_and_restart(server, backend.url)
        after = record(server, "job unique flaky order-7")
        assert after[b"state"] == b"retrying" and after[b"attempts"] == b"1"
        # Stored in whole seconds, rounded up: never earlier than it was due.
        assert 0 <= float(after[b"due"]) - float(before[b"due"]) < 1

        fail_next(server)
        fail_next(server)  # the third attempt: the job is dead
        wait_until(lambda: record(server, "job unique flaky order-7").get(b"state") == b"dead")
        server = kill_and_restart(server, backend.url)
        dead = record(server, "job unique flaky order-7")
        assert (dead[b"state"], dead[b"attempts"]) == (b"dead", b"3")
        shown = admin(server, "dead show " + dead[b"id"].decode())
        assert shown.count(b"\tfail\t") >= 2  # the outcomes since the first restart
    finally:
        server.kill()
