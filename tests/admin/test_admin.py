"""Every admin command, typed, against a real server (geartrain and gearmand)."""

from __future__ import annotations

import threading

import pytest

from geartrain.admin import AdminClient, AsyncAdminClient
from geartrain.client import Client, Priority
from geartrain.errors import AdminError, ConnectionLost, JobFailed
from geartrain.worker import Job
from tests.client.helpers import registered, wait_until, worker_thread
from tests.support import ServerProcess, free_port


def test_status_priority_status_jobs_and_unique_jobs(any_server: ServerProcess) -> None:
    with (
        Client([any_server.address], timeout=10) as client,
        AdminClient(any_server.address) as admin,
    ):
        handles = [
            client.submit_background("adm", b"1", unique="u-high", priority=Priority.HIGH),
            client.submit_background("adm", b"2", unique="u-low", priority=Priority.LOW),
            client.submit_background("adm", b"3", unique="u-low2", priority=Priority.LOW),
        ]
        [status] = [s for s in admin.status() if s.function == "adm"]
        assert (status.total, status.running, status.workers, status.queued) == (3, 0, 0, 3)
        [prio] = [p for p in admin.priority_status() if p.function == "adm"]
        assert (prio.high, prio.normal, prio.low, prio.workers) == (1, 0, 2, 0)
        jobs = {j.handle: j for j in admin.jobs()}
        assert {h.decode() for h in handles} <= set(jobs)
        assert all(jobs[h.decode()].retries == 0 for h in handles)
        assert {"u-high", "u-low", "u-low2"} <= set(admin.unique_jobs())


def test_workers_lists_registrations_and_client_ids(any_server: ServerProcess) -> None:
    with (
        worker_thread(
            any_server.address, {"w1": lambda j: b"", "w2": lambda j: b""}, client_id="adm-worker"
        ),
        AdminClient(any_server.address) as admin,
    ):
        wait_until(lambda: registered(admin.status(), "w2") == 1)
        [me] = [w for w in admin.workers() if w.client_id == "adm-worker"]
        assert sorted(me.functions) == ["w1", "w2"]
        assert me.ip == "127.0.0.1" and me.fd > 0


def test_running_job_is_counted(any_server: ServerProcess) -> None:
    release = threading.Event()

    def hold(job: Job) -> bytes:
        assert release.wait(10)
        return b""

    with (
        worker_thread(any_server.address, {"hold": hold}),
        Client([any_server.address], timeout=10) as client,
        AdminClient(any_server.address) as admin,
    ):
        task = client.submit("hold")
        wait_until(lambda: [s for s in admin.status() if s.function == "hold" and s.running == 1])
        release.set()
        task.result()


def test_create_drop_maxqueue_cancel(any_server: ServerProcess) -> None:
    with (
        AdminClient(any_server.address) as admin,
        Client([any_server.address], timeout=10) as client,
    ):
        admin.create_function("made")
        assert "made" in {s.function for s in admin.status()}
        admin.drop_function("made")
        assert "made" not in {s.function for s in admin.status()}
        with pytest.raises(AdminError):
            admin.drop_function("never-existed")

        admin.create_function("capped")
        admin.maxqueue("capped", 1)
        client.submit_background("capped", b"1")
        rejected = client.submit("capped", b"2", background=True)
        rejected.wait(10)
        assert rejected.error is not None
        admin.maxqueue("capped")  # back to unlimited
        client.submit_background("capped", b"3")
        admin.maxqueue("capped", 0, 5, 0)

        task = client.submit("cancel-me", b"x")
        handle = task.wait_created()
        admin.cancel_job(handle.decode())
        with pytest.raises(JobFailed):
            task.result(10)
        with pytest.raises(AdminError) as info:
            admin.cancel_job("H:no:such")
        assert info.value.code == "UNKNOWN_JOB"


def test_version_verbose_getpid_ping(any_server: ServerProcess) -> None:
    with AdminClient(any_server.address) as admin:
        assert admin.version()
        assert admin.verbose() in {
            "FATAL",
            "ALERT",
            "CRITICAL",
            "ERROR",
            "WARNING",
            "NOTICE",
            "INFO",
            "DEBUG",
        }
        assert admin.getpid() == any_server.proc.pid
        assert 0 < admin.ping() < 5


def test_bad_arguments_never_reach_the_server(any_server: ServerProcess) -> None:
    with AdminClient(any_server.address) as admin:
        with pytest.raises(ValueError):
            admin.cancel_job("two words")
        with pytest.raises(ValueError):
            admin.create_function("")
        assert admin.version()  # the connection is still in step


def test_unreachable_server() -> None:
    with AdminClient(("127.0.0.1", free_port()), timeout=2) as admin, pytest.raises(ConnectionLost):
        admin.status()


async def test_async_admin(any_server: ServerProcess) -> None:
    with Client([any_server.address], timeout=10) as client:
        handle = client.submit_background("async-adm", b"x", unique="au")
    async with AsyncAdminClient(f"127.0.0.1:{any_server.port}") as admin:
        assert next(s for s in await admin.status() if s.function == "async-adm").total == 1
        prio = await admin.priority_status()
        assert next(p for p in prio if p.function == "async-adm").normal == 1
        assert handle.decode() in {j.handle for j in await admin.jobs()}
        assert "au" in await admin.unique_jobs()
        assert await admin.workers()
        await admin.create_function("async-made")
        await admin.maxqueue("async-made", 3)
        await admin.drop_function("async-made")
        with pytest.raises(AdminError):
            await admin.cancel_job("H:none:1")
        assert await admin.version() and await admin.verbose()
        assert await admin.getpid() == any_server.proc.pid
        assert await admin.ping() > 0
