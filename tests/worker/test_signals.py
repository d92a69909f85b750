"""SIGTERM: the first lets the running job finish, the second aborts it."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest

from geartrain.client import Client, UpdateKind
from geartrain.worker import Job
from tests.client.helpers import worker_thread
from tests.support import ServerProcess

SCRIPT = r"""
import asyncio, logging, sys, time
from geartrain.worker import AsyncWorker, Worker, WorkerAborted

mode, port = sys.argv[1], int(sys.argv[2])
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

def slow(job):
    job.send_data(b"started")
    time.sleep(1.5)
    return b"finished"

async def aslow(job):
    job.send_data(b"started")
    await asyncio.sleep(1.5)
    return b"finished"

try:
    if mode == "sync":
        worker = Worker([("127.0.0.1", port)], poll_interval=0.2)
        worker.register("slow", slow)
        done = worker.work()
    else:
        worker = AsyncWorker([("127.0.0.1", port)], poll_interval=0.2)
        worker.register("slow", aslow)
        done = asyncio.run(worker.work())
except WorkerAborted:
    sys.exit(7)
sys.exit(0 if done == 1 else 5)
"""


def start(mode: str, server: ServerProcess) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, mode, str(server.port)], stderr=subprocess.PIPE
    )


def wait_for_log(proc: subprocess.Popen[bytes], text: bytes, timeout: float = 15) -> None:
    """Read the worker's log until ``text`` shows up (the signal was handled)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = b""
    while text not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"worker never logged {text!r}; got {seen!r}"
        ready, _, _ = select.select([proc.stderr], [], [], remaining)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 4096)
            assert chunk, f"worker exited before logging {text!r}; got {seen!r}"
            seen += chunk


def finish(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    if proc.stderr is not None:
        proc.stderr.close()


def wait_started(client: Client) -> object:
    task = client.submit("slow", b"")
    for update in task.stream(15):
        if update.kind is UpdateKind.DATA:
            assert update.data == b"started"
            return task
    raise AssertionError("the job never started")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_first_sigterm_finishes_running_job(mode: str, any_server: ServerProcess) -> None:
    proc = start(mode, any_server)
    try:
        with Client([any_server.address], timeout=15) as client:
            task = wait_started(client)
            proc.send_signal(signal.SIGTERM)
            assert task.result(15) == b"finished"  # type: ignore[attr-defined]
        assert proc.wait(15) == 0
    finally:
        finish(proc)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_second_sigterm_aborts_and_job_goes_back_to_queue(
    mode: str, any_server: ServerProcess
) -> None:
    proc = start(mode, any_server)
    try:
        with Client([any_server.address], timeout=15) as client:
            task = wait_started(client)
            proc.send_signal(signal.SIGTERM)
            # Two signals sent back to back may merge into one delivery: send
            # the second once the first was handled.
            wait_for_log(proc, b"signal 15: finishing")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 7
            assert not task.done  # type: ignore[attr-defined]

            # The server re-queued the aborted job; another worker finishes it.
            def rescue(job: Job) -> bytes:
                return b"rescued"

            with worker_thread(any_server.address, {"slow": rescue}):
                assert task.result(15) == b"rescued"  # type: ignore[attr-defined]
    finally:
        finish(proc)
