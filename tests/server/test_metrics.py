"""/metrics: a real server under a real workload, its exposition checked against the admin
protocol and against what the workload did.

The exposition is parsed with prometheus_client's own parser, so what is checked is what
Prometheus would read, and gearman-exporter's names, types, help texts and labels are
asserted exactly (Grafana dashboard 11423 queries them).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from geartrain.admin import AsyncAdminClient
from geartrain.client import AsyncClient, Priority
from geartrain.errors import JobException, JobFailed
from geartrain.protocol.codec import encode_request
from geartrain.protocol.constants import PacketType as P
from geartrain.server.app import Server
from geartrain.server.counters import REPORTED_BITS, DurationHistogram, Histogram
from geartrain.server.metrics import exposition
from geartrain.server.persistence import open_store
from geartrain.server.persistence.memory import MemoryBacking, MemoryStore
from geartrain.worker import AsyncWorker, Job, WorkFail

from .conftest import Connect, running_server

#: gearman-exporter's gauges: name -> (help text, label names), as its collector.go has them.
EXPORTER = {
    "gearman_up": ("is gearman up", ()),
    "gearman_version_info": ("gearman version", ("version",)),
    "gearman_jobs": ("number of jobs queued or running", ("function",)),
    "gearman_jobs_running": ("number of running jobs", ("function",)),
    "gearman_jobs_waiting": ("number of jobs waiting for an available worker", ("function",)),
    "gearman_workers": ("number of capable workers", ("function",)),
}

PRIORITIES = {Priority.HIGH: "high", Priority.NORMAL: "normal", Priority.LOW: "low"}
#: Foreground "reverse" jobs the workload submits at each priority.
REVERSE_CALLS = {Priority.HIGH: 3, Priority.NORMAL: 5, Priority.LOW: 2}
#: Background jobs for a function no worker serves: they stay queued.
UNSERVED = {Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 4}


def scrape(server: Server) -> dict[str, Metric]:
    body, content_type = exposition(server)
    assert content_type.startswith("text/plain; version=")
    return {family.name: family for family in text_string_to_metric_families(body.decode())}


def value(families: dict[str, Metric], sample: str, **labels: str) -> float:
    """The one sample called ``sample`` with exactly ``labels`` (a bucket needs its ``le``)."""
    found = [
        s.value
        for family in families.values()
        for s in family.samples
        if s.name == sample and s.labels == labels
    ]
    assert len(found) == 1, (sample, labels, found)
    return found[0]


def by_label(families: dict[str, Metric], name: str, label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in families[name].samples}


async def poll(condition: Callable[[], Awaitable[bool]], what: str, deadline: float = 10.0) -> None:
    """Wait for ``condition``, asked again every 20 ms, for at most ``deadline`` seconds."""
    try:
        async with asyncio.timeout(deadline):
            while not await condition():  # noqa: ASYNC110 - the server's state has no event
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def reverse(job: Job) -> bytes:
    return job.payload[::-1]


async def refuse(job: Job) -> bytes:
    raise WorkFail("no")


async def explode(job: Job) -> bytes:
    raise ValueError("boom")


@pytest.fixture
async def busy_server() -> AsyncIterator[tuple[Server, str, asyncio.Event]]:
    """A server with workers for reverse, refuse, explode and hold (which waits on the event)."""
    release = asyncio.Event()

    async def hold(job: Job) -> bytes:
        await release.wait()
        return b"held"

    async with running_server() as server:
        address = f"127.0.0.1:{server.port}"
        worker = AsyncWorker([address], concurrency=4)
        for name, func in (("reverse", reverse), ("refuse", refuse), ("explode", explode)):
            worker.register(name, func)
        worker.register("hold", hold)
        working = asyncio.create_task(worker.work(handle_signals=False))
        try:
            yield server, address, release
        finally:
            release.set()
            worker.stop()
            await working


async def run_workload(address: str) -> None:
    async with AsyncClient([address], timeout=10, exceptions=True) as client:
        for priority, count in REVERSE_CALLS.items():
            for n in range(count):
                assert await client.call("reverse", f"job {n}", priority=priority) == (
                    f"job {n}"[::-1].encode()
                )
        for _ in range(2):
            with pytest.raises(JobFailed):
                await client.call("refuse", "x")
        with pytest.raises(JobException):
            await client.call("explode", "x", priority=Priority.HIGH)
        for priority, count in UNSERVED.items():
            for _ in range(count):
                await client.submit_background("unserved", "x", priority=priority)
        await client.submit_background("hold", "x")


async def test_gearman_exporter_names_and_values_match_admin_status(
    busy_server: tuple[Server, str, asyncio.Event],
) -> None:
    server, address, _release = busy_server
    await run_workload(address)
    async with AsyncAdminClient(address) as admin:

        async def holding() -> bool:
            return any(s.function == "hold" and s.running == 1 for s in await admin.status())

        await poll(holding, "the hold job to run")
        status = {s.function: s for s in await admin.status()}
        version = await admin.version()
    families = scrape(server)

    for name, (documentation, labels) in EXPORTER.items():
        family = families[name]
        assert (family.type, family.documentation) == ("gauge", documentation)
        assert {tuple(sorted(s.labels)) for s in family.samples} == {labels}
    assert value(families, "gearman_up") == 1
    assert by_label(families, "gearman_version_info", "version") == {version: 1}
    expected = {
        "gearman_jobs": {f: s.total for f, s in status.items()},
        "gearman_jobs_running": {f: s.running for f, s in status.items()},
        "gearman_jobs_waiting": {f: s.total - s.running for f, s in status.items()},
        "gearman_workers": {f: s.workers for f, s in status.items()},
    }
    for name, values in expected.items():
        assert by_label(families, name, "function") == values, name
    # The workload left what it should: 7 unserved jobs waiting, the held one running.
    assert status["unserved"].total == sum(UNSERVED.values())
    assert (status["hold"].total, status["hold"].running) == (1, 1)


async def test_job_outcomes_and_times_count_the_workload(
    busy_server: tuple[Server, str, asyncio.Event],
) -> None:
    server, address, release = busy_server
    started = time.monotonic()
    await run_workload(address)
    release.set()
    async with AsyncAdminClient(address) as admin:

        async def hold_done() -> bool:
            return all(s.total == 0 for s in await admin.status() if s.function == "hold")

        await poll(hold_done, "the hold job to end")
    families = scrape(server)

    def total(metric: str, function: str, priority: str = "normal") -> float:
        return value(
            families, f"geartrain_jobs_{metric}_total", function=function, priority=priority
        )

    for priority, count in REVERSE_CALLS.items():
        label = PRIORITIES[priority]
        assert total("submitted", "reverse", label) == count
        assert total("completed", "reverse", label) == count
        assert total("failed", "reverse", label) == 0
    assert (total("submitted", "refuse"), total("failed", "refuse")) == (2, 2)
    assert (total("completed", "refuse"), total("exceptions", "refuse")) == (0, 0)
    assert total("exceptions", "explode", "high") == 1
    for priority, count in UNSERVED.items():
        assert total("submitted", "unserved", PRIORITIES[priority]) == count
        assert (
            value(
                families,
                "geartrain_jobs_queued",
                function="unserved",
                priority=PRIORITIES[priority],
            )
            == count
        )
    assert total("completed", "hold") == 1
    # Every job that reached a worker waited once and ran once; the unserved ones did neither.
    # Each wait and run spans two reads (submit and grab, grab and result), so it is longer
    # than zero and shorter than the whole test.
    elapsed = time.monotonic() - started
    ran = {"reverse": sum(REVERSE_CALLS.values()), "refuse": 2, "explode": 1, "hold": 1}
    for function, count in ran.items():
        for histogram in ("geartrain_job_wait_seconds", "geartrain_job_run_seconds"):
            assert value(families, f"{histogram}_count", function=function) == count
            inf = value(families, f"{histogram}_bucket", function=function, le="+Inf")
            assert inf == count
            assert 0 < value(families, f"{histogram}_sum", function=function) < count * elapsed
    assert value(families, "geartrain_job_wait_seconds_count", function="unserved") == 0


async def test_packets_and_connections_match_the_workload(
    busy_server: tuple[Server, str, asyncio.Event],
) -> None:
    server, address, _release = busy_server
    await run_workload(address)
    async with AsyncAdminClient(address) as admin:

        async def client_gone() -> bool:
            return len(await admin.workers()) == 2  # the worker's connection and ours

        await poll(client_gone, "the server to see the client's connection closed")
        families = scrape(server)
    received = by_label(families, "geartrain_packets_received", "type")
    sent = by_label(families, "geartrain_packets_sent", "type")
    calls = sum(REVERSE_CALLS.values()) + 3
    assert received["SUBMIT_JOB_HIGH"] == REVERSE_CALLS[Priority.HIGH] + 1
    assert received["SUBMIT_JOB"] == REVERSE_CALLS[Priority.NORMAL] + 2
    assert received["SUBMIT_JOB_LOW"] == REVERSE_CALLS[Priority.LOW]
    assert received["SUBMIT_JOB_BG"] == UNSERVED[Priority.NORMAL] + 1
    assert received["SUBMIT_JOB_HIGH_BG"] == UNSERVED[Priority.HIGH]
    assert received["SUBMIT_JOB_LOW_BG"] == UNSERVED[Priority.LOW]
    assert sent["JOB_CREATED"] == calls + sum(UNSERVED.values()) + 1
    assert sent["WORK_COMPLETE"] == sum(REVERSE_CALLS.values())
    assert sent["WORK_EXCEPTION"] == 1  # the client asked for exceptions
    assert sent["WORK_FAIL"] == 2
    assert received["WORK_COMPLETE"] == sum(REVERSE_CALLS.values())
    assert sent["ERROR"] == 0
    # The worker's connection registered functions, the admin client's sent commands.
    roles = by_label(families, "geartrain_connections", "role")
    assert roles == {"worker": 1, "admin": 1, "client": 0}
    assert value(families, "geartrain_connections_accepted_total") == 3


async def read_packet(reader: asyncio.StreamReader) -> bytes:
    """One whole binary packet, header included, as it came off the wire."""
    header = await reader.readexactly(12)
    return header + await reader.readexactly(int.from_bytes(header[8:12], "big"))


async def test_bytes_packets_and_errors_count_exactly_what_crossed_the_wire(
    server: Server,
) -> None:
    before = scrape(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        echo = encode_request(P.ECHO_REQ, data=b"hello")
        unknown_result = encode_request(P.WORK_COMPLETE, b"H:nope", data=b"")
        writer.write(echo + unknown_result + b"status\r\n")
        async with asyncio.timeout(5):
            replies = [await read_packet(reader), await read_packet(reader)]
            status = await reader.readuntil(b".\n")  # no function yet: just the end mark
    finally:
        writer.close()
        await writer.wait_closed()
    assert [reply[4:8] for reply in replies] == [b"\0\0\0\x11", b"\0\0\0\x13"]  # ECHO_RES, ERROR
    after = scrape(server)

    def delta(sample: str, **labels: str) -> float:
        return value(after, sample, **labels) - value(before, sample, **labels)

    request_bytes = len(echo) + len(unknown_result) + len(b"status\r\n")
    assert delta("geartrain_received_bytes_total") == request_bytes
    assert delta("geartrain_sent_bytes_total") == sum(map(len, replies)) + len(status)
    assert delta("geartrain_packets_received_total", type="ECHO_REQ") == 1
    assert delta("geartrain_packets_received_total", type="WORK_COMPLETE") == 1
    assert delta("geartrain_packets_sent_total", type="ECHO_RES") == 1
    assert delta("geartrain_packets_sent_total", type="ERROR") == 1
    assert value(after, "geartrain_errors_sent_total", code="JOB_NOT_FOUND") == 1
    assert delta("geartrain_connections_accepted_total") == 1


async def test_connections_are_counted_by_role(connect: Connect, server: Server) -> None:
    worker, admin, _client = await connect(), await connect(), await connect()
    worker.send(P.CAN_DO, b"f")
    worker.send(P.ECHO_REQ, data=b"ping")  # answered after the CAN_DO was handled
    assert (await worker.packet()).type == P.ECHO_RES
    await admin.admin(b"version")
    families = scrape(server)
    roles = by_label(families, "geartrain_connections", "role")
    assert roles == {"worker": 1, "admin": 1, "client": 1}


async def test_a_worker_timeout_is_counted_and_the_job_requeued(
    connect: Connect, server: Server
) -> None:
    worker, client = await connect(), await connect()
    worker.send(P.CAN_DO_TIMEOUT, b"slow", b"1000")  # the floor: one second
    client.send(P.SUBMIT_JOB_LOW_BG, b"slow", b"u1", data=b"x")
    assert (await client.packet()).type == P.JOB_CREATED
    worker.send(P.GRAB_JOB)
    assert (await worker.packet()).type == P.JOB_ASSIGN

    async def timed_out() -> bool:
        families = scrape(server)
        return (
            value(families, "geartrain_jobs_timed_out_total", function="slow", priority="low") > 0
        )

    await poll(timed_out, "the job to time out", deadline=5.0)
    families = scrape(server)
    labels = {"function": "slow", "priority": "low"}
    assert value(families, "geartrain_jobs_timed_out_total", **labels) == 1
    assert value(families, "geartrain_jobs_requeued_total", **labels) == 1
    assert value(families, "geartrain_jobs_queued", **labels) == 1
    assert value(families, "geartrain_job_run_seconds_count", function="slow") == 0


async def test_the_sqlite_queue_reports_commits_batches_and_replay(tmp_path: Path) -> None:
    queue = f"sqlite:///{tmp_path}/queue.sqlite3"
    jobs = 25
    async with running_server(open_store(queue)) as server:
        async with AsyncClient([f"127.0.0.1:{server.port}"], timeout=10) as client:
            for n in range(jobs):
                await client.submit_background("stored", f"{n}")  # returns once durable
        families = scrape(server)
        labels = {"backend": "sqlite"}
        commits = value(families, "geartrain_queue_commits_total", **labels)
        assert commits >= 1
        assert value(families, "geartrain_queue_commit_seconds_count", **labels) == commits
        assert value(families, "geartrain_queue_commit_seconds_sum", **labels) > 0
        # Only adds were written: every job once, however they were grouped.
        assert value(families, "geartrain_queue_batch_operations_sum", **labels) == jobs
        assert value(families, "geartrain_queue_batch_operations_count", **labels) == commits
        assert value(families, "geartrain_queue_up", **labels) == 1
        assert value(families, "geartrain_queue_failed_batches_total", **labels) == 0
        assert value(families, "geartrain_queue_outstanding_writes", **labels) == 0
        assert value(families, "geartrain_queue_replayed_jobs") == 0
        assert value(families, "geartrain_packets_sent_total", type="JOB_CREATED") == jobs
    async with running_server(open_store(queue)) as server:
        families = scrape(server)
        assert value(families, "geartrain_queue_replayed_jobs") == jobs
        assert value(families, "geartrain_queue_replay_seconds") > 0
        assert value(families, "gearman_jobs", function="stored") == jobs
        assert (
            value(families, "geartrain_jobs_submitted_total", function="stored", priority="normal")
            == 0
        )


async def test_a_refused_write_and_a_reconnect_are_counted(connect: Connect) -> None:
    backing = MemoryBacking()
    store = MemoryStore(backing, backoff_initial=0.01, backoff_max=0.05)
    async with running_server(store) as server:
        client = await connect(server)
        backing.fail_writes = RuntimeError("disk full")
        client.send(P.SUBMIT_JOB_BG, b"f", b"u1", data=b"x")
        refused = await client.packet()
        assert (refused.type, refused.args[0]) == (P.ERROR, b"QUEUE_ERROR")
        backing.fail_writes = None
        store.break_connection()  # the next write finds the connection gone, reconnects
        client.send(P.SUBMIT_JOB_BG, b"f", b"u2", data=b"x")
        assert (await client.packet()).type == P.JOB_CREATED
        families = scrape(server)
    labels = {"backend": "memory"}
    # The lost connection cost a reconnect and a second try, not a failed batch.
    assert value(families, "geartrain_queue_failed_batches_total", **labels) == 1
    assert value(families, "geartrain_queue_reconnects_total", **labels) == 1
    assert value(families, "geartrain_queue_commits_total", **labels) == 1
    assert value(families, "geartrain_queue_up", **labels) == 1
    assert value(families, "geartrain_errors_sent_total", code="QUEUE_ERROR") == 1
    # Replies held for the store are counted when released: one refusal, one JOB_CREATED.
    sent = by_label(families, "geartrain_packets_sent", "type")
    assert (sent["ERROR"], sent["JOB_CREATED"]) == (1, 1)


async def test_a_coalesced_submission_is_not_a_new_job(connect: Connect, server: Server) -> None:
    client = await connect()
    for _ in range(2):
        client.send(P.SUBMIT_JOB_HIGH_BG, b"f", b"same", data=b"x")
    assert [(await client.packet()).type for _ in range(2)] == [P.JOB_CREATED] * 2
    families = scrape(server)
    labels = {"function": "f", "priority": "high"}
    assert value(families, "geartrain_jobs_submitted_total", **labels) == 1
    assert value(families, "geartrain_jobs_coalesced_total", **labels) == 1
    assert value(families, "gearman_jobs", function="f") == 1


async def test_the_spool_gauge_counts_open_spool_files(tmp_path: Path) -> None:
    threshold = 65536  # the smallest the server allows
    async with running_server(spool_threshold=threshold, spool_directory=str(tmp_path)) as server:
        before = value(scrape(server), "geartrain_spool_files_open")
        async with AsyncClient([f"127.0.0.1:{server.port}"], timeout=10) as client:
            await client.submit_background("big", b"x" * threshold)  # queued, in its file
        assert value(scrape(server), "geartrain_spool_files_open") == before + 1


def test_a_histogram_counts_a_value_on_a_bound_in_that_bucket() -> None:
    histogram = Histogram((1.0, 2.0))
    for observed in (0.5, 1.0, 1.5, 2.0, 3.0):
        histogram.observe(observed)
    assert histogram.counts == [2, 2, 1]
    assert (histogram.count, histogram.sum) == (5, 8.0)
    assert histogram.buckets() == [(1.0, 2), (2.0, 4), (float("inf"), 5)]


def test_a_duration_on_a_reported_bound_is_counted_at_that_bound() -> None:
    histogram = DurationHistogram()
    first, second = REPORTED_BITS[:2]
    for nanoseconds in (0, 2**first - 1, 2**first, 2**second - 1, 2**62):
        histogram.observe(nanoseconds)
    buckets = histogram.buckets()
    assert buckets[0] == ((2**first - 1) / 1e9, 2)
    assert buckets[1] == ((2**second - 1) / 1e9, 4)
    assert buckets[-2][1] == 4
    assert buckets[-1] == (float("inf"), 5)
    assert len(buckets) == len(REPORTED_BITS) + 1
    assert histogram.sum_ns == 2**first - 1 + 2**first + 2**second - 1 + 2**62


def test_without_prometheus_client_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "geartrain.server.metrics._exposition", raising=False)
    with pytest.raises(ImportError, match=r"geartrain\[http\]"):
        exposition(None)  # type: ignore[arg-type]


async def test_retries_and_dead_letters_are_counted() -> None:
    # Two attempts 50 ms apart, then the job is dead: one retry, one dead job.
    async with running_server(retry=["flaky=2,backoff=fixed,min=0.05"]) as server:
        address = f"127.0.0.1:{server.port}"
        worker = AsyncWorker([address], concurrency=1)
        worker.register("flaky", refuse)
        working = asyncio.create_task(worker.work(handle_signals=False))
        try:
            async with AsyncClient([address], timeout=10) as client:
                await client.submit_background("flaky", b"payload", priority=Priority.LOW)

            async def buried() -> bool:
                return len(server.scheduler.dead) == 1

            await poll(buried, "the job to be dead-lettered")
        finally:
            worker.stop()
            await working
        families = scrape(server)
    labels = {"function": "flaky", "priority": "low"}
    assert value(families, "geartrain_jobs_retried_total", **labels) == 1
    assert value(families, "geartrain_jobs_dead_lettered_total", **labels) == 1
    assert value(families, "geartrain_dead_jobs", function="flaky") == 1
    assert value(families, "geartrain_dead_jobs_bytes") > len(b"payload")
    assert value(families, "geartrain_dead_jobs_dropped_total") == 0
