"""One server per queue: a store claims its queue, and the claim ends with its holder.

Two servers on one queue would each replay the other's jobs and run them twice. Every
backend but the in-process one claims its queue when it connects (an advisory lock, a
named lock, an owner key naming a live client, an flock) in a way the database or the
kernel ends when the holder's connection or process ends.
"""

from __future__ import annotations

import asyncio

import pytest

from geartrain.server.persistence import _batch
from geartrain.server.persistence.base import QueueError, QueueInUse

from .conftest import Harness
from .test_contract import job

#: Every backend that claims its queue (the in-process one has no other user), and those
#: whose connection the database can end (SQLite's claim is the process's own;
#: tests/server/test_crash.py ends that process).
CLAIMING = ["sqlite", "postgres", "mysql", "redis"]
CONNECTED = [kind for kind in CLAIMING if kind != "sqlite"]


@pytest.fixture(autouse=True)
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_batch, "CLAIM_GRACE", 0.3)


@pytest.mark.parametrize("harness", CLAIMING, indirect=True)
async def test_a_second_store_is_refused_until_the_first_closes(harness: Harness) -> None:
    first = await harness.opened()
    await first.add(job(1))
    second = harness.make()
    with pytest.raises(QueueInUse, match="the queue is in use by another server"):
        await second.open()
    await first.add(job(2))  # the refused store disturbed nothing
    await first.close()

    await second.open()
    assert [j.id for j in await second.load()] == [1, 2]
    await second.close()


@pytest.mark.parametrize("connected_harness", CONNECTED, indirect=True)
async def test_a_claim_ends_with_its_connection_and_the_old_holder_stays_out(
    connected_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = connected_harness
    first = await harness.opened()
    await first.add(job(1))
    await harness.kill(first)  # as if its server died: the database ends the connection
    monkeypatch.setattr(_batch, "CLAIM_GRACE", 5.0)  # time for the database to notice
    second = await harness.opened()
    assert [j.id for j in await second.load()] == [1]

    # The first store reconnects, finds the queue taken, and refuses work rather than
    # write into a queue another server now runs.
    reasons: list[str] = []
    for _ in range(200):  # bounded: 200 tries, about 10 s
        try:
            await first.add(job(2))
        except QueueError as exc:
            reasons.append(str(exc))
            if "in use by another server" in str(exc):
                break
        else:
            pytest.fail("the first store wrote into a queue another store holds")
        await asyncio.sleep(0.05)
    assert "in use by another server" in reasons[-1], reasons
    await second.add(job(100))
    await second.close()
    await first.close()
