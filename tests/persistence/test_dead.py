"""Dead jobs (``add_dead``, ``remove_dead``, ``load_dead``) on every backend."""

from __future__ import annotations

import pytest

from geartrain.server.persistence.base import DeadJob

from .conftest import Harness
from .test_contract import job

pytestmark = pytest.mark.timeout(120)


def dead(dead_id: int, **fields: object) -> DeadJob:
    values: dict[str, object] = {
        "handle": b"H:host:%d" % dead_id,
        "function": b"resize",
        "unique": b"u-%d" % dead_id,
        "data": b"payload %d" % dead_id,
        "priority": 1,
        "reducer": b"",
        "died": 1_900_000_000.25 + dead_id,
        "attempts": b'[{"outcome": "fail"}]',
    }
    values.update(fields)
    return DeadJob(id=dead_id, **values)  # type: ignore[arg-type]


async def test_dead_jobs_round_trip_every_field(harness: Harness) -> None:
    kept = [
        dead(3),
        dead(7, function=b"f\x00\xff", unique=b"", data=bytes(range(256)) * 4, priority=2),
        dead(9, reducer=b"sum", data=b"", attempts=b"[]", died=0.0),
    ]
    store = await harness.opened()
    for record in reversed(kept):
        store.add_dead(record)
    await store.add(job(1))  # commits with them
    await store.close()

    store = await harness.opened()
    try:
        assert await store.load_dead() == kept
        assert [j.id for j in await store.load()] == [1]  # the jobs are apart
    finally:
        await store.close()


async def test_removed_dead_jobs_are_gone_and_a_job_dies_in_one_batch(harness: Harness) -> None:
    store = await harness.opened()
    await store.add_many([job(1), job(2)])
    store.add_dead(dead(10))
    store.add_dead(dead(11))
    store.remove_dead(11)  # purged before it was ever written
    store.remove(2)
    store.add_dead(dead(12, unique=b"u-2"))  # job 2 died: removed and kept together
    await store.close()

    store = await harness.opened()
    try:
        assert [d.id for d in await store.load_dead()] == [10, 12]
        assert [j.id for j in await store.load()] == [1]
        store.remove_dead(10)
    finally:
        await store.close()
    store = await harness.opened()
    try:
        assert [d.id for d in await store.load_dead()] == [12]
    finally:
        await store.close()
