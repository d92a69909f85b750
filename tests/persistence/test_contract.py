"""The QueueStore contract (see ``geartrain.server.persistence.base``), run against every
backend: memory, sqlite, postgres, mysql and redis (the ``harness`` fixture)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from geartrain.server.persistence._batch import GroupCommitStore
from geartrain.server.persistence.base import QueueError, StoredJob

from .conftest import Harness

pytestmark = pytest.mark.timeout(120)


def job(job_id: int, **fields: object) -> StoredJob:
    values: dict[str, object] = {
        "function": b"resize",
        "unique": f"u-{job_id}".encode(),
        "data": f"payload {job_id}".encode(),
        "priority": 1,
    }
    values.update(fields)
    return StoredJob(id=job_id, **values)  # type: ignore[arg-type]


async def reload(harness: Harness) -> list[StoredJob]:
    """What a restarted server would load."""
    store = await harness.opened()
    try:
        return await store.load()
    finally:
        await store.close()


async def test_add_then_load_returns_every_field(harness: Harness) -> None:
    jobs = [
        job(1),
        job(2, function=b"f\xc3\xa9\x00x", unique=b"\x00\xff-bin", data=bytes(range(256)) * 3),
        job(3, data=b"", unique=b"", priority=0),
        job(4, when=1_900_000_000, priority=2, reducer=b"sum", retries=7),
        job(5, data=b"z" * 1_000_000),
        job(6, when=-1, reducer=b"", retries=0),  # negative epochs are stored as given
    ]
    store = await harness.opened()
    await asyncio.gather(*(store.add(j) for j in jobs))
    await store.close()

    loaded = await reload(harness)

    assert sorted(loaded, key=lambda j: j.id) == jobs
    assert all(isinstance(j.function, bytes) and isinstance(j.data, bytes) for j in loaded)


async def test_every_byte_value_round_trips_in_every_bytes_field(harness: Harness) -> None:
    every = bytes(range(256))
    jobs = [
        job(1, function=every, unique=every, data=every, reducer=every),
        job(2, function=every[::-1], unique=b"\\'\"\x00", data=every * 40, reducer=b"\xff"),
        job(3, function=b"\x00", unique=b"\\", data=b"'", reducer=b"\x80\xc3("),
    ]
    store = await harness.opened()
    await store.add_many(jobs)
    await store.close()

    assert sorted(await reload(harness), key=lambda j: j.id) == jobs


async def test_load_orders_by_priority_then_id(harness: Harness) -> None:
    rng = random.Random(1234)
    jobs = [job(i, priority=rng.choice([0, 1, 2])) for i in range(1, 301)]
    rng.shuffle(jobs)
    store = await harness.opened()
    for chunk in range(0, len(jobs), 50):  # several batches, arriving out of id order
        await asyncio.gather(*(store.add(j) for j in jobs[chunk : chunk + 50]))

    loaded = await store.load()
    await store.close()

    assert [(j.priority, j.id) for j in loaded] == sorted((j.priority, j.id) for j in jobs)
    assert {j.priority for j in loaded} == {0, 1, 2}


async def test_add_many_stores_a_group_with_one_outcome(harness: Harness) -> None:
    first = [job(i) for i in range(1, 2001)]
    second = [job(i, priority=0) for i in range(2001, 2004)]
    store = await harness.opened()
    await asyncio.gather(store.add_many(first), store.add_many(second), store.add(job(2004)))
    store.remove(1)
    await store.close()

    loaded = await reload(harness)
    assert [j.id for j in loaded] == [2001, 2002, 2003, *range(2, 2001), 2004]


async def test_add_many_after_close_fails_for_every_job(harness: Harness) -> None:
    store = await harness.opened()
    await store.close()
    with pytest.raises(QueueError):
        await store.add_many([job(1), job(2)])


async def test_remove_forgets_the_job(harness: Harness) -> None:
    store = await harness.opened()
    await asyncio.gather(*(store.add(job(i)) for i in range(1, 6)))
    store.remove(2)
    store.remove(4)
    store.remove(99)  # unknown ids are ignored, not an error
    await store.close()

    assert [j.id for j in await reload(harness)] == [1, 3, 5]


async def test_update_retries_is_stored(harness: Harness) -> None:
    store = await harness.opened()
    await store.add(job(1))
    await store.add(job(2, retries=1))
    store.update_retries(1, 3)
    store.update_retries(1, 4)  # the last update wins
    store.update_retries(2, 2)
    await store.close()

    assert {j.id: j.retries for j in await reload(harness)} == {1: 4, 2: 2}


async def test_empty_and_dash_uniques_never_collide(harness: Harness) -> None:
    # gearmand keys rows by (unique, function): these five jobs become three rows there.
    jobs = [
        job(1, unique=b"", data=b"first empty"),
        job(2, unique=b"", data=b"second empty"),
        job(3, unique=b"-", data=b"first dash"),
        job(4, unique=b"-", data=b"second dash"),
        job(5, unique=b"k", data=b"keyed"),
    ]
    store = await harness.opened()
    for j in jobs:
        await store.add(j)
    store.remove(3)
    await store.close()

    loaded = await reload(harness)

    assert [(j.unique, j.data) for j in loaded] == [
        (b"", b"first empty"),
        (b"", b"second empty"),
        (b"-", b"second dash"),
        (b"k", b"keyed"),
    ]


async def test_concurrent_adds_are_batched_and_durable(harness: Harness) -> None:
    store = await harness.opened()
    count = 2000

    await asyncio.gather(*(store.add(job(i, data=b"x" * 100)) for i in range(1, count + 1)))

    # One transaction/pipeline per batch: far fewer than one per add.
    assert 1 <= store.commits <= count // 10, store.commits
    await store.close()
    loaded = await reload(harness)
    assert [j.id for j in loaded] == list(range(1, count + 1))


async def test_adds_interleaved_with_removes_keep_order(harness: Harness) -> None:
    store = await harness.opened()
    futures = []
    for i in range(1, 201):
        futures.append(store.add(job(i)))
        if i % 2 == 0:
            store.remove(i)  # queued behind its own add, possibly in the same batch
    await asyncio.gather(*futures)
    await store.close()

    assert [j.id for j in await reload(harness)] == list(range(1, 201, 2))


async def test_close_flushes_pending_removes(harness: Harness) -> None:
    store = await harness.opened()
    await asyncio.gather(*(store.add(job(i)) for i in range(1, 101)))
    for i in range(1, 101, 3):
        store.remove(i)
    store.update_retries(2, 9)
    assert store.outstanding > 0  # nothing has run yet: close() must do the work

    await store.close()

    loaded = await reload(harness)
    assert [j.id for j in loaded] == [i for i in range(1, 101) if i % 3 != 1]
    assert next(j for j in loaded if j.id == 2).retries == 9


async def test_add_after_close_fails_with_queue_error(harness: Harness) -> None:
    store = await harness.opened()
    await store.close()

    with pytest.raises(QueueError, match="not open"):
        await store.add(job(1))


async def test_ping_answers_while_open_and_refuses_once_closed(harness: Harness) -> None:
    store = await harness.opened()
    await store.ping()
    await store.add(job(1))
    await store.ping()
    await store.close()

    with pytest.raises(QueueError, match="not open"):
        await store.ping()


async def test_reopen_sees_data_and_appends(harness: Harness) -> None:
    first = await harness.opened()
    await asyncio.gather(*(first.add(job(i)) for i in range(1, 11)))
    await first.close()

    second = await harness.opened()
    assert [j.id for j in await second.load()] == list(range(1, 11))
    await second.add(job(11, priority=0))
    second.remove(1)
    await second.close()

    assert [j.id for j in await reload(harness)] == [11, *range(2, 11)]


async def _add_until_success(
    store: GroupCommitStore, start_id: int, acked: set[int]
) -> tuple[int, int]:
    """Submit one job at a time until three succeed; bounded in count and time.

    Returns (failures, next id). Each add must settle quickly: a hang is a failure.
    """
    failures, successes, job_id = 0, 0, start_id
    deadline = time.monotonic() + 30
    while successes < 3:
        assert time.monotonic() < deadline, "store did not recover within 30 s"
        assert failures < 500
        try:
            await asyncio.wait_for(store.add(job(job_id)), 15)
        except QueueError:
            failures += 1
            await asyncio.sleep(0.02)
        else:
            acked.add(job_id)
            successes += 1
        job_id += 1
    return failures, job_id


async def test_reconnects_after_server_kills_connection(connected_harness: Harness) -> None:
    harness = connected_harness
    store = await harness.opened()
    acked: set[int] = set()
    await asyncio.gather(*(store.add(job(i)) for i in range(1, 11)))
    acked.update(range(1, 11))

    await harness.kill(store)
    with pytest.raises(QueueError):  # a probe finds the connection gone
        await asyncio.wait_for(store.ping(), 15)
    store.remove(1)  # kept and retried across the reconnect
    store.update_retries(2, 5)
    _, next_id = await _add_until_success(store, 100, acked)

    # A second kill, this time with a burst in flight.
    await harness.kill(store)
    burst = await asyncio.wait_for(
        asyncio.gather(*(store.add(job(i)) for i in range(1000, 1100)), return_exceptions=True),
        30,
    )
    assert all(r is None or isinstance(r, QueueError) for r in burst), burst
    acked.update(i for i, r in zip(range(1000, 1100), burst, strict=True) if r is None)
    await _add_until_success(store, next_id, acked)
    assert store.reconnects >= 2  # the kills really cut the connection, twice
    await store.close()

    loaded = {j.id: j for j in await reload(harness)}
    assert 1 not in loaded
    assert loaded[2].retries == 5
    assert acked - {1} <= set(loaded), sorted(acked - {1} - set(loaded))


async def test_outage_fails_adds_fast_keeps_removes_and_recovers(
    connected_harness: Harness,
) -> None:
    harness = connected_harness
    await harness.start_proxy()
    store = await harness.opened(proxied=True)
    acked: set[int] = set()
    await asyncio.gather(*(store.add(job(i)) for i in range(1, 11)))
    acked.update(range(1, 11))

    await harness.cut()
    store.remove(1)
    store.update_retries(2, 4)
    # The first write after the cut finds the backend gone and the store goes down.
    deadline = time.monotonic() + 20
    next_id = 100
    while not store.is_down:
        assert time.monotonic() < deadline, "the outage was never noticed"
        with pytest.raises(QueueError):
            await asyncio.wait_for(store.add(job(next_id)), 15)
        next_id += 1
    started = time.monotonic()
    with pytest.raises(QueueError, match="unavailable"):
        await store.add(job(next_id))
    assert time.monotonic() - started < 0.1  # fails fast: no round trip while down
    with pytest.raises(QueueError, match="unavailable"):
        await store.ping()

    await harness.restore()
    await _add_until_success(store, next_id + 1, acked)
    await store.ping()
    await store.close()

    loaded = {j.id: j for j in await reload(harness)}
    assert 1 not in loaded  # the remove was kept through the outage
    assert loaded[2].retries == 4
    assert acked - {1} <= set(loaded)
