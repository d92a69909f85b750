"""In-process servers with the HTTP listener on, our worker, and an HTTP client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from geartrain.server.app import Server
from geartrain.server.config import Settings
from geartrain.server.persistence.base import QueueStore
from geartrain.worker import AsyncWorker, Job
from tests.server.conftest import serving


@asynccontextmanager
async def http_server(store: QueueStore | None = None, **options: Any) -> AsyncIterator[Server]:
    """A server with Gearman and HTTP listeners on free loopback ports, stopped after."""
    options.setdefault("queue", "none")
    options.setdefault("http_port", 0)
    settings = Settings(listen=["127.0.0.1"], port=0, **options)
    async with serving(Server(settings, store)) as server:
        yield server


def base_url(server: Server) -> str:
    host, port = server.http_addresses[0]
    return f"http://{host}:{port}"


class Gate:
    """Holds jobs of the ``wait`` function until released, and counts those it holds."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.entered = 0
        self.changed = asyncio.Event()

    async def hold(self, job: Job) -> bytes:
        self.entered += 1
        self.changed.set()
        async with asyncio.timeout(30):
            await self.open.wait()
        return b"released:" + job.payload

    async def until_entered(self, count: int) -> None:
        async with asyncio.timeout(10):
            while self.entered < count:
                self.changed.clear()
                await self.changed.wait()


def register_functions(worker: AsyncWorker, gate: Gate) -> None:
    """The functions the gateway tests call."""

    @worker.register("reverse")
    def reverse(job: Job) -> bytes:
        return job.payload[::-1]

    @worker.register("stream")
    async def stream(job: Job) -> bytes:
        for part in job.payload.split(b","):
            job.send_data(part + b";")
            await asyncio.sleep(0.01)  # separate WORK_DATA packets, not one write
        return b"end"

    @worker.register("fail")
    def fail(job: Job) -> bytes:
        raise RuntimeError("refused: " + job.payload.decode())

    @worker.register("size")
    def size(job: Job) -> bytes:
        return b"%d" % len(job.payload)

    @worker.register("partial")
    async def partial(job: Job) -> bytes:
        job.send_data(b"first;")
        if job.payload == b"fail":
            raise RuntimeError("failed after sending data")
        return await gate.hold(job)

    worker.register("wait", gate.hold)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with http_server(job_handle_prefix="H:http") as srv:
        yield srv


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
async def worker(server: Server, gate: Gate) -> AsyncIterator[AsyncWorker]:
    """Our asyncio worker doing the test functions for ``server``, registered when yielded."""
    worker = AsyncWorker([server.addresses[0]], concurrency=8, poll_interval=0.2)
    register_functions(worker, gate)
    task = asyncio.create_task(worker.work(handle_signals=False))
    await until(
        lambda: bool(
            server.scheduler.functions.get(b"wait", None)
            and server.scheduler.functions[b"wait"].workers
        )
    )
    yield worker
    gate.open.set()
    worker.stop()
    await asyncio.wait_for(task, 10)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def until(predicate: Callable[[], bool], wait: float = 10.0) -> None:
    """Poll ``predicate`` (server state) every few milliseconds, failing after ``wait`` s."""
    async with asyncio.timeout(wait):
        while not predicate():  # noqa: ASYNC110 - polling plain attributes
            await asyncio.sleep(0.005)


async def gather_bounded(*awaitables: Awaitable[Any], wait: float = 30.0) -> list[Any]:
    async with asyncio.timeout(wait):
        return list(await asyncio.gather(*awaitables))
