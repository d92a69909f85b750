"""The blocking client against a real server (geartrain and gearmand)."""

from __future__ import annotations

import threading
import time

import pytest

from geartrain.admin import AdminClient
from geartrain.client import Client, Priority, TaskState, UpdateKind
from geartrain.errors import (
    ConnectionLost,
    GeartrainTimeout,
    JobException,
    JobFailed,
    NoServerAvailable,
    ServerError,
    WorkFail,
)
from geartrain.worker import Job
from tests.client.helpers import worker_thread
from tests.support import ServerProcess, free_port, start_geartrain


def reverse(job: Job) -> bytes:
    return job.payload[::-1]


def test_call_returns_the_result(any_server: ServerProcess) -> None:
    with (
        worker_thread(any_server.address, {"reverse": reverse}),
        Client([any_server.address], timeout=10) as client,
    ):
        assert client.call("reverse", b"hello") == b"olleh"
        assert client.call("reverse", "zwölf") == "zwölf".encode()[::-1]
        assert client.call("reverse", b"") == b""
        assert client.call("reverse", b"a\0b" * 1000) == (b"a\0b" * 1000)[::-1]


def test_large_payload_round_trip(any_server: ServerProcess) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB
    with (
        worker_thread(any_server.address, {"reverse": reverse}),
        Client([any_server.address], timeout=30) as client,
    ):
        assert client.call("reverse", payload) == payload[::-1]


def test_priorities_order_the_queue(any_server: ServerProcess) -> None:
    seen: list[bytes] = []
    with Client([any_server.address], timeout=10) as client:
        tasks = [
            client.submit("prio", b"low", priority=Priority.LOW),
            client.submit("prio", b"normal", priority=Priority.NORMAL),
            client.submit("prio", b"high", priority=Priority.HIGH),
        ]
        # The server must hold all three before a worker can take any.
        for task in tasks:
            task.wait_created(10)

        def record(job: Job) -> bytes:
            seen.append(job.payload)
            return job.payload

        with worker_thread(any_server.address, {"prio": record}):
            assert client.gather(tasks, 10) == [b"low", b"normal", b"high"]
    assert seen == [b"high", b"normal", b"low"]


def test_background_job_gets_uuid_unique_and_handle(any_server: ServerProcess) -> None:
    with Client([any_server.address], timeout=10) as client:
        task = client.submit("bg", b"x", background=True, priority=Priority.LOW)
        handle = task.result(10)
        assert handle == task.handle and handle
        assert len(task.unique) == 36 and task.unique.count(b"-") == 4
        with AdminClient(any_server.address) as admin:
            assert task.unique.decode() in admin.unique_jobs()
        status = client.get_status(handle)
        assert status.known and not status.running
        by_unique = client.get_status_unique(task.unique)
        assert by_unique.known and by_unique.key == task.unique


def test_updates_stream_in_order(any_server: ServerProcess) -> None:
    def chatty(job: Job) -> bytes:
        job.send_data(b"one")
        job.send_warning("careful")
        job.send_status(1, 2)
        job.send_data(b"two")
        return b"done"

    with (
        worker_thread(any_server.address, {"chatty": chatty}),
        Client([any_server.address], timeout=10) as client,
    ):
        task = client.submit("chatty", b"")
        updates = [(u.kind, u.data, u.numerator, u.denominator) for u in task.stream(10)]
    assert updates == [
        (UpdateKind.CREATED, b"", 0, 0),
        (UpdateKind.DATA, b"one", 0, 0),
        (UpdateKind.WARNING, b"careful", 0, 0),
        (UpdateKind.STATUS, b"", 1, 2),
        (UpdateKind.DATA, b"two", 0, 0),
        (UpdateKind.COMPLETE, b"done", 0, 0),
    ]
    assert task.state is TaskState.COMPLETE and (task.numerator, task.denominator) == (1, 2)


def test_many_jobs_in_flight_with_callbacks(any_server: ServerProcess) -> None:
    completed: list[bytes] = []
    with (
        worker_thread(any_server.address, {"reverse": reverse}),
        Client([any_server.address], timeout=20) as client,
    ):
        tasks = [
            client.submit(
                "reverse",
                f"job-{i}",
                callback=lambda u: (
                    completed.append(u.data) if u.kind is UpdateKind.COMPLETE else None
                ),
            )
            for i in range(200)
        ]
        results = client.gather(tasks)
    assert results == [f"job-{i}".encode()[::-1] for i in range(200)]
    assert sorted(completed) == sorted(r for r in results if isinstance(r, bytes))


