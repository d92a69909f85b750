"""The asyncio client against a real server (geartrain and gearmand)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from geartrain.client import AsyncClient, Priority, TaskState, UpdateKind
from geartrain.errors import (
    ConnectionLost,
    GeartrainTimeout,
    JobException,
    JobFailed,
    NoServerAvailable,
    WorkFail,
)
from geartrain.worker import Job
from tests.client.helpers import worker_thread
from tests.support import ServerProcess, free_port


def reverse(job: Job) -> bytes:
    return job.payload[::-1]


async def test_call_and_gather(any_server: ServerProcess) -> None:
    with worker_thread(any_server.address, {"reverse": reverse}):
        async with AsyncClient([any_server.address], timeout=10) as client:
            assert await client.call("reverse", b"abc") == b"cba"
            tasks = [await client.submit("reverse", f"n{i}") for i in range(100)]
            assert await client.gather(tasks) == [f"n{i}".encode()[::-1] for i in range(100)]
            assert await tasks[0] == b"0n"  # a task is awaitable


async def test_concurrent_callers_share_one_client(any_server: ServerProcess) -> None:
    with worker_thread(any_server.address, {"reverse": reverse}):
        async with AsyncClient([any_server.address], timeout=10) as client:
            results = await asyncio.gather(*(client.call("reverse", f"c{i}") for i in range(50)))
    assert results == [f"c{i}".encode()[::-1] for i in range(50)]


async def test_async_iteration_of_updates(any_server: ServerProcess) -> None:
    def chatty(job: Job) -> bytes:
        job.send_data(b"a")
        job.send_status(1, 3)
        job.send_warning(b"w")
        return b"end"

    with worker_thread(any_server.address, {"chatty": chatty}):
        async with AsyncClient([any_server.address], timeout=10) as client:
            task = await client.submit("chatty")
            kinds = [(u.kind, u.data) async for u in task]
    assert kinds == [
        (UpdateKind.CREATED, b""),
        (UpdateKind.DATA, b"a"),
        (UpdateKind.STATUS, b""),
        (UpdateKind.WARNING, b"w"),
        (UpdateKind.COMPLETE, b"end"),
    ]


async def test_as_completed_yields_in_finishing_order(any_server: ServerProcess) -> None:
    release = threading.Event()

    def gated(job: Job) -> bytes:
        if job.payload == b"slow":
            assert release.wait(10)
        return job.payload

    # Two workers so the fast job is not stuck behind the slow one.
    with (
        worker_thread(any_server.address, {"gated": gated}),
        worker_thread(any_server.address, {"gated": gated}),
    ):
        async with AsyncClient([any_server.address], timeout=10) as client:
            slow = await client.submit("gated", b"slow")
            await slow.wait_created()
            fast = await client.submit("gated", b"fast")
            order = []
            async for task in client.as_completed([slow, fast]):
                order.append(await task)
                release.set()
    assert order == [b"fast", b"slow"]


async def test_failures_and_timeouts(any_server: ServerProcess) -> None:
    def fail(job: Job) -> None:
        raise WorkFail

    def boom(job: Job) -> None:
        raise RuntimeError("kaput")

    with worker_thread(any_server.address, {"fail": fail, "boom": boom}):
        async with AsyncClient([any_server.address], timeout=10, exceptions=True) as client:
            with pytest.raises(JobFailed):
                await client.call("fail")
            with pytest.raises(JobException) as info:
                await client.call("boom")
            assert info.value.data == b"RuntimeError: kaput"
            started = time.monotonic()
            with pytest.raises(GeartrainTimeout):
                await client.call("nobody", timeout=0.3)
            assert time.monotonic() - started < 5


async def test_background_status_and_echo(any_server: ServerProcess) -> None:
    async with AsyncClient([any_server.address], timeout=10) as client:
        handle = await client.submit_background("later", b"x", priority=Priority.HIGH)
        status = await client.get_status(handle)
        assert status.known and not status.running
        task = await client.submit("later", b"y", unique="abc")
        assert (await task.status()).known
        unique = await client.get_status_unique("abc")
        assert unique.known and unique.waiting == 1
        assert await client.echo(b"\0ping\0") == b"\0ping\0"
        epoch = await client.submit_background("later", when=time.time() + 3600)
        assert (await client.get_status(epoch)).known


async def test_lost_connection(any_server: ServerProcess) -> None:
    async with AsyncClient([any_server.address], timeout=10) as client:
        task = await client.submit("never")
        await task.wait_created()
        any_server.kill()
        with pytest.raises(ConnectionLost):
            await task.result()
        assert task.state is TaskState.LOST
        with pytest.raises(NoServerAvailable):
            await client.submit("never")


async def test_failover_when_first_server_is_down(any_server: ServerProcess) -> None:
    servers = [("127.0.0.1", free_port()), any_server.address]
    with worker_thread(any_server.address, {"reverse": reverse}):
        async with AsyncClient(servers, timeout=10, connect_timeout=1) as client:
            results = [await client.call("reverse", f"{i}", unique=f"k{i}") for i in range(10)]
    assert results == [f"{i}".encode() for i in range(10)]
