"""Worker loss, timeouts, retries, cancellation and delayed jobs (PROTOCOL.md §4.2, §8, §15).

These are the paths real workers hit all the time: libgearman workers drop their connection on
purpose to get a job retried, PHP workers register with timeouts, and operators cancel jobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.interop.helpers import wait_until
from tests.interop.wire import Conn, P, admin, server_alive, status
from tests.support import ServerProcess

pytestmark = pytest.mark.interop

NOT_FOUND_RESULT = b"JOB_NOT_FOUND\0Job given in work result not found"


def test_job_retries_limit_fails_the_job(
    server_kind: str, make_server: Callable[..., ServerProcess]
) -> None:
    """With ``-j 2`` the second worker loss drops the job with a bare-handle WORK_FAIL."""
    server = make_server(server_kind, "--job-retries=2")
    with Conn(server) as client:
        handle = client.submit(b"crashy", b"", b"x")
        for _ in range(2):
            with Conn(server) as worker:
                worker.register(b"crashy")
                assert worker.grab_next()[0] == handle
        assert client.recv() == (P.WORK_FAIL, handle)
    with Conn(server) as worker:
        worker.register(b"crashy")
        assert worker.grab() == (P.NO_JOB, [])


def test_can_do_timeout_requeues_after_at_least_a_second(any_server: ServerProcess) -> None:
    """CAN_DO_TIMEOUT is in milliseconds with a 1 000 ms floor; expiry requeues silently."""
    with Conn(any_server) as client, Conn(any_server) as slow, Conn(any_server) as other:
        slow.send(P.CAN_DO_TIMEOUT, b"timed", b"10")
        slow.sync()
        handle = client.submit(b"timed", b"", b"x")
        assert slow.grab_next()[0] == handle
        grabbed = time.monotonic()
        other.register(b"timed")
        assert other.grab_next(timeout=10)[0] == handle
        waited = time.monotonic() - grabbed
        assert 0.8 <= waited < 5, waited
        assert client.nothing_pending(0.1)  # the client is not told about the timeout

        slow.send(P.WORK_COMPLETE, handle, b"too late")
        assert slow.recv() == (P.ERROR, NOT_FOUND_RESULT)
        other.send(P.WORK_COMPLETE, handle, b"in time")
        assert client.recv() == (P.WORK_COMPLETE, handle + b"\0in time")


def test_cant_do_mid_job_requeues(any_server: ServerProcess) -> None:
    with Conn(any_server) as client, Conn(any_server) as first, Conn(any_server) as second:
        handle = client.submit(b"quit", b"", b"x")
        first.register(b"quit")
        first.grab_next()
        first.send(P.CANT_DO, b"quit")
        second.register(b"quit")
        assert second.grab_next()[0] == handle
        assert admin(any_server, "show jobs") == handle + b"\t1\t0\t0\n.\n"
        first.send(P.WORK_COMPLETE, handle, b"stale")
        assert first.recv() == (P.ERROR, NOT_FOUND_RESULT)
        second.send(P.WORK_COMPLETE, handle, b"fresh")
        assert client.recv() == (P.WORK_COMPLETE, handle + b"\0fresh")


def test_abandoned_foreground_job_is_not_run(any_server: ServerProcess) -> None:
    """gearmand keeps counting the abandoned job until a worker reaches it and discards it;
    geartrain removes it as soon as its client is gone."""
    with Conn(any_server) as gone:
        gone.submit(b"abandon", b"", b"nobody waits")
    if any_server.kind == "gearmand":
        assert status(any_server)["abandon"] == (1, 0, 0)
    else:
        wait_until(lambda: status(any_server)["abandon"] == (0, 0, 0), what="job removed")
    with Conn(any_server) as client, Conn(any_server) as worker:
        kept = client.submit(b"abandon", b"", b"wanted", P.SUBMIT_JOB_BG)
        worker.register(b"abandon")
        assert worker.grab_next()[::3] == [kept, b"wanted"]
        assert worker.grab() == (P.NO_JOB, [])


def test_cancel_running_job(any_server: ServerProcess) -> None:
    """Both servers tell the client at once; gearmand still forwards the worker's late result,
    geartrain refuses it (PROTOCOL.md §8.4)."""
    with Conn(any_server) as client, Conn(any_server) as worker:
        handle = client.submit(b"cancel_running", b"", b"x")
        worker.register(b"cancel_running")
        worker.grab_next()
        assert admin(any_server, "cancel job " + handle.decode()) == b"OK\r\n"
        assert client.recv() == (P.WORK_FAIL, handle)
        worker.send(P.WORK_COMPLETE, handle, b"late")
        if any_server.kind == "gearmand":
            assert client.recv() == (P.WORK_COMPLETE, handle + b"\0late")
        else:
            assert worker.recv() == (P.ERROR, NOT_FOUND_RESULT)
            assert client.nothing_pending()


def test_drop_function_with_queued_jobs(any_server: ServerProcess) -> None:
    """gearmand drops the function and leaves its queued jobs behind as orphans; geartrain must
    refuse while jobs are queued, or delete them."""
    with Conn(any_server) as conn:
        handle = conn.submit(b"orphaned", b"", b"x", P.SUBMIT_JOB_BG)
        reply = conn.admin("drop function orphaned")
        jobs = conn.admin("show jobs")
    if any_server.kind == "gearmand":
        assert reply == b"OK\r\n" and jobs == handle + b"\t0\t0\t1\n.\n"
    elif reply == b"OK\r\n":
        assert jobs == b".\n"
    else:
        assert reply.startswith(b"ERR ") and jobs == handle + b"\t0\t0\t1\n.\n"
    server_alive(any_server)


def test_epoch_job_waits_and_wakes_sleeping_worker(any_server: ServerProcess) -> None:
    """Not runnable before its time. gearmand 1.1 never wakes a sleeping worker when the time
    comes (issue #101); geartrain sends the NOOP (PROTOCOL.md §6.5)."""
    when = int(time.time()) + 2
    with Conn(any_server) as client, Conn(any_server, timeout=8) as worker:
        worker.register(b"later")
        client.send(P.SUBMIT_JOB_EPOCH, b"later", b"p", b"1000", b"past")
        past = client.expect(P.JOB_CREATED)
        client.send(P.SUBMIT_JOB_EPOCH, b"later", b"e", str(when).encode(), b"delayed")
        delayed = client.expect(P.JOB_CREATED)
        assert worker.grab_next()[::3] == [past, b"past"]  # a time in the past: runs at once
        assert worker.grab() == (P.NO_JOB, [])
        worker.send(P.PRE_SLEEP)
        if any_server.kind == "gearmand":
            assert worker.nothing_pending(when + 1.5 - time.time())
        else:
            assert worker.recv(timeout=when + 4 - time.time()) == (P.NOOP, b"")
            assert time.time() >= when - 0.1
        assert worker.grab_next()[::3] == [delayed, b"delayed"]
