"""The blocking and asyncio workers against a real server (geartrain and gearmand)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from geartrain.admin import AdminClient
from geartrain.client import Client
from geartrain.errors import JobException, JobFailed
from geartrain.worker import AsyncWorker, Job, Worker
from tests.client.helpers import registered, wait_until, worker_thread
from tests.support import GEARMAND, ServerProcess, start_gearmand, start_geartrain


def test_register_by_decorator_and_call_and_job_fields(any_server: ServerProcess) -> None:
    worker = Worker([any_server.address], client_id="fields-test", poll_interval=0.2)
    seen: list[tuple[str, bytes, bytes, bytes]] = []

    @worker.register("echo")
    def echo(job: Job) -> bytes:
        seen.append((job.function, job.handle, job.unique, job.payload))
        return job.payload

    worker.register("text", lambda job: job.text.upper())
    worker.register("nothing", lambda job: None)
    thread = threading.Thread(target=worker.work, kwargs={"max_jobs": 3, "handle_signals": False})
    thread.start()
    try:
        with Client([any_server.address], timeout=10) as client:
            assert client.call("echo", b"\0data", unique="uq") == b"\0data"
            assert client.call("text", "abc") == b"ABC"
            assert client.call("nothing") == b""
        thread.join(10)
        assert not thread.is_alive()
    finally:
        worker.stop()
        thread.join(10)
    [(function, handle, unique, payload)] = seen
    assert (function, unique, payload) == ("echo", b"uq", b"\0data")
    assert handle.startswith(b"H:")
    assert worker.jobs_done == 3


def test_results_failures_and_exceptions(any_server: ServerProcess) -> None:
    def boom(job: Job) -> bytes:
        raise KeyError("k")

    with (
        worker_thread(any_server.address, {"boom": boom}),
        Client([any_server.address], timeout=10, exceptions=True) as client,
        pytest.raises(JobException) as info,
    ):
        client.call("boom")
    assert info.value.data == b"KeyError: 'k'"
    with (
        worker_thread(any_server.address, {"boom": boom}, exceptions=False),
        Client([any_server.address], timeout=10, exceptions=True) as client,
        pytest.raises(JobFailed),
    ):
        client.call("boom")


def test_registration_is_visible_and_idle_timeout_returns(any_server: ServerProcess) -> None:
    worker = Worker([any_server.address], client_id="idle-one", poll_interval=0.1)
    worker.register("visible", lambda job: b"")
    with AdminClient(any_server.address) as admin:
        thread = threading.Thread(
            target=worker.work, kwargs={"idle_timeout": 1.0, "handle_signals": False}
        )
        started = time.monotonic()
        thread.start()
        wait_until(lambda: registered(admin.status(), "visible") == 1)
        assert any(
            w.client_id == "idle-one" and w.functions == ("visible",) for w in admin.workers()
        )
        thread.join(10)
        assert not thread.is_alive()
        assert 0.9 <= time.monotonic() - started < 8
        wait_until(lambda: registered(admin.status(), "visible") == 0)


def test_can_do_timeout_requeues_and_job_runs_again(any_server: ServerProcess) -> None:
    attempts: list[float] = []

    def sometimes_slow(job: Job) -> bytes:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            time.sleep(1.6)  # longer than the 1 s limit the server enforces
        return b"attempt %d" % len(attempts)

    with (
        worker_thread(any_server.address, {"limited": sometimes_slow}, timeouts={"limited": 1.0}),
        Client([any_server.address], timeout=15) as client,
    ):
        assert client.call("limited", b"x") == b"attempt 2"
    assert len(attempts) == 2


def test_worker_reconnects_and_reregisters_after_server_restart(any_server: ServerProcess) -> None:
    restart = start_gearmand if any_server.kind == "gearmand" else start_geartrain
    port = any_server.port
    with worker_thread(any_server.address, {"again": lambda job: b"back"}) as worker:
        wait_until(lambda: worker.connected)
        any_server.kill()
        wait_until(lambda: not worker.connected)
        replacement = restart(port=port)
        try:
            wait_until(lambda: worker.connected, timeout=40)
            with Client([replacement.address], timeout=15) as client:
                assert client.call("again") == b"back"
        finally:
            replacement.stop()


def test_worker_serves_several_servers(any_server: ServerProcess) -> None:
    if any_server.kind == "gearmand" and GEARMAND is None:
        pytest.skip("gearmand not installed")
    other = start_gearmand() if any_server.kind == "gearmand" else start_geartrain()
    try:
        servers = [any_server.address, other.address]
        with worker_thread(servers, {"where": lambda job: job.payload}) as worker:
            wait_until(lambda: len(worker.connected) == 2)
            for address in servers:
                with Client([address], timeout=10) as client:
                    assert client.call("where", str(address[1])) == str(address[1]).encode()
    finally:
        other.stop()


async def test_async_worker_runs_jobs_concurrently(any_server: ServerProcess) -> None:
    worker = AsyncWorker([any_server.address], concurrency=4, poll_interval=0.2)
    running = 0
    peak = 0
    gate = asyncio.Event()

    @worker.register("conc")
    async def conc(job: Job) -> bytes:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if peak >= 4:
            gate.set()
        async with asyncio.timeout(10):
            await gate.wait()
        running -= 1
        return job.payload

    @worker.register("threaded")
    def threaded(job: Job) -> str:
        job.send_data(b"from a thread")
        return "sync function"

    from geartrain.client import AsyncClient

    serving = asyncio.create_task(worker.work(max_jobs=9, handle_signals=False))
    async with AsyncClient([any_server.address], timeout=15) as client:
        tasks = [await client.submit("conc", f"{i}") for i in range(8)]
        assert await client.gather(tasks) == [f"{i}".encode() for i in range(8)]
        task = await client.submit("threaded")
        updates = [u.data async for u in task]
        assert updates[-2:] == [b"from a thread", b"sync function"]
    assert await asyncio.wait_for(serving, 10) == 9
    assert peak == 4


async def test_async_worker_idle_timeout_and_stop(any_server: ServerProcess) -> None:
    worker = AsyncWorker([any_server.address], poll_interval=0.1)
    worker.register("nothing", lambda job: b"")
    started = time.monotonic()
    assert await asyncio.wait_for(worker.work(idle_timeout=0.5, handle_signals=False), 10) == 0
    assert 0.4 <= time.monotonic() - started < 8
    serving = asyncio.create_task(worker.work(handle_signals=False))
    worker.stop()  # before the task even started: still honoured
    assert await asyncio.wait_for(serving, 10) == 0
    assert worker.connected == []


async def test_async_worker_stops_promptly_despite_long_poll_interval(
    any_server: ServerProcess,
) -> None:
    worker = AsyncWorker([any_server.address], poll_interval=60)
    worker.register("nothing", lambda job: b"")
    serving = asyncio.create_task(worker.work(handle_signals=False))
    async with asyncio.timeout(10):
        while not worker.connected:  # noqa: ASYNC110 - polling a plain attribute
            await asyncio.sleep(0.02)
    started = time.monotonic()
    worker.stop()
    assert await asyncio.wait_for(serving, 10) == 0
    assert time.monotonic() - started < 2


def test_sync_worker_stops_promptly_despite_long_poll_interval(any_server: ServerProcess) -> None:
    with worker_thread(any_server.address, {"nothing": lambda job: b""}, poll_interval=60):
        started = time.monotonic()
    assert time.monotonic() - started < 5
