"""Epoch jobs (``when=``) never run early: whole seconds rounded up, or milliseconds on request."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time

import pytest

from geartrain.client import AsyncClient, Client, Task
from geartrain.client.sync import unix_time
from geartrain.client.task import epoch_field
from geartrain.worker import Job
from tests.client.helpers import wait_until, worker_thread
from tests.support import ServerProcess


def epoch_text(task: Task) -> bytes:
    return task.packet()[12:].split(b"\0")[2]


@pytest.mark.parametrize(
    ("when", "whole", "millis"),
    [
        (1_700_000_000, b"1700000000", b"1700000000"),
        (1_700_000_000.0, b"1700000000", b"1700000000"),
        (1_700_000_000.1, b"1700000001", b"1700000000.100"),  # not .101: the decimal written
        (1_700_000_000.25, b"1700000001", b"1700000000.250"),
        (1_700_000_000.0004, b"1700000001", b"1700000000.001"),
        (1_700_000_000.9999, b"1700000001", b"1700000001"),
        (0.5, b"1", b"0.500"),
        (-3.5, b"-3", b"-3"),  # in the past either way: runs now on every server
    ],
)
def test_epoch_field_rounds_up(when: float, whole: bytes, millis: bytes) -> None:
    assert epoch_field(when) == whole
    assert epoch_field(when, subsecond=True) == millis


@pytest.mark.parametrize("when", [math.nan, math.inf, -math.inf])
def test_a_time_that_is_not_finite_is_refused_at_submission(when: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        Task("f", when=when)


def test_a_datetime_keeps_its_microseconds() -> None:
    when = dt.datetime(2030, 1, 2, 3, 4, 5, 678_901, tzinfo=dt.UTC)
    task = Task("f", when=unix_time(when), subsecond_epoch=True)
    assert epoch_text(task) == b"%d.679" % int(when.timestamp())
    assert epoch_text(Task("f", when=unix_time(when))) == b"%d" % (int(when.timestamp()) + 1)


def _when_with_fraction(fraction: float) -> float:
    """A time at least 0.6 s ahead whose fractional part is ``fraction``."""
    whole = math.floor(time.time()) + 1
    return whole + fraction if whole + fraction - time.time() >= 0.6 else whole + 1 + fraction


def _run_epoch_job(server: ServerProcess, when: float, *, subsecond_epoch: bool = False) -> float:
    """Submit an epoch job for ``when`` and return the time a worker got it."""
    ran: list[float] = []

    def stamp(job: Job) -> bytes:
        ran.append(time.time())
        return b""

    # gearmand 1.1 never wakes a sleeping worker for a due epoch job: poll often.
    with (
        worker_thread(server.address, {"stamp": stamp}, poll_interval=0.05),
        Client([server.address], timeout=10, subsecond_epoch=subsecond_epoch) as client,
    ):
        client.submit_background("stamp", b"", when=when)
        wait_until(lambda: ran, timeout=10)
    return ran[0]


def test_a_job_never_runs_before_its_time(any_server: ServerProcess) -> None:
    # .9 past a second: a client that truncated to whole seconds would run it 0.9 s
    # early, on gearmand (strtoll) as on geartrain.
    when = _when_with_fraction(0.9)
    assert _run_epoch_job(any_server, when) >= when


def test_subsecond_times_run_to_the_millisecond_on_geartrain(
    geartrain_server: ServerProcess,
) -> None:
    # .1 past a second: whole seconds rounded up would run it 0.9 s late.
    when = _when_with_fraction(0.1)
    ran = _run_epoch_job(geartrain_server, when, subsecond_epoch=True)
    assert when <= ran < when + 0.4


def test_the_async_client_sends_subsecond_times_too(geartrain_server: ServerProcess) -> None:
    ran: list[float] = []
    when = _when_with_fraction(0.1)

    async def submit() -> None:
        async with AsyncClient(
            [geartrain_server.address], timeout=10, subsecond_epoch=True
        ) as client:
            await client.submit_background("stamp", b"", when=when)

    def stamp(job: Job) -> bytes:
        ran.append(time.time())
        return b""

    with worker_thread(geartrain_server.address, {"stamp": stamp}, poll_interval=5):
        asyncio.run(submit())
        wait_until(lambda: ran, timeout=10)
    # The worker polls only every 5 s, so this time is the server's own wake-up.
    assert when <= ran[0] < when + 0.4
