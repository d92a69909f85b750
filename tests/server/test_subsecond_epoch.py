"""SUBMIT_JOB_EPOCH with a decimal fraction: run to the millisecond, store whole seconds."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from geartrain.protocol.constants import PacketType as P
from geartrain.server.app import Server
from geartrain.server.dispatch import _parse_epoch
from geartrain.server.jobs import JobState
from geartrain.server.persistence import open_store

from .conftest import Connect, running_server


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"1700000000", 1_700_000_000),
        (b"1700000000.250", 1_700_000_000.25),
        (b" +1700000000.5", 1_700_000_000.5),
        (b"1700000000.", 1_700_000_000),  # no digit after the point: strtoll's whole part
        (b"1700000000.25abc", 1_700_000_000.25),
        (b"12abc", 12),  # strtoll reads the leading digits
        (b"soon", 0),  # strtoll: 0, runs now
        (b"-5.5", 0),
        (b"9" * 30, None),  # no clock reaches it
    ],
)
def test_epoch_field_is_read_as_strtoll_plus_a_fraction(
    text: bytes, expected: float | None
) -> None:
    assert _parse_epoch(text) == expected


def _due_soon_with_a_fraction() -> float:
    # 0.1 s past a whole second, far enough ahead to see the worker sleep first: rounding
    # to whole seconds would run it 0.9 s late, truncating 0.1 s early.
    whole = math.floor(time.time()) + 1
    return whole + 0.1 if whole + 0.1 - time.time() > 0.4 else whole + 1.1


async def test_a_fractional_epoch_wakes_the_worker_to_the_millisecond(
    server: Server, connect: Connect
) -> None:
    client, worker = await connect(), await connect()
    worker.send(P.CAN_DO, b"later")
    when = _due_soon_with_a_fraction()
    client.send(P.SUBMIT_JOB_EPOCH, b"later", b"e1", b"%.3f" % when, data=b"x")
    ((_, (handle,), _),) = await client.packets(1)
    worker.send(P.GRAB_JOB)
    assert await worker.packets(1) == [(P.NO_JOB, (), b"")]
    worker.send(P.PRE_SLEEP)
    assert await worker.packets(1, wait=5) == [(P.NOOP, (), b"")]
    woken = time.time()
    assert when <= woken < when + 0.3
    worker.send(P.GRAB_JOB)
    assert await worker.packets(1) == [(P.JOB_ASSIGN, (handle, b"later"), b"x")]


async def test_a_fractional_epoch_is_stored_rounded_up_and_replayed(
    connect: Connect, tmp_path: Path
) -> None:
    # Every queue stores whole seconds; rounding up means a restart can make the job
    # later by under a second, never earlier.
    url = f"sqlite:///{tmp_path}/queue.sqlite3"
    when = time.time() + 3600.25
    store = open_store(url)
    async with running_server(store=store) as srv:
        client = await connect(srv)
        client.send(P.SUBMIT_JOB_EPOCH, b"later", b"e1", b"%.3f" % when, data=b"x")
        ((ptype, (handle,), _),) = await client.packets(1)
        assert ptype == P.JOB_CREATED
        job = srv.scheduler.jobs[handle]
        assert job.state is JobState.SCHEDULED
        assert job.due == pytest.approx(when, abs=0.001)
    store = open_store(url)
    async with running_server(store=store) as srv:
        (job,) = srv.scheduler.jobs.values()
        assert job.state is JobState.SCHEDULED
        assert job.when == job.due == math.ceil(float(b"%.3f" % when))