def test_fail_and_exception(any_server: ServerProcess) -> None:
    def fail(job: Job) -> bytes:
        raise WorkFail("no")

    def boom(job: Job) -> bytes:
        raise ValueError("bad input")

    functions = {"fail": fail, "boom": boom}
    with worker_thread(any_server.address, functions):
        with Client([any_server.address], timeout=10, exceptions=True) as client:
            with pytest.raises(JobFailed) as failed:
                client.call("fail")
            assert failed.value.handle
            with pytest.raises(JobException) as raised:
                client.call("boom")
            assert raised.value.data == b"ValueError: bad input"
        # Without the option the server turns the exception into WORK_FAIL.
        with Client([any_server.address], timeout=10) as client, pytest.raises(JobFailed):
            client.call("boom")


def test_timeout_raises_quickly(any_server: ServerProcess) -> None:
    with Client([any_server.address]) as client:
        started = time.monotonic()
        with pytest.raises(GeartrainTimeout):
            client.call("nobody-home", b"x", timeout=0.3)
        assert time.monotonic() - started < 5
        task = client.submit("nobody-home")
        with pytest.raises(TimeoutError):  # GeartrainTimeout is a TimeoutError
            task.result(0.2)
        assert not task.done


def test_server_error_is_matched_to_its_submission(any_server: ServerProcess) -> None:
    with AdminClient(any_server.address) as admin:
        admin.create_function("limited")
        admin.maxqueue("limited", 1)
    with Client([any_server.address], timeout=10) as client:
        first = client.submit("limited", b"1", background=True)
        other = client.submit("free", b"2", background=True)
        second = client.submit("limited", b"3", background=True)
        third = client.submit("free", b"4", background=True)
        client.wait([first, other, second, third])
    assert first.state is TaskState.CREATED and other.state is TaskState.CREATED
    assert third.state is TaskState.CREATED
    assert second.state is TaskState.REJECTED
    assert isinstance(second.error, ServerError) and second.error.code == "QUEUE_ERROR"
    with pytest.raises(ServerError):
        second.outcome()


def test_epoch_job_waits_for_its_time(any_server: ServerProcess) -> None:
    ran: list[float] = []

    def stamp(job: Job) -> bytes:
        ran.append(time.time())
        return b""

    with (
        worker_thread(any_server.address, {"stamp": stamp}),
        Client([any_server.address], timeout=10) as client,
    ):
        when = int(time.time()) + 2
        handle = client.submit_background("stamp", b"later", when=when)
        assert handle
        assert client.get_status(handle).known
        deadline = time.monotonic() + 15
        while not ran and time.monotonic() < deadline:
            time.sleep(0.05)
    assert ran, "the epoch job never ran"
    assert ran[0] >= when - 0.01


def test_status_of_running_job_and_unknown_handle(any_server: ServerProcess) -> None:
    release = threading.Event()

    def slow(job: Job) -> bytes:
        job.send_status(3, 7)
        assert release.wait(10)
        return b"ok"

    with (
        worker_thread(any_server.address, {"slow": slow}),
        Client([any_server.address], timeout=10) as client,
    ):
        task = client.submit("slow", unique="status-test")
        for update in task.stream(10):
            if update.kind is UpdateKind.STATUS:
                break
        status = task.status()
        assert (status.known, status.running, status.numerator, status.denominator) == (
            True,
            True,
            3,
            7,
        )
        by_unique = client.get_status_unique("status-test")
        assert by_unique.known and by_unique.running and by_unique.waiting == 1
        release.set()
        assert task.result() == b"ok"
        unknown = client.get_status(b"H:nowhere:1")
        assert not unknown.known and not unknown.running


