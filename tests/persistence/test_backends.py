"""Backend specifics the shared contract cannot see: storage layout and limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from geartrain.server.persistence._batch import Batch
from geartrain.server.persistence.base import QueueError, StoredJob

from .conftest import POSTGRES_URL, REDIS_URL, Harness, build_harness

pytestmark = pytest.mark.timeout(60)


def job(job_id: int, priority: int = 1, size: int = 10, retries: int = 0) -> StoredJob:
    return StoredJob(job_id, b"fn", b"", b"d" * size, priority, retries=retries)


async def made(kind: str, tmp_path: Path) -> AsyncIterator[Harness]:
    harness = build_harness(kind, tmp_path)
    try:
        yield harness
    finally:
        await asyncio.wait_for(harness.teardown(), 30)


@pytest.fixture
async def redis_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in made("redis", tmp_path):
        yield harness


@pytest.fixture
async def mysql_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in made("mysql", tmp_path):
        yield harness


@pytest.fixture
async def postgres_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in made("postgres", tmp_path):
        yield harness


async def test_redis_layout_is_three_keys_ordered_by_priority_then_id(
    redis_harness: Harness,
) -> None:
    from redis.asyncio import Redis

    store = await redis_harness.opened()
    await asyncio.gather(*(store.add(job(i, priority=i % 3)) for i in range(1, 31)))
    store.update_retries(5, 2)
    store.remove(7)
    await store.close()

    prefix = redis_harness.prefix
    client = Redis.from_url(REDIS_URL)
    try:
        assert sorted(await client.keys(f"{prefix}:*")) == [
            f"{prefix}:{name}".encode() for name in ("jobs", "order", "retries")
        ]
        assert await client.hlen(f"{prefix}:jobs") == 29
        order = cast(
            "list[tuple[bytes, float]]",
            await client.zrange(f"{prefix}:order", 0, -1, withscores=True),
        )
        assert [int(member) for member, _ in order] == [
            i for _, i in sorted((i % 3, i) for i in range(1, 31)) if i != 7
        ]
        assert all(score == (int(m) % 3) * 2**51 + int(m) for m, score in order)
        assert await client.hgetall(f"{prefix}:retries") == {b"5": b"2"}
    finally:
        await client.aclose()


async def test_redis_write_error_fails_the_batch_and_the_next_one_succeeds(
    redis_harness: Harness,
) -> None:
    from redis.asyncio import Redis
    from redis.exceptions import ResponseError

    store = await redis_harness.opened()
    await store.add(job(1))
    admin = Redis.from_url(REDIS_URL)
    order = f"{redis_harness.prefix}:order"
    try:
        backup = await admin.dump(order)
        await admin.set(order, b"not a sorted set")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await store._write(Batch(adds=[job(2)]))
        await admin.delete(order)
        assert backup is not None
        await admin.restore(order, 0, backup)
    finally:
        await admin.aclose()
    await store.add(job(3))
    await store.close()

    # EXEC does not roll back: job 2's record was written without its index entry, and
    # load() skips it.
    assert [j.id for j in await (await redis_harness.opened()).load()] == [1, 3]


async def test_redis_refuses_ids_beyond_exact_double_scores(redis_harness: Harness) -> None:
    store = await redis_harness.opened()
    with pytest.raises(QueueError, match="outside the redis queue's range"):
        await store.add(job(2**51))
    await store.add(job(2**51 - 1, priority=2))  # the largest id that still sorts exactly
    await store.close()
    loaded = await (await redis_harness.opened()).load()
    assert [j.id for j in loaded] == [2**51 - 1]


async def test_mysql_refuses_a_job_larger_than_max_allowed_packet(
    mysql_harness: Harness,
) -> None:
    store = await mysql_harness.opened()
    limit = getattr(store, "max_packet", 0)
    assert limit > 0

    with pytest.raises(QueueError, match="max_allowed_packet"):
        await store.add(job(1, size=limit // 2 + 1))

    assert not store.is_down  # refused up front: the connection was never at risk
    await store.add(job(2, size=1000))
    await store.close()
    assert [j.id for j in await (await mysql_harness.opened()).load()] == [2]


def test_mysql_splits_inserts_below_the_statement_limit() -> None:
    from geartrain.server.persistence.mysql import STATEMENT_BYTES, MysqlStore

    store = MysqlStore(prefix="split")
    store.max_packet = 3 * STATEMENT_BYTES
    jobs = [job(i, size=200) for i in range(1, 5001)]
    jobs.insert(2500, job(9999, size=STATEMENT_BYTES))  # larger than a statement alone

    statements = store._insert_statements(jobs)

    assert len(statements) > 2
    assert all(len(s) <= STATEMENT_BYTES for s in statements if "(9999," not in s)
    assert all(len(s) < store.max_packet for s in statements)
    rows = [row for s in statements for row in s.split(" VALUES ")[1].split(",(")]
    assert len(rows) == len(jobs)


async def test_mysql_stores_many_retry_counts_in_one_batch(mysql_harness: Harness) -> None:
    store = await mysql_harness.opened()
    await store.add_many([job(i) for i in range(1, 1202)])
    await store._write(Batch(retries=[(i, i % 7 + 1) for i in range(1, 1201)] + [(5, 99)]))
    await store.close()

    loaded = await (await mysql_harness.opened()).load()

    assert {j.id: j.retries for j in loaded} == {
        **{i: i % 7 + 1 for i in range(1, 1201)},
        5: 99,
        1201: 0,
    }


async def test_postgres_table_is_named_after_the_prefix(postgres_harness: Harness) -> None:
    import asyncpg

    store = await postgres_harness.opened()
    await store.add(job(1))
    await store.close()

    con = await asyncpg.connect(POSTGRES_URL)
    try:
        columns = await con.fetch(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = $1 ORDER BY ordinal_position",
            f"{postgres_harness.prefix}_jobs",
        )
    finally:
        await con.close()
    assert [(c["column_name"], c["data_type"]) for c in columns] == [
        ("id", "bigint"),
        ("priority", "smallint"),
        ("function", "bytea"),
        ("unique_key", "bytea"),
        ("data", "bytea"),
        ("when_to_run", "bigint"),
        ("reducer", "bytea"),
        ("retries", "integer"),
    ]


@pytest.fixture(params=["postgres", "mysql", "redis"])
async def networked_harness(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Harness]:
    async for harness in made(request.param, tmp_path):
        yield harness


async def test_a_batch_written_again_upserts(networked_harness: Harness) -> None:
    # After a lost COMMIT reply the writer reconnects and sends the batch again: its
    # rows may be stored already, and must end up stored once, as the last write has
    # them. (SQLite knows when that can happen and asks for it; see sqlite_writer.)
    harness = networked_harness
    store = await harness.opened()
    await store.add(job(9))
    one, two_old = StoredJob(1, b"f", b"u1", b"one", 0), StoredJob(2, b"f", b"", b"old", 1)
    two_new, three = two_old._replace(data=b"new", retries=2), StoredJob(3, b"g", b"", b"", 2)
    await store._write(Batch(adds=[one, two_old], retries=[(9, 1)]))
    await store._write(Batch(adds=[one, two_new, three], retries=[(9, 1), (9, 5)]))
    await store._write(Batch(adds=[job(4, size=1), job(4, size=2)]))  # the last add wins
    await store.close()

    loaded = {j.id: j for j in await (await harness.opened()).load()}

    assert loaded == {1: one, 2: two_new, 3: three, 4: job(4, size=2), 9: job(9, retries=5)}
