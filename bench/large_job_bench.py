"""Memory of storing and loading one large background job in the SQLite queue.

A payload of ``--size`` bytes (1 GiB by default) is spooled, added to a fresh SQLite
store (which writes it in chunks), and loaded back by a second store into a new spool
file. The figures are peak resident memory (the kernel's VmHWM, reset before each
phase) of this process, which plays the server, and of the store's writer process.
What should hold: both stay at a few tens of MiB whatever the job's size.

    python bench/large_job_bench.py                   # 1 GiB, in a temporary directory
    python bench/large_job_bench.py --size 4294967295 --directory /var/tmp
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from geartrain.protocol.spool import Spooled, spool_from
from geartrain.server.persistence.base import StoredJob
from geartrain.server.persistence.sqlite import SqliteStore

MiB = 1024 * 1024


def peak_kib(pid: int | str = "self") -> int:
    """VmHWM of ``pid``: its peak resident set since start or since the last reset."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def reset_peak() -> None:
    """Start a new VmHWM measurement for this process (Linux 4.0+)."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


def pieces(size: int) -> Iterator[bytes]:
    """``size`` bytes that do not compress, one MiB at a time, without holding them."""
    block = bytearray(os.urandom(MiB))
    for number, start in enumerate(range(0, size, MiB)):
        block[:8] = number.to_bytes(8, "big")  # every MiB differs
        yield bytes(block[: min(MiB, size - start)])


def digest(payload: Spooled) -> bytes:
    hasher = hashlib.blake2b(digest_size=32)
    for chunk in payload.chunks(MiB):
        hasher.update(chunk)
    return hasher.digest()


def writer_pid(store: SqliteStore) -> int:
    assert store._child is not None
    return store._child.pid


async def run(size: int, directory: Path) -> None:
    spool = directory / "spool"
    payload = spool_from(spool, pieces(size))
    expected = digest(payload)
    path = str(directory / "queue.sqlite3")
    print(f"job of {size / MiB:.0f} MiB, queue {path}")

    reset_peak()
    store = SqliteStore(path)
    await store.open()
    started = time.perf_counter()
    await store.add(StoredJob(1, b"large", b"", payload, 1))
    seconds = time.perf_counter() - started
    writer = peak_kib(writer_pid(store))
    await store.close()
    print(
        f"store: {seconds:6.1f} s  peak RSS server {peak_kib() / 1024:6.1f} MiB,"
        f" writer {writer / 1024:6.1f} MiB"
    )
    del payload

    reset_peak()
    store = SqliteStore(path)
    store.spool_directory = spool
    await store.open()
    started = time.perf_counter()
    (loaded,) = await store.load()
    seconds = time.perf_counter() - started
    writer = peak_kib(writer_pid(store))
    await store.close()
    print(
        f"load:  {seconds:6.1f} s  peak RSS server {peak_kib() / 1024:6.1f} MiB,"
        f" writer {writer / 1024:6.1f} MiB"
    )
    assert isinstance(loaded.data, Spooled) and len(loaded.data) == size
    assert digest(loaded.data) == expected, "the loaded payload differs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024 * MiB, help="payload bytes")
    parser.add_argument("--directory", help="where the queue and spool go (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.directory) as directory:
        asyncio.run(run(args.size, Path(directory)))


if __name__ == "__main__":
    main()
