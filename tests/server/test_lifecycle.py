"""Server.serve and geartrain.run: the queue from the settings, start-up, signals, stopping."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import pytest

import geartrain
from geartrain.client import AsyncClient
from geartrain.server.persistence.memory import MemoryStore
from geartrain.worker import AsyncWorker, Job

from .conftest import serving


class TrackedStore(MemoryStore):
    """A memory store that remembers being closed."""

    closed = False

    async def close(self) -> None:
        self.closed = True
        await super().close()


def loopback(**options: object) -> geartrain.Settings:
    options = {"listen": ["127.0.0.1"], "port": 0, "queue": "none", **options}
    return geartrain.Settings(**options)  # type: ignore[arg-type]


async def test_the_queue_settings_name_keeps_background_jobs_across_restarts(
    tmp_path: Path,
) -> None:
    settings = loopback(queue=f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    server = geartrain.Server(settings)
    async with serving(server), AsyncClient([f"127.0.0.1:{server.port}"], timeout=10) as client:
        await client.submit_background("later", "kept")
    ran: list[bytes] = []
    async with serving(geartrain.Server(settings)) as server:
        worker = AsyncWorker([f"127.0.0.1:{server.port}"])

        async def later(job: Job) -> bytes:
            ran.append(job.payload)
            return b""

        worker.register("later", later)
        async with asyncio.timeout(10):
            assert await worker.work(max_jobs=1, handle_signals=False) == 1
    assert ran == [b"kept"]


async def test_started_and_the_real_port_are_known_once_listening() -> None:
    server = geartrain.Server(loopback())
    assert not server.started.is_set()
    with pytest.raises(RuntimeError):
        server.port  # noqa: B018 - the property raises before start-up
    async with serving(server):
        assert server.started.is_set()
        assert server.port != 0 and server.addresses == [("127.0.0.1", server.port)]
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.close()


async def test_a_busy_port_fails_start_up_and_closes_the_queue() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        store = TrackedStore()
        server = geartrain.Server(loopback(port=taken.getsockname()[1]), store)
        serve = asyncio.create_task(server.serve(install_signal_handlers=False))
        with pytest.raises(geartrain.StartupError, match="did not start"):
            await server.wait_started()
        with pytest.raises(geartrain.StartupError, match="cannot listen"):
            await serve
    assert store.closed and not server.started.is_set()


async def test_importing_a_gearmand_queue_needs_a_queue_to_import_into() -> None:
    server = geartrain.Server(loopback(import_gearmand="sqlite:///nowhere.sqlite3"))
    with pytest.raises(geartrain.StartupError, match="needs a persistent queue"):
        await server.serve(install_signal_handlers=False)


async def test_a_cancelled_serve_still_closes_the_queue() -> None:
    store = TrackedStore()
    server = geartrain.Server(loopback(), store)
    serve = asyncio.create_task(server.serve(install_signal_handlers=False))
    await server.wait_started()
    serve.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serve
    assert store.closed


async def test_a_stop_asked_before_start_up_stops_once_started() -> None:
    server = geartrain.Server(loopback())
    server.request_stop()
    async with asyncio.timeout(10):
        await server.serve(install_signal_handlers=False)
    assert server.started.is_set()


@contextmanager
def own_handlers() -> Iterator[dict[int, object]]:
    """Handlers of the application's own for SIGUSR1 and SIGHUP, put back afterwards."""

    def mine(signum: int, frame: FrameType | None) -> None:
        raise AssertionError(f"the application's handler got signal {signum}")

    sigs = (signal.SIGUSR1, signal.SIGHUP)
    before = {sig: signal.signal(sig, mine) for sig in sigs}
    try:
        yield {sig: mine for sig in sigs}
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


async def test_captured_signals_stop_the_server_and_are_given_back() -> None:
    with own_handlers() as mine:
        server = geartrain.Server(loopback())
        serve = asyncio.create_task(server.serve())
        await server.wait_started()
        assert all(signal.getsignal(sig) is not handler for sig, handler in mine.items())
        os.kill(os.getpid(), signal.SIGHUP)  # reopens log files; must not stop
        await asyncio.sleep(0.05)
        assert not serve.done()
        os.kill(os.getpid(), signal.SIGUSR1)
        async with asyncio.timeout(10):
            await serve
        assert {sig: signal.getsignal(sig) for sig in mine} == mine


async def test_without_signal_capture_the_handlers_stay_the_applications() -> None:
    with own_handlers() as mine:
        async with serving(geartrain.Server(loopback())):
            assert {sig: signal.getsignal(sig) for sig in mine} == mine


RUN = """
import geartrain

def started(server):
    print(server.port, flush=True)
    server.request_stop()

geartrain.run(geartrain.Settings(listen=["127.0.0.1"], port=0, queue="none"),
              on_started=started)
"""


def test_run_serves_until_stopped_in_a_process_of_its_own() -> None:
    done = subprocess.run([sys.executable, "-c", RUN], capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0
