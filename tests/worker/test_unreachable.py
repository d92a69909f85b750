"""A worker whose server cannot be reached says so, rate-limited, and keeps retrying."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from geartrain.client import Client
from geartrain.worker import AsyncWorker, Job, Worker
from geartrain.worker.sync import Backoff, Unreachable
from tests.client.helpers import wait_until
from tests.support import ServerProcess, free_port, start_geartrain

ADDRESS = ("127.0.0.1", 4999)
REFUSED = "[Errno 111] Connection refused"


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("geartrain.worker")]


def test_first_failure_is_reported_then_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    report = Unreachable(every=60)
    for second in range(0, 150, 2):  # a retry every 2 s for 150 s
        report.failed(ADDRESS, REFUSED, now=1000.0 + second)
    report.connected(ADDRESS, now=1150.0)
    assert messages(caplog) == [
        f"cannot connect to 127.0.0.1:4999: {REFUSED}; retrying",
        f"still cannot connect to 127.0.0.1:4999 after 31 attempts in 60s: {REFUSED}; retrying",
        f"still cannot connect to 127.0.0.1:4999 after 61 attempts in 120s: {REFUSED}; retrying",
        "connected to 127.0.0.1:4999 after 75 failed attempts in 150s",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_a_changed_error_is_reported_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    report = Unreachable(every=60)
    report.failed(ADDRESS, REFUSED, now=0.0)
    report.failed(ADDRESS, REFUSED, now=1.0)
    report.failed(ADDRESS, "no answer within 5s", now=7.0)
    report.failed(ADDRESS, "no answer within 5s", now=13.0)
    assert messages(caplog)[1:] == [
        "still cannot connect to 127.0.0.1:4999 after 3 attempts in 7s: no answer within 5s;"
        " retrying"
    ]


def test_servers_are_reported_each_on_its_own(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    report = Unreachable()
    other = ("127.0.0.1", 5000)
    report.failed(ADDRESS, REFUSED, now=0.0)
    report.failed(other, REFUSED, now=0.5)
    report.connected(other, now=1.0)
    report.connected(other, now=2.0)  # connected all along: nothing to say
    report.failed(ADDRESS, REFUSED, now=3.0)
    assert messages(caplog) == [
        f"cannot connect to 127.0.0.1:4999: {REFUSED}; retrying",
        f"cannot connect to 127.0.0.1:5000: {REFUSED}; retrying",
        "connected to 127.0.0.1:5000 after 1 failed attempts in 0s",
    ]


def _serve_later(port: int, caplog: pytest.LogCaptureFixture) -> ServerProcess:
    """Once the worker has failed a few times, start a server where it keeps knocking."""
    wait_until(lambda: len(messages(caplog)) >= 1, timeout=10)
    time.sleep(0.5)  # several more attempts, which must not be logged
    return start_geartrain(port=port)


def test_worker_logs_an_unreachable_server_once_and_connects_when_it_comes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()  # nobody listens there yet
    worker = Worker([("127.0.0.1", port)], poll_interval=0.2)
    worker.backoff = Backoff(first=0.05, largest=0.1)
    worker.register("echo", lambda job: job.payload)
    thread = threading.Thread(target=worker.work, kwargs={"handle_signals": False}, daemon=True)
    thread.start()
    server = _serve_later(port, caplog)
    try:
        with Client([server.address], timeout=10) as client:
            assert client.call("echo", b"back") == b"back"
    finally:
        worker.stop()
        thread.join(10)
        server.stop()
    logged = [m for m in messages(caplog) if "connect" in m]
    assert logged[0] == f"cannot connect to 127.0.0.1:{port}: {REFUSED}; retrying"
    assert len(logged) == 2, logged
    assert logged[1].startswith(f"connected to 127.0.0.1:{port} after ")


async def test_async_worker_logs_an_unreachable_server_once_and_connects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()  # nobody listens there yet
    worker = AsyncWorker([("127.0.0.1", port)], poll_interval=0.2)
    worker.backoff = Backoff(first=0.05, largest=0.1)

    @worker.register("echo")
    async def echo(job: Job) -> bytes:
        return job.payload

    serving = asyncio.create_task(worker.work(handle_signals=False))
    server = await asyncio.to_thread(_serve_later, port, caplog)
    try:
        with Client([server.address], timeout=10) as client:
            assert await asyncio.to_thread(client.call, "echo", b"back") == b"back"
    finally:
        worker.stop()
        await asyncio.wait_for(serving, 10)
        server.stop()
    logged = [m for m in messages(caplog) if "connect" in m]
    assert logged[0].startswith(f"cannot connect to 127.0.0.1:{port}: ")
    assert "Connect call failed" in logged[0] or "refused" in logged[0]
    assert len(logged) == 2, logged
    assert logged[1].startswith(f"connected to 127.0.0.1:{port} after ")
