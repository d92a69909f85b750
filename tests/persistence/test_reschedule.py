"""``reschedule`` (a failed job's next run-at time and attempt count) on every backend."""

from __future__ import annotations

import pytest

from geartrain.server.persistence.memory import MemoryBacking, MemoryStore

from .conftest import Harness
from .test_contract import job, reload

pytestmark = pytest.mark.timeout(120)


async def test_reschedule_stores_the_run_at_time_and_the_count(harness: Harness) -> None:
    store = await harness.opened()
    await store.add_many([job(1), job(2, when=1_800_000_000), job(3)])
    store.reschedule(1, 1_900_000_123, 1)
    store.reschedule(2, 1_900_000_456, 4)
    await store.close()

    loaded = {j.id: (j.when, j.retries) for j in await reload(harness)}
    assert loaded == {1: (1_900_000_123, 1), 2: (1_900_000_456, 4), 3: (0, 0)}


async def test_the_latest_of_reschedules_and_retry_counts_wins(harness: Harness) -> None:
    store = await harness.opened()
    await store.add_many([job(1), job(2)])
    store.reschedule(1, 2_000_000_000, 1)
    store.reschedule(1, 2_000_000_100, 2)
    store.update_retries(1, 3)  # lost again after the retry started: the count goes on
    store.update_retries(2, 5)
    store.reschedule(2, 2_000_000_200, 6)
    await store.close()

    loaded = {j.id: (j.when, j.retries) for j in await reload(harness)}
    assert loaded == {1: (2_000_000_100, 3), 2: (2_000_000_200, 6)}


async def test_reschedules_in_separate_commits_and_then_a_remove(harness: Harness) -> None:
    store = await harness.opened()
    await store.add_many([job(1), job(2)])
    store.reschedule(1, 2_000_000_000, 1)
    await store.add(job(3))  # an add commits the pending reschedule with it
    store.reschedule(1, 2_000_000_050, 2)
    store.reschedule(2, 2_000_000_060, 1)
    await store.add(job(4))
    store.remove(1)
    await store.close()

    loaded = {j.id: (j.when, j.retries) for j in await reload(harness)}
    assert loaded == {2: (2_000_000_060, 1), 3: (0, 0), 4: (0, 0)}


async def test_a_reschedule_whose_batch_failed_is_written_later() -> None:
    backing = MemoryBacking()
    store = MemoryStore(backing, backoff_initial=0.001, backoff_max=0.01)
    await store.open()
    await store.add(job(1))
    backing.fail_writes = OSError("disk full")
    store.reschedule(1, 2_000_000_000, 2)
    store.update_retries(1, 3)
    failed = store.add(job(2))
    with pytest.raises(Exception, match="disk full"):
        await failed
    backing.fail_writes = None
    await store.close()
    assert (backing.jobs[1].when, backing.jobs[1].retries) == (2_000_000_000, 3)
