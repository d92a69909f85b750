"""gearmand's command-line options that change behaviour on the wire, and reduce jobs.

geartrain takes the same option spellings so deployment scripts carry over; each test starts
both servers with the same options and checks what a client or worker sees.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.interop.wire import Conn, P
from tests.support import ServerProcess

pytestmark = pytest.mark.interop

MakeServer = Callable[..., ServerProcess]


def test_job_handle_prefix_and_numbering(server_kind: str, make_server: MakeServer) -> None:
    server = make_server(server_kind, "--job-handle-prefix=T:interop")
    with Conn(server) as conn:
        first = conn.submit(b"f", b"a", b"x", P.SUBMIT_JOB_BG)
        again = conn.submit(b"f", b"a", b"x", P.SUBMIT_JOB_BG)  # coalesced: no new number
        second = conn.submit(b"f", b"b", b"x", P.SUBMIT_JOB_BG)
    assert (first, again, second) == (b"T:interop:1", b"T:interop:1", b"T:interop:2")


def test_exceptions_for_every_client(server_kind: str, make_server: MakeServer) -> None:
    """``--exceptions`` forwards WORK_EXCEPTION to clients that never sent OPTION_REQ."""
    server = make_server(server_kind, "--exceptions")
    with Conn(server) as client, Conn(server) as worker:
        worker.register(b"ex")
        handle = client.submit(b"ex", b"", b"x")
        worker.grab_next()
        worker.send(P.WORK_EXCEPTION, handle, b"details")
        assert client.recv() == (P.WORK_EXCEPTION, handle + b"\0details")


def _sleeping_workers(server: ServerProcess, count: int, function: bytes) -> list[Conn]:
    workers = []
    for _ in range(count):
        worker = Conn(server)
        worker.register(function)
        assert worker.grab() == (P.NO_JOB, [])
        worker.send(P.PRE_SLEEP)
        worker.sync()
        workers.append(worker)
    return workers


def _woken(workers: list[Conn]) -> list[int]:
    woken = []
    for index, worker in enumerate(workers):
        if not worker.nothing_pending(0.3):
            assert worker.recv() == (P.NOOP, b"")
            woken.append(index)
    return woken


def test_every_sleeping_worker_is_woken_once(any_server: ServerProcess) -> None:
    workers = _sleeping_workers(any_server, 3, b"wake")
    try:
        with Conn(any_server) as client:
            client.submit(b"wake", b"", b"1", P.SUBMIT_JOB_BG)
            assert _woken(workers) == [0, 1, 2]
            client.submit(b"wake", b"", b"2", P.SUBMIT_JOB_BG)
            assert _woken(workers) == []  # already NOOPed, not grabbed yet
    finally:
        for worker in workers:
            worker.close()


def test_worker_wakeup_limit(server_kind: str, make_server: MakeServer) -> None:
    """``-w 1``: one NOOP per new job."""
    server = make_server(server_kind, "--worker-wakeup=1")
    workers = _sleeping_workers(server, 3, b"wake")
    try:
        with Conn(server) as client:
            for n in range(3):
                client.submit(b"wake", b"", b"%d" % n, P.SUBMIT_JOB_BG)
                assert len(_woken(workers)) == 1
    finally:
        for worker in workers:
            worker.close()


def test_maxqueue_per_priority(any_server: ServerProcess) -> None:
    with Conn(any_server) as conn:
        assert conn.admin("create function mq") == b"OK\r\n"
        assert conn.admin("maxqueue mq 3 2 1") == b"OK\r\n"  # high, normal, low limits
        conn.submit(b"mq", b"", b"1", P.SUBMIT_JOB_LOW_BG)
        conn.send(P.SUBMIT_JOB_LOW_BG, b"mq", b"", b"2")
        assert conn.expect(P.ERROR) == b"QUEUE_ERROR\0Job queue is full"
        conn.submit(b"mq", b"", b"3", P.SUBMIT_JOB_BG)
        conn.send(P.SUBMIT_JOB_BG, b"mq", b"", b"4")
        assert conn.expect(P.ERROR) == b"QUEUE_ERROR\0Job queue is full"
        conn.submit(b"mq", b"", b"5", P.SUBMIT_JOB_HIGH_BG)
        conn.send(P.SUBMIT_JOB_HIGH_BG, b"mq", b"", b"6")
        assert conn.expect(P.ERROR) == b"QUEUE_ERROR\0Job queue is full"
        assert conn.admin("prioritystatus") == b"mq\t1\t1\t1\t0\n.\n"


def test_reduce_job_assignment(any_server: ServerProcess) -> None:
    """SUBMIT_REDUCE_JOB has four zero-terminated fields; GRAB_JOB_ALL answers JOB_ASSIGN_ALL."""
    with Conn(any_server) as client, Conn(any_server) as worker:
        client.send(P.SUBMIT_REDUCE_JOB, b"mapper", b"r-1", b"reducer_fn", b"", b"payload")
        handle = client.expect(P.JOB_CREATED)
        worker.register(b"mapper")
        worker.send(P.GRAB_JOB_ALL)
        assert worker.recv() == (P.JOB_ASSIGN_ALL, handle + b"\0mapper\0r-1\0reducer_fn\0payload")
        worker.send(P.WORK_COMPLETE, handle, b"reduced")
        assert client.recv() == (P.WORK_COMPLETE, handle + b"\0reduced")
