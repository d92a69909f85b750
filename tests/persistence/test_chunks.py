"""Large (spooled) payloads in every backend: stored in chunks, loaded back spooled.

A small ``chunk_bytes`` makes a 20 MiB payload several transactions of several chunks
each, so the chunking is exercised without gigabytes.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from geartrain.protocol.spool import Spooled, spool_from
from geartrain.server.persistence._batch import Batch
from geartrain.server.persistence.base import QueueError, StoredJob
from geartrain.server.persistence.memory import MemoryBacking, MemoryStore
from geartrain.server.persistence.sqlite import SqliteStore

from .conftest import Harness

pytestmark = pytest.mark.timeout(180)

MiB = 1024 * 1024
#: 20 chunks of 1 MiB, four to a transaction (the default max_batch_bytes is 4 MiB).
CHUNK = MiB
SIZE = 20 * MiB + 12345  # a last chunk shorter than the others


def content(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def spooled(directory: Path, data: bytes) -> Spooled:
    def pieces() -> Iterator[bytes]:
        for start in range(0, len(data), 300_000):
            yield data[start : start + 300_000]

    return spool_from(directory, pieces())


def job(job_id: int, data: bytes | Spooled, **fields: object) -> StoredJob:
    values: dict[str, object] = {"function": b"big", "unique": b"u%d" % job_id, "priority": 1}
    values.update(fields)
    return StoredJob(id=job_id, data=data, **values)  # type: ignore[arg-type]


def names(directory: Path) -> list[str]:
    return os.listdir(directory) if directory.exists() else []


async def test_a_spooled_payload_is_stored_in_chunks_and_loaded_spooled(
    harness: Harness, tmp_path: Path
) -> None:
    data = content(SIZE, 1)
    big = job(2, spooled(tmp_path / "in", data), when=1_900_000_000, reducer=b"r")
    small = [job(1, b"before"), job(3, b"after", priority=0)]
    store = await harness.opened(chunk_bytes=CHUNK)
    await store.add_many([small[0], big])
    await store.add(small[1])
    await store.close()
    assert await harness.stored_chunks() == {2: 21}

    reopened = harness.make(chunk_bytes=CHUNK)
    reopened.spool_directory = tmp_path / "out"
    await reopened.open()
    loaded = await reopened.load()
    await reopened.close()

    assert [j.id for j in loaded] == [3, 1, 2]
    assert loaded[:2] == small[::-1]
    payload = loaded[2].data
    assert isinstance(payload, Spooled) and len(payload) == SIZE
    assert payload.to_bytes() == data
    assert loaded[2]._replace(data=b"") == big._replace(data=b"")
    assert names(tmp_path / "out") == []  # the spool file has no name


async def test_remove_deletes_the_chunks(harness: Harness, tmp_path: Path) -> None:
    first = job(1, spooled(tmp_path, content(3 * MiB, 2)))
    second = job(2, spooled(tmp_path, content(2 * MiB + 1, 3)))
    store = await harness.opened(chunk_bytes=CHUNK)
    await store.add_many([first, second, job(3, b"small")])
    store.remove(1)
    await store.close()
    assert await harness.stored_chunks() == {2: 3}

    # A job loaded after a restart: the store learns at load that it has chunks.
    store = await harness.opened(chunk_bytes=CHUNK)
    assert [j.id for j in await store.load()] == [2, 3]
    store.remove(2)
    store.remove(3)
    await store.close()

    assert await harness.stored_chunks() == {}
    store = await harness.opened()
    assert await store.load() == []


async def test_orphan_chunks_are_deleted_at_load(harness: Harness) -> None:
    # The server died after writing a job's chunks, before its row: that add was
    # never acknowledged, so the chunks are garbage.
    store = await harness.opened()
    await store.add(job(1, b"kept"))
    await store._write(Batch(chunks=[(7, 0, b"a" * 1000), (7, 1, b"b" * 10)]))
    await store.close()
    assert await harness.stored_chunks() == {7: 2}

    store = await harness.opened()
    assert await store.load() == [job(1, b"kept")]
    await store.close()

    assert await harness.stored_chunks() == {}


async def test_a_failed_row_write_fails_the_add_and_deletes_its_chunks(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await harness.opened(chunk_bytes=CHUNK)
    write = store._write

    async def rows_fail(batch: Batch) -> None:
        if batch.adds:
            raise RuntimeError("disk on fire")
        await write(batch)

    monkeypatch.setattr(store, "_write", rows_fail)
    with pytest.raises(QueueError, match="disk on fire"):
        await store.add(job(1, spooled(tmp_path, content(3 * MiB, 4))))
    monkeypatch.undo()
    await store.add(job(2, b"next"))
    await store.close()

    assert await harness.stored_chunks() == {}
    assert [j.id for j in await (await harness.opened()).load()] == [2]


async def test_an_empty_spooled_payload_is_stored_as_empty_bytes(
    harness: Harness, tmp_path: Path
) -> None:
    store = await harness.opened()
    await store.add(job(1, spooled(tmp_path, b"")))
    await store.close()

    assert await harness.stored_chunks() == {}
    assert [j.data for j in await (await harness.opened()).load()] == [b""]


def record_settled(settled: list[int], job_id: int, _: object) -> None:
    settled.append(job_id)


async def test_small_adds_are_not_held_up_by_a_large_one(harness: Harness, tmp_path: Path) -> None:
    # Six chunk transactions: a job submitted meanwhile is stored between two of them.
    store = await harness.opened(chunk_bytes=CHUNK)
    settled: list[int] = []
    large = asyncio.ensure_future(store.add(job(1, spooled(tmp_path, content(SIZE, 5)))))
    small = asyncio.ensure_future(store.add(job(2, b"small")))
    for future, job_id in ((large, 1), (small, 2)):
        future.add_done_callback(partial(record_settled, settled, job_id))
    await asyncio.gather(large, small)
    await store.close()

    assert settled == [2, 1]
    loaded = await (await harness.opened()).load()
    assert [j.id for j in loaded] == [1, 2] and loaded[1].data == b"small"


async def test_a_queue_file_made_before_chunking_gains_the_chunks_table(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    con = sqlite3.connect(path)
    con.execute(  # the jobs table as earlier versions made it, and nothing else
        "CREATE TABLE geartrain_jobs (id INTEGER PRIMARY KEY, priority INTEGER NOT NULL,"
        " function BLOB NOT NULL, unique_key BLOB NOT NULL, data BLOB NOT NULL,"
        " when_to_run INTEGER NOT NULL DEFAULT 0, reducer BLOB NOT NULL DEFAULT x'',"
        " retries INTEGER NOT NULL DEFAULT 0)"
    )
    con.execute("INSERT INTO geartrain_jobs VALUES (1, 1, x'66', x'75', x'6f6c64', 0, x'', 0)")
    con.commit()
    con.close()
    data = content(3 * MiB, 6)

    store = SqliteStore(str(path), chunk_bytes=CHUNK)
    await store.open()
    assert await store.load() == [StoredJob(1, b"f", b"u", b"old", 1)]
    await store.add(job(2, spooled(tmp_path, data)))
    await store.close()

    store = SqliteStore(str(path))
    store.spool_directory = tmp_path
    await store.open()
    loaded = await store.load()
    await store.close()
    assert [j.id for j in loaded] == [1, 2]
    assert isinstance(loaded[1].data, Spooled) and loaded[1].data.to_bytes() == data


def test_a_spooled_payload_does_not_count_against_a_row_limit(tmp_path: Path) -> None:
    # Stores chunk a spooled payload: only what goes in the row can be too large.
    store = MemoryStore()
    store.max_job_bytes = 100
    payload = spooled(tmp_path, b"x" * 1000)
    assert store.refusal(StoredJob(1, b"f", b"u", payload, 1)) is None
    assert store.refusal(StoredJob(2, b"f", b"u", b"x" * 1000, 1)) == (
        "Job of 1002 bytes is larger than the persistent queue takes (100)"
    )
    assert store.refusal(StoredJob(3, b"f" * 60, b"u" * 60, payload, 1)) is not None


async def test_every_add_asks_the_one_refusal_hook() -> None:
    # The server asks before a job joins a write group; a caller that comes straight to
    # the store (the gearmand import) is refused by the same check in the add path.
    backing = MemoryBacking()
    store = MemoryStore(backing)
    await store.open()
    assert not store.limited  # no limit: the server skips asking
    store.max_job_bytes = 20
    assert store.limited
    too_large = StoredJob(1, b"f", b"u", b"x" * 19, 1)
    with pytest.raises(QueueError, match=r"memory: Job of 21 bytes .* \(20\)"):
        await store.add_many([StoredJob(2, b"f", b"ok", b"", 1), too_large])
    await store.add(StoredJob(3, b"f", b"u", b"x" * 18, 1))
    store.max_job_bytes = None
    assert not store.limited
    await store.add(too_large)
    await store.close()
    assert sorted(backing.jobs) == [1, 3]  # refused with the large one, job 2 was not stored
