"""The shared writer (``_batch.py``): outage handling, retries and limits, driven through
the memory store's fault injection so every path is deterministic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Unpack

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geartrain.server.persistence import redis as redis_record
from geartrain.server.persistence._batch import Batch, StoreOptions, backoff_delay
from geartrain.server.persistence._rows import check_prefix
from geartrain.server.persistence.base import QueueError, StoredJob
from geartrain.server.persistence.memory import MemoryBacking, MemoryStore

pytestmark = pytest.mark.timeout(30)

FAST: StoreOptions = {"backoff_initial": 0.01, "backoff_max": 0.05, "close_timeout": 1.0}


def job(job_id: int) -> StoredJob:
    return StoredJob(job_id, b"fn", b"", f"data {job_id}".encode(), 1)


async def wait_until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_outage_fails_adds_fast_keeps_removes_and_recovers() -> None:
    backing = MemoryBacking()
    store = MemoryStore(backing, **FAST)
    await store.open()
    await asyncio.gather(*(store.add(job(i)) for i in range(1, 4)))

    backing.refuse_connects = True
    store.break_connection()
    with pytest.raises(QueueError, match="memory"):
        await store.add(job(4))  # this write discovers the outage
    assert store.is_down
    store.remove(1)
    started = time.monotonic()
    with pytest.raises(QueueError, match="unavailable"):
        await store.add(job(5))
    assert time.monotonic() - started < 0.05  # fails fast, no write attempted
    assert set(backing.jobs) == {1, 2, 3}  # the remove waits for the backend

    backing.refuse_connects = False
    await wait_until(lambda: not store.is_down)
    await store.add(job(6))
    await store.close()

    assert sorted(backing.jobs) == [2, 3, 6]
    assert store.reconnects >= 1


async def test_write_error_fails_the_batch_but_not_the_store() -> None:
    backing = MemoryBacking()
    store = MemoryStore(backing, **FAST)
    await store.open()
    await store.add(job(1))

    backing.fail_writes = RuntimeError("database or disk is full")
    store.remove(1)
    results = await asyncio.gather(store.add(job(2)), store.add(job(3)), return_exceptions=True)
    assert all(isinstance(r, QueueError) for r in results)
    assert "disk is full" in str(results[0])
    assert not store.is_down  # not a connection problem: nothing to reconnect
    assert set(backing.jobs) == {1}

    backing.fail_writes = None
    await store.add(job(4))
    await store.close()
    assert sorted(backing.jobs) == [4]  # the kept remove went through with job 4
    assert store.failed_batches >= 1


async def test_close_gives_up_on_an_unreachable_backend() -> None:
    backing = MemoryBacking()
    store = MemoryStore(backing, **FAST)
    await store.open()
    await store.add(job(1))
    backing.refuse_connects = True
    store.break_connection()
    store.remove(1)

    started = time.monotonic()
    await store.close()

    assert time.monotonic() - started < FAST["close_timeout"] + 1
    assert set(backing.jobs) == {1}  # lost remove = the job runs again: at least once


async def test_open_fails_with_queue_error_when_backend_is_down() -> None:
    store = MemoryStore(MemoryBacking(refuse_connects=True), **FAST)
    with pytest.raises(QueueError, match="cannot open"):
        await store.open()


class BuggyStore(MemoryStore):
    def _is_connection_error(self, exc: BaseException) -> bool:
        raise AssertionError("bug in a backend hook")


async def test_writer_survives_a_buggy_hook(caplog: pytest.LogCaptureFixture) -> None:
    backing = MemoryBacking()
    store = BuggyStore(backing, **FAST)
    await store.open()
    backing.fail_writes = RuntimeError("boom")
    with pytest.raises(QueueError):
        await asyncio.wait_for(store.add(job(1)), 5)
    backing.fail_writes = None
    await wait_until(lambda: not store.is_down)
    await asyncio.wait_for(store.add(job(2)), 5)
    await store.close()
    assert sorted(backing.jobs) == [2]


async def test_batches_respect_the_size_limits() -> None:
    backing = MemoryBacking()
    store = MemoryStore(backing, max_batch=100, max_batch_bytes=10_000)
    await store.open()
    await asyncio.gather(*(store.add(job(i)) for i in range(1, 501)))
    assert store.commits >= 5  # at most 100 operations per batch
    before = store.commits
    big = [StoredJob(i, b"f", b"", b"x" * 4000, 1) for i in range(1000, 1010)]
    await asyncio.gather(*(store.add(j) for j in big))
    assert store.commits - before >= 4  # ~2 jobs of 4 kB fit in 10 kB
    await store.close()
    assert len(backing.jobs) == 510


def test_backoff_is_jittered_exponential_and_capped() -> None:
    for attempt in range(12):
        base = min(2.0, 0.1 * 2**attempt)
        delays = [backoff_delay(attempt, 0.1, 2.0) for _ in range(50)]
        assert all(base / 2 <= d <= base for d in delays)
    assert len({backoff_delay(3, 0.1, 2.0) for _ in range(20)}) > 1


@pytest.mark.parametrize("prefix", ["", "1abc", "a-b", "a;drop", "x" * 49, 'q"'])
def test_prefix_must_be_a_plain_name(prefix: str) -> None:
    with pytest.raises(ValueError, match="invalid queue prefix"):
        check_prefix(prefix)


def test_prefix_accepts_plain_names() -> None:
    assert check_prefix("geartrain") == "geartrain"
    assert check_prefix("_Q_2" + "x" * 44) == "_Q_2" + "x" * 44


async def test_a_closed_store_can_be_opened_again() -> None:
    backing = MemoryBacking()
    store = MemoryStore(backing, **FAST)
    await store.open()
    await store.add(job(1))
    await store.close()

    await store.open()
    await store.add(job(2))
    assert [j.id for j in await store.load()] == [1, 2]
    await store.close()


class HangingStore(MemoryStore):
    """Writes hang (like a silent network partition) ``hangs`` times, then work."""

    def __init__(self, hangs: int, **options: Unpack[StoreOptions]) -> None:
        super().__init__(MemoryBacking(), **options)
        self.hangs = hangs

    async def _write(self, batch: Batch) -> None:
        if self.hangs:
            self.hangs -= 1
            await asyncio.Event().wait()
        await super()._write(batch)


async def test_a_hanging_write_counts_as_a_lost_connection() -> None:
    store = HangingStore(hangs=1, timeout=0.2, backoff_initial=0.01, close_timeout=1.0)
    await store.open()

    await asyncio.wait_for(store.add(job(1)), 5)  # retried on a fresh connection

    assert store.reconnects == 1
    await store.close()
    assert sorted(store.backing.jobs) == [1]


async def test_close_fails_the_adds_of_a_write_that_never_returns() -> None:
    store = HangingStore(hangs=99, timeout=60, backoff_initial=0.01, close_timeout=0.2)
    await store.open()
    pending = store.add(job(1))
    await asyncio.sleep(0.05)  # the writer is now stuck inside _write

    await asyncio.wait_for(store.close(), 5)

    with pytest.raises(QueueError, match="closed"):
        await asyncio.wait_for(pending, 1)


# -- properties ------------------------------------------------------------------------


@st.composite
def operation_sequences(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    """add/remove/retries sequences as the server makes them: ids are never reused."""
    ops: list[tuple[str, int, int]] = []
    next_id, added = 1, list[int]()
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from(["add", "add", "remove", "retries"]))
        if kind == "add" or not added:
            ops.append(("add", next_id, draw(st.integers(0, 2))))
            added.append(next_id)
            next_id += 1
        else:
            ops.append((kind, draw(st.sampled_from(added)), draw(st.integers(0, 5))))
    return ops


@settings(max_examples=150, deadline=None)
@given(ops=operation_sequences(), max_batch=st.integers(1, 8))
def test_any_batching_has_the_effect_of_applying_operations_in_order(
    ops: list[tuple[str, int, int]], max_batch: int
) -> None:
    model: dict[int, StoredJob] = {}
    for kind, job_id, value in ops:
        if kind == "add":
            model[job_id] = StoredJob(job_id, b"f", b"", b"%d" % job_id, value)
        elif kind == "remove":
            model.pop(job_id, None)
        elif job_id in model:
            model[job_id] = model[job_id]._replace(retries=value)

    async def run() -> dict[int, StoredJob]:
        backing = MemoryBacking()
        store = MemoryStore(backing, max_batch=max_batch)
        await store.open()
        adds: dict[int, Awaitable[None]] = {}
        for kind, job_id, value in ops:
            if kind == "add":
                adds[job_id] = store.add(StoredJob(job_id, b"f", b"", b"%d" % job_id, value))
            else:
                # The server removes or requeues only jobs whose add has settled.
                await adds[job_id]
                if kind == "remove":
                    store.remove(job_id)
                else:
                    store.update_retries(job_id, value)
            if job_id % 3 == 0:
                await asyncio.sleep(0)  # let some batches go out mid-sequence
        await asyncio.gather(*adds.values())
        await store.close()
        return backing.jobs

    assert asyncio.run(run()) == model


@given(
    job=st.builds(
        StoredJob,
        id=st.integers(0, 2**51 - 1),
        function=st.binary(max_size=40),
        unique=st.binary(max_size=70),
        data=st.binary(max_size=300),
        priority=st.integers(0, 2),
        when=st.integers(-(2**63), 2**63 - 1),
        reducer=st.binary(max_size=20),
        retries=st.just(0),
    )
)
def test_redis_record_round_trips(job: StoredJob) -> None:
    assert redis_record.unpack(job.id, redis_record.pack(job), 0) == job
