"""Throughput of the persistent queue backends.

For each backend: add N jobs keeping C adds outstanding (what a busy server with C
submitting clients looks like), then open a fresh store and time load(), then remove
every job and time until close() has flushed the removes. Each run uses its own table or
key prefix and deletes it afterwards.

    python bench/store_bench.py                       # every backend, 100k jobs
    python bench/store_bench.py -n 1000000 -b sqlite  # a million, SQLite only
    python bench/store_bench.py -b postgres -c 1 -n 2000   # no group commit possible

URLs default to local services; override with --postgres / --mysql / --redis.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass

from geartrain.server.persistence import open_store
from geartrain.server.persistence._batch import GroupCommitStore
from geartrain.server.persistence.base import StoredJob
from geartrain.server.persistence.memory import MemoryBacking, MemoryStore


@dataclass
class Result:
    backend: str
    jobs: int
    concurrency: int
    add_seconds: float
    batches: int
    load_seconds: float
    loaded: int
    remove_seconds: float


async def add_all(store: GroupCommitStore, jobs: list[StoredJob], concurrency: int) -> None:
    """Add ``jobs`` with at most ``concurrency`` adds in flight (a sliding window)."""
    window = asyncio.Semaphore(concurrency)
    in_flight: set[asyncio.Future[None]] = set()
    for job in jobs:
        await window.acquire()
        future = asyncio.ensure_future(store.add(job))
        in_flight.add(future)
        future.add_done_callback(in_flight.discard)
        future.add_done_callback(lambda _: window.release())
    await asyncio.gather(*in_flight)


_MEMORY = MemoryBacking()  # memory:// would start empty on every open


def open_bench_store(url: str) -> GroupCommitStore:
    if url.startswith("memory:"):
        return MemoryStore(_MEMORY)
    store = open_store(url)
    assert isinstance(store, GroupCommitStore), url
    return store


async def run_one(name: str, url: str, count: int, concurrency: int, payload: int) -> Result:
    jobs = [StoredJob(i, b"bench", b"", os.urandom(payload), i % 3) for i in range(1, count + 1)]
    store = open_bench_store(url)
    await store.open()
    started = time.perf_counter()
    await add_all(store, jobs, concurrency)
    add_seconds = time.perf_counter() - started
    batches = store.commits
    await store.close()

    store = open_bench_store(url)
    await store.open()
    started = time.perf_counter()
    loaded = await store.load()
    load_seconds = time.perf_counter() - started
    assert [j.id for j in loaded[:3]] == [3, 6, 9], "load() order"
    started = time.perf_counter()
    for job in loaded:
        store.remove(job.id)
    await store.close()
    remove_seconds = time.perf_counter() - started
    return Result(
        name, count, concurrency, add_seconds, batches, load_seconds, len(loaded), remove_seconds
    )


async def drop(name: str, url: str, prefix: str) -> None:
    if name.startswith("postgres"):
        import asyncpg

        con = await asyncpg.connect(url.split("?")[0])
        await con.execute(f'DROP TABLE IF EXISTS "{prefix}_jobs"')
        await con.close()
    elif name.startswith("mysql"):
        store = open_bench_store(url)
        await store.open()
        async with store._connection().cursor() as cur:  # type: ignore[attr-defined]
            await cur.execute(f"DROP TABLE IF EXISTS `{prefix}_jobs`")
        await store.close()
    elif name.startswith("redis"):
        from redis.asyncio import Redis

        client = Redis.from_url(url.split("?")[0])
        await client.delete(*(f"{prefix}:{key}" for key in ("jobs", "order", "retries")))
        await client.aclose()


def backend_urls(args: argparse.Namespace, prefix: str, directory: str) -> dict[str, str]:
    sqlite = f"sqlite:///{directory}/bench.db"
    return {
        "memory": f"memory://?prefix={prefix}",
        "sqlite": f"{sqlite}?prefix={prefix}",
        "sqlite-normal": f"{sqlite}?prefix={prefix}n&synchronous=normal",
        "postgres": f"{args.postgres}?prefix={prefix}",
        "mysql": f"{args.mysql}?prefix={prefix}",
        "redis": f"{args.redis}?prefix={prefix}",
    }


def print_table(results: list[Result]) -> None:
    header = (
        f"{'backend':<14} {'jobs':>9} {'in flight':>9} {'add jobs/s':>11} {'batches':>8}"
        f" {'jobs/batch':>10} {'load s':>8} {'load jobs/s':>12} {'remove+flush s':>15}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.backend:<14} {r.jobs:>9} {r.concurrency:>9} {r.jobs / r.add_seconds:>11.0f}"
            f" {r.batches:>8} {r.jobs / max(r.batches, 1):>10.1f} {r.load_seconds:>8.2f}"
            f" {r.loaded / r.load_seconds:>12.0f} {r.remove_seconds:>15.2f}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--jobs", type=int, default=100_000)
    parser.add_argument("-c", "--concurrency", type=int, default=1000, help="adds in flight")
    parser.add_argument("-s", "--payload", type=int, default=100, help="bytes of data per job")
    parser.add_argument(
        "-b",
        "--backend",
        action="append",
        help="memory, sqlite, sqlite-normal, postgres, mysql, redis (repeatable; default all)",
    )
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--mysql", default="mysql://root@127.0.0.1:3306/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    prefix = f"bench_{uuid.uuid4().hex[:8]}"
    results = []
    with tempfile.TemporaryDirectory() as directory:
        urls = backend_urls(args, prefix, directory)
        for name in args.backend or list(urls):
            url = urls[name]
            try:
                results.append(await run_one(name, url, args.jobs, args.concurrency, args.payload))
            except Exception as exc:
                print(f"{name}: skipped ({type(exc).__name__}: {exc})")
            finally:
                try:
                    await drop(name, url, prefix)
                except Exception as exc:
                    print(f"{name}: cleanup failed ({type(exc).__name__}: {exc})")
    print_table(results)


if __name__ == "__main__":
    asyncio.run(main())
