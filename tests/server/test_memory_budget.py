"""The memory budget under hostile load, with a healthy client doing round trips throughout.

Held bytes are read from the server's own accounting (``MemoryBudget.held``), sampled
while the load runs. The stated overhead over the budget: one read (256 KiB) per
connection, which is handled whole before the connection can be paused, plus the fair
share of the headroom each connection may hold (together at most the budget's last
10 %, so already inside the budget).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from geartrain.protocol.codec import as_bytes
from geartrain.protocol.constants import PacketType as P
from geartrain.server.app import Server
from geartrain.server.config import Settings, load_file, parse_size
from geartrain.server.metrics import exposition
from geartrain.server.status import snapshot
from tests.support import free_port, start_geartrain

from .conftest import RawClient, running_server
from .memory_load import REPLY_WAIT, Hostile, RoundTrips, echo_worker, healthy_client, open_raw

KIB = 1024
MIB = 1024 * KIB
#: What one connection can add before it is weighed: one read of the shared read buffer.
READ_SLACK = 256 * KIB


@dataclass
class Sampled:
    held: int = 0
    paused: int = 0


@contextlib.asynccontextmanager
async def sampling(server: Server) -> AsyncIterator[Sampled]:
    """Record the highest held bytes and paused connections while the block runs."""
    sampled = Sampled()
    stop = asyncio.Event()

    async def sample() -> None:
        memory = server.memory
        while not stop.is_set():
            sampled.held = max(sampled.held, memory.held(server.scheduler))
            sampled.paused = max(sampled.paused, len(memory.paused))
            await asyncio.sleep(0.005)

    task = asyncio.create_task(sample())
    try:
        yield sampled
    finally:
        stop.set()
        await task


async def until(condition: Callable[[], bool], wait: float, what: str) -> None:
    deadline = time.monotonic() + wait
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def close_all(raw: list[RawClient], hostiles: list[Hostile]) -> None:
    for client in raw:
        await client.close()
    for hostile in hostiles:
        await hostile.close()


def check_replies(hostile: Hostile, replies: list[tuple[int, bytes, bytes]]) -> None:
    """Every submission acknowledged once, and every acknowledged job echoed back."""
    created = [handle for ptype, handle, _ in replies if ptype == P.JOB_CREATED]
    results = {handle: data for ptype, handle, data in replies if ptype == P.WORK_COMPLETE}
    assert len(created) == hostile.count
    assert sorted(results.values()) == sorted(hostile.payloads)
    assert set(results) == set(created)


@pytest.mark.timeout(120)
async def test_non_reading_pipeliners_are_paused_and_a_healthy_client_is_served() -> None:
    budget, clients, jobs, size = 32 * MIB, 10, 200, 64 * KIB
    async with running_server(max_memory=budget) as server:
        address = server.addresses[0]
        stop, stop_healthy = asyncio.Event(), asyncio.Event()
        worker = await open_raw(address)
        healthy = await open_raw(address)
        trips = RoundTrips()
        worker_task = asyncio.create_task(echo_worker(worker, stop))
        healthy_task = asyncio.create_task(healthy_client(healthy, stop_healthy, trips))
        async with sampling(server) as sampled:
            hostiles = [
                await Hostile.start(address, tag, jobs, size, background=False)
                for tag in range(clients)
            ]
            # Pressure: the budget is over and hostile clients are paused; the healthy
            # client keeps completing round trips meanwhile.
            await until(lambda: len(server.memory.paused) >= clients // 2, 60, "pauses")
            trips_before = trips.done
            await until(lambda: trips.done >= trips_before + 20, 60, "healthy round trips")
            assert server.memory.over
            # The hostile clients read again: every acknowledged job completes.
            for hostile in hostiles:
                packets = await hostile.read_all(2 * jobs, wait=60)
                check_replies(hostile, [(p.type, p.args[0], as_bytes(p.data)) for p in packets])
        stop_healthy.set()
        await healthy_task
        stop.set()
        assert await worker_task == clients * jobs + trips.done
        assert trips.failure is None
        overhead = (clients + 2) * READ_SLACK
        assert sampled.held <= budget + overhead, (sampled.held, server.memory.peak)
        assert server.memory.peak <= budget + overhead
        assert sampled.paused >= clients // 2
        await until(lambda: not server.memory.paused, 10, "every client resumed")
        assert server.memory.output == 0
        await close_all([worker, healthy], hostiles)


@pytest.mark.timeout(120)
async def test_background_flood_pauses_submitters_until_a_worker_drains() -> None:
    budget, clients, jobs, size = 8 * MIB, 3, 100, 64 * KIB
    async with running_server(max_memory=budget) as server:
        address = server.addresses[0]
        stop = asyncio.Event()
        healthy = await open_raw(address)
        trips = RoundTrips()
        healthy_task = asyncio.create_task(healthy_client(healthy, stop, trips, True))
        async with sampling(server) as sampled:
            hostiles = [
                await Hostile.start(address, tag, jobs, size, background=True)
                for tag in range(clients)
            ]
            # No worker: the queue fills to the high-water mark and every submitter waits.
            await until(lambda: len(server.memory.paused) == clients, 30, "every submitter")
            queued = len(server.scheduler.jobs)
            assert queued < clients * jobs
            trips_before = trips.done
            await until(lambda: trips.done >= trips_before + 20, 30, "healthy round trips")
            assert len(server.scheduler.jobs) == queued  # nothing more got in meanwhile
            held_while_paused = sampled.held
            # A worker drains the queue: the submitters resume and every job runs.
            worker = await open_raw(address)
            worker_task = asyncio.create_task(echo_worker(worker, stop))
            for hostile in hostiles:
                packets = await hostile.read_all(jobs, wait=60)
                assert [p.type for p in packets] == [P.JOB_CREATED] * jobs
            await until(lambda: not server.scheduler.jobs, 60, "the queue drained")
        stop.set()
        await healthy_task
        assert await worker_task == clients * jobs
        assert trips.failure is None
        assert held_while_paused <= budget + (clients + 2) * READ_SLACK
        assert sampled.held <= budget + (clients + 2) * READ_SLACK
        assert not server.memory.paused
        assert server.memory.held(server.scheduler) == 0
        await close_all([worker, healthy], hostiles)


async def test_a_job_larger_than_the_budget_is_refused_clearly() -> None:
    # The spool threshold is above the job: it would be held in memory.
    async with running_server(max_memory=MIB, spool_threshold=4 * MIB) as server:
        client = await open_raw(server.addresses[0])
        client.send(P.SUBMIT_JOB_BG, b"echo", b"", data=b"b" * (2 * MIB))
        error = await client.packet(REPLY_WAIT)
        assert error.type == P.ERROR
        assert error.args[0] == b"QUEUE_ERROR"
        assert b"larger than the server's memory budget of 1048576 bytes" in error.args[1]
        # The connection is still served, and nothing was kept.
        client.send(P.SUBMIT_JOB_BG, b"echo", b"", data=b"small")
        assert (await client.packet(REPLY_WAIT)).type == P.JOB_CREATED
        assert server.scheduler.job_bytes == 5
        await client.close()


async def test_the_budget_is_shown_by_admin_metrics_and_the_status_page() -> None:
    async with running_server(max_memory=4 * MIB) as server:
        client = await open_raw(server.addresses[0])
        client.send(P.SUBMIT_JOB_BG, b"unserved", b"", data=b"q" * 1000)
        assert (await client.packet(REPLY_WAIT)).type == P.JOB_CREATED
        reply = await client.admin(b"memory")
        lines = dict(line.split(b"\t", 1) for line in reply.splitlines()[:-1])
        assert lines[b"budget"] == b"%d" % (4 * MIB)
        assert lines[b"jobs"] == b"1000"
        assert lines[b"paused"] == b"0"
        body, _ = exposition(server)
        assert b"geartrain_memory_budget_bytes 4.194304e+06" in body
        assert b'geartrain_memory_held_bytes{category="jobs"} 1000.0' in body
        assert b"geartrain_connections_paused 0.0" in body
        memory = snapshot(server)["memory"]
        assert isinstance(memory, dict)
        assert memory["jobs"] == 1000
        assert memory["budget"] == 4 * MIB
        await client.close()


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KIB
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
@pytest.mark.timeout(120)
async def test_server_rss_stays_under_the_budget_with_non_reading_pipeliners() -> None:
    budget, clients, jobs, size = 32 * MIB, 10, 200, 64 * KIB
    # Beyond the budget: the interpreter and the idle server, allocator slack, and the
    # reads in flight; measured from the idle server's own RSS.
    slack = 24 * MIB
    server = start_geartrain(["--max-memory", "32M"], port=free_port())
    try:
        address = server.address
        idle = _rss(server.proc.pid)
        stop, stop_healthy = asyncio.Event(), asyncio.Event()
        worker = await open_raw(address)
        healthy = await open_raw(address)
        trips = RoundTrips()
        worker_task = asyncio.create_task(echo_worker(worker, stop))
        healthy_task = asyncio.create_task(healthy_client(healthy, stop_healthy, trips))
        hostiles = [
            await Hostile.start(address, tag, jobs, size, background=False)
            for tag in range(clients)
        ]
        peak = idle
        deadline = time.monotonic() + 60
        while trips.done < 40 and time.monotonic() < deadline:
            peak = max(peak, _rss(server.proc.pid))
            await asyncio.sleep(0.01)
        for hostile in hostiles:
            packets = await hostile.read_all(2 * jobs, wait=60)
            check_replies(hostile, [(p.type, p.args[0], as_bytes(p.data)) for p in packets])
        stop_healthy.set()
        await healthy_task
        stop.set()
        await worker_task
        assert trips.failure is None
        assert trips.done >= 40
        assert peak <= idle + budget + slack, (idle, peak)
        await close_all([worker, healthy], hostiles)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("4096", 4096),
        ("512K", 512 * KIB),
        ("64M", 64 * MIB),
        ("2g", 2 << 30),
        ("1GiB", 1 << 30),
        ("3MB", 3 * MIB),
        ("1T", 1 << 40),
    ],
)
def test_sizes_are_read_with_binary_suffixes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "1.5G", "-1", "12X", "ten"])
def test_a_size_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


def test_the_default_budget_is_a_quarter_of_physical_memory(tmp_path: Path) -> None:
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert Settings().memory_budget() == physical // 4
    assert Settings(max_memory=0).memory_budget() == 0
    config = tmp_path / "geartrain.toml"
    config.write_text('max-memory = "256M"\n')
    assert load_file(config) == {"max_memory": 256 * MIB}
    with pytest.raises(ValueError, match="max-memory"):
        Settings(max_memory=-1).validate()
