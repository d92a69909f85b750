"""SQLite specifics: WAL, full disk, locked and corrupt files, and kill -9 durability."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geartrain.server.persistence.base import QueueError, StoredJob
from geartrain.server.persistence.sqlite import SqliteStore
from geartrain.server.persistence.sqlite_writer import MIN_RUN, id_ranges

pytestmark = pytest.mark.timeout(60)


def job(job_id: int, size: int = 10) -> StoredJob:
    return StoredJob(job_id, b"fn", b"", bytes([job_id % 256]) * size, 1)


async def load(path: Path) -> list[StoredJob]:
    store = SqliteStore(str(path))
    await store.open()
    try:
        return await store.load()
    finally:
        await store.close()


async def test_database_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    store = SqliteStore(str(path))
    await store.open()
    await store.add(job(1))
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("SELECT id FROM geartrain_jobs").fetchall() == [(1,)]
    await store.close()


async def test_full_disk_fails_adds_and_keeps_acknowledged_rows(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    # 40 pages of 4 KiB: a 160 KiB "disk" that 8 KiB jobs fill after a dozen or so.
    store = SqliteStore(str(path), pragmas={"max_page_count": 40})
    await store.open()
    acked: list[int] = []
    error: QueueError | None = None
    for i in range(1, 200):
        try:
            await store.add(job(i, size=8000))
        except QueueError as exc:
            error = exc
            break
        acked.append(i)
    assert error is not None, "the page limit was never hit"
    assert "full" in str(error)
    assert len(acked) >= 3

    for i in acked[:3]:  # freeing space makes adds work again
        store.remove(i)
    await store.add(job(500, size=8000))
    await store.close()

    assert [j.id for j in await load(path)] == [*acked[3:], 500]


async def test_locked_file_fails_adds_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    store = SqliteStore(str(path), busy_timeout=0.2)
    await store.open()
    await store.add(job(1))

    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        started = time.monotonic()
        with pytest.raises(QueueError, match="locked"):
            await store.add(job(2))
        assert time.monotonic() - started < 5
        store.remove(1)  # kept while the lock is held
    finally:
        other.execute("ROLLBACK")
        other.close()

    await store.add(job(3))
    await store.close()
    assert [j.id for j in await load(path)] == [3]


async def test_corrupt_file_is_refused_with_queue_error(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    path.write_bytes(b"this is not an sqlite database, just some bytes " * 100)
    store = SqliteStore(str(path))
    with pytest.raises(QueueError, match="not a database"):
        await store.open()


async def test_missing_directory_is_refused_with_queue_error(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "no" / "such" / "dir" / "q.db"))
    with pytest.raises(QueueError, match="cannot open"):
        await store.open()


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from geartrain.server.persistence.base import StoredJob
    from geartrain.server.persistence.sqlite import SqliteStore

    async def main() -> None:
        store = SqliteStore(sys.argv[1], synchronous=sys.argv[2])
        await store.open()
        next_id = 1
        while True:  # the parent kills us
            ids = range(next_id, next_id + 50)
            next_id += 50
            futures = [store.add(StoredJob(i, b"fn", b"", b"d" * 200, i % 3)) for i in ids]
            for i, fut in zip(ids, futures):
                await fut
                print(i, flush=True)  # acknowledged: the server would send JOB_CREATED now

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("synchronous", ["full", "normal"])
async def test_acknowledged_jobs_survive_kill_9(tmp_path: Path, synchronous: str) -> None:
    path = tmp_path / "q.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(path),
        synchronous,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    acked: list[int] = []
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            while len(acked) < 2000:
                line = await proc.stdout.readline()
                if not line:
                    break
                acked.append(int(line))
        # Still running when killed: it was cut mid-flight, with more adds being committed.
        # (Its exit status is not checked: asyncio reports 255 for a child that something
        # else in this process reaped first, which happened now and then in the suite.)
        alive = proc.returncode is None
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.returncode is None:
            proc.kill()
        _, err = await proc.communicate()
    assert alive, f"the child ended by itself: {err.decode()}"
    assert len(acked) >= 2000, err.decode()

    stored = {j.id for j in await load(path)}

    assert set(acked) <= stored


async def test_killed_writer_process_is_replaced_and_nothing_refused_is_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "q.db"
    store = SqliteStore(str(path))
    await store.open()
    acked: set[int] = set()
    refused: set[int] = set()

    async def submit(first: int) -> None:
        ids = list(range(first, first + 200))
        try:
            await store.add_many([job(i) for i in ids])
        except QueueError:
            refused.update(ids)
        else:
            acked.update(ids)

    # Keep groups in flight while the writer dies under them.
    tasks = [asyncio.ensure_future(submit(1 + 200 * n)) for n in range(20)]
    await asyncio.sleep(0)
    writer = store._child
    assert writer is not None
    writer.kill()
    tasks += [asyncio.ensure_future(submit(1 + 200 * n)) for n in range(20, 40)]
    await asyncio.gather(*tasks)
    await store.add(job(99_999))  # a new writer took over
    assert store._child is not None and store._child.pid != writer.pid
    await store.close()

    stored = {j.id for j in await load(path)}
    assert acked | {99_999} <= stored
    assert not refused & stored
    assert len(acked) + len(refused) == 40 * 200
    assert store.reconnects >= 1


OWNER = textwrap.dedent(
    """
    import asyncio, sys
    from geartrain.server.persistence.sqlite import SqliteStore

    async def main() -> None:
        store = SqliteStore(sys.argv[1])
        await store.open()
        print(store._child.pid, flush=True)
        await asyncio.sleep(60)  # the parent kills us

    asyncio.run(main())
    """
)


async def test_writer_process_dies_with_the_server(tmp_path: Path) -> None:
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(tmp_path / "q.db"), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            writer_pid = int(await proc.stdout.readline())
        os.kill(writer_pid, 0)  # running
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not _alive(writer_pid):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the writer process outlived the server")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a reaper that may not exist here."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@given(ids=st.lists(st.integers(1, 300), max_size=200))
def test_id_ranges_delete_exactly_the_ids_given(ids: list[int]) -> None:
    # A run that covered one id too many would delete a job that is still queued.
    ranges, singles = id_ranges(ids)
    covered = list(singles)
    for first, last in ranges:
        assert last - first + 1 >= MIN_RUN
        covered.extend(range(first, last + 1))
    assert sorted(covered) == sorted(set(ids))


async def test_removes_in_runs_and_alone_leave_the_other_jobs(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    store = SqliteStore(str(path))
    await store.open()
    await store.add_many([StoredJob(i, b"f", b"", b"d", 1) for i in range(1, 101)])
    removed = [*range(3, 40), 41, 43, *range(50, 90), 99]
    for job_id in removed:
        store.remove(job_id)
    await store.close()
    assert sorted(j.id for j in await load(path)) == sorted(set(range(1, 101)) - set(removed))