def test_coalesced_foreground_jobs_share_one_run(any_server: ServerProcess) -> None:
    runs: list[bytes] = []
    release = threading.Event()

    def once(job: Job) -> bytes:
        runs.append(job.unique)
        assert release.wait(10)
        return b"shared"

    with (
        Client([any_server.address], timeout=10) as one,
        Client([any_server.address], timeout=10) as two,
    ):
        first = one.submit("once", b"a", unique="same")
        second = two.submit("once", b"b", unique="same")
        assert first.wait_created(10) == second.wait_created(10)
        with worker_thread(any_server.address, {"once": once}):
            release.set()
            assert first.result(10) == b"shared"
            assert second.result(10) == b"shared"
    assert runs == [b"same"]


def test_lost_connection_raises_and_does_not_resubmit(any_server: ServerProcess) -> None:
    with Client([any_server.address], timeout=10) as client:
        task = client.submit("never", b"x")
        task.wait_created(10)
        any_server.kill()
        with pytest.raises(ConnectionLost):
            task.result(10)
        assert task.state is TaskState.LOST
        with pytest.raises(NoServerAvailable):
            client.submit("never", b"y")


def test_failover_to_next_server_when_one_is_down(any_server: ServerProcess) -> None:
    dead = ("127.0.0.1", free_port())
    servers = [dead, any_server.address]
    with (
        worker_thread(any_server.address, {"reverse": reverse}),
        Client(servers, timeout=10, connect_timeout=1) as client,
    ):
        results = [client.call("reverse", f"x{i}", unique=f"u{i}") for i in range(20)]
        assert results == [f"x{i}".encode()[::-1] for i in range(20)]
        assert client.echo(b"still here") == b"still here"


def test_no_server_at_all() -> None:
    with Client([("127.0.0.1", free_port())], connect_timeout=1) as client:
        with pytest.raises(NoServerAvailable):
            client.submit("f", b"x")
        with pytest.raises(ConnectionError):  # NoServerAvailable is a ConnectionError
            client.echo()


def test_failing_callback_does_not_break_other_tasks(any_server: ServerProcess) -> None:
    def explode(update: object) -> None:
        raise RuntimeError("callback bug")

    with (
        worker_thread(any_server.address, {"reverse": reverse}),
        Client([any_server.address], timeout=10) as client,
    ):
        bad = client.submit("reverse", b"ab", callback=explode)
        good = client.submit("reverse", b"cd")
        assert client.gather([bad, good]) == [b"ba", b"dc"]


def test_same_client_submitting_a_unique_twice_gets_both_results(
    any_server: ServerProcess,
) -> None:
    runs: list[bytes] = []

    def once(job: Job) -> bytes:
        runs.append(job.payload)
        return b"one result"

    with Client([any_server.address], timeout=10) as client:
        first = client.submit("twice", b"a", unique="dup")
        second = client.submit("twice", b"b", unique="dup")
        assert first.wait_created() == second.wait_created()
        with worker_thread(any_server.address, {"twice": once}):
            assert client.gather([first, second]) == [b"one result", b"one result"]
    assert runs == [b"a"]  # the second submission's payload is ignored


def test_client_id_and_status_lookup_across_servers(any_server: ServerProcess) -> None:
    dead = ("127.0.0.1", free_port())
    with Client([dead, any_server.address], client_id="reporting", connect_timeout=1) as client:
        handle = client.submit_background("held", b"x", unique="held-1", timeout=10)
        # Without a server hint every reachable server is asked.
        assert client.get_status(handle, timeout=10).known
        assert client.get_status_unique("held-1", timeout=10).known
        with AdminClient(any_server.address) as admin:
            assert "reporting" in {w.client_id for w in admin.workers()}


@pytest.mark.parametrize("size", [200_000, 16 * 1024 * 1024])
def test_a_refused_oversized_job_names_the_servers_refusal(size: int) -> None:
    # Large enough, the server's ERROR and close arrive while the client is still sending:
    # that must still read as the server's refusal, not as "no job server reachable".
    server = start_geartrain(args=["--max-packet-size", "65536"])
    try:
        with Client([server.address], timeout=10) as client:
            with pytest.raises(ServerError, match="ARGUMENT_TOO_LARGE"):
                client.call("big", b"x" * size, timeout=10)
            # The client reconnects for the next job.
            assert client.submit_background("small", b"x").startswith(b"H:")
    finally:
        server.stop()
