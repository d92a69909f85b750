"""Instructions the server spends per job, counted with callgrind.

Throughput and CPU time on a shared 2-core VM swing by tens of percent between identical
runs, so a change worth 5 % cannot be seen in them. Instruction counts can: this runs
the server in process (its connections fed from memory through a fake transport, no
sockets) under valgrind's callgrind, once with a few batches and once with more, and
reports the difference per job, which leaves out start-up and imports. Repeated runs
agree to within about 1 %.

Rows: ``none`` and ``sqlite`` count a background submission (SUBMIT_JOB_BG until its
JOB_CREATED) in memory and with the SQLite queue; ``fg`` counts a whole foreground job in
memory: SUBMIT_JOB, GRAB_JOB, JOB_ASSIGN, WORK_COMPLETE and its forwarding to the client.

    apt-get install valgrind
    python bench/instructions.py                    # every row
    python bench/instructions.py --queues none      # background submission in memory only
    python bench/instructions.py --permissions bench/permissions.toml  # under a permissions file

Only the server process is counted: the SQLite queue's writer process runs natively,
outside valgrind, so its work does not appear (it runs on another core).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geartrain.server.app import Server

JOBS_PER_BATCH = 1000
CONNECTIONS = 4
PAYLOAD = b"x" * 100
COLLECTED = re.compile(rb"Collected\s*:\s*(\d+)")
#: Tells the process under callgrind which permissions file to load.
_PERMISSIONS = "GEARTRAIN_BENCH_PERMISSIONS"


def request(ptype: int, body: bytes = b"") -> bytes:
    return b"\0REQ" + struct.pack(">II", ptype, len(body)) + body


def batches(count: int) -> bytes:
    """``count`` batches of SUBMIT_JOB_BG requests, every job with its own unique."""
    parts = []
    for n in range(count * JOBS_PER_BATCH):
        parts.append(request(18, b"bench\0%036d\0" % n + PAYLOAD))
    return b"".join(parts)


def foreground_batches(count: int, handle_prefix: bytes) -> bytes:
    """Per batch: the client's SUBMIT_JOBs, the worker's GRAB_JOBs, then its WORK_COMPLETEs.

    The handles are known in advance (``<prefix>:<n>``, n from 1), so the worker's results
    are built here rather than by parsing JOB_ASSIGN in the process being counted.
    """
    parts = []
    for batch in range(count):
        first = batch * JOBS_PER_BATCH
        jobs = range(first, first + JOBS_PER_BATCH)
        submits = b"".join(request(7, b"bench\0%036d\0" % n + PAYLOAD) for n in jobs)
        grabs = request(9) * JOBS_PER_BATCH
        results = b"".join(request(13, b"%s:%d\0" % (handle_prefix, n + 1) + PAYLOAD) for n in jobs)
        parts.append(struct.pack(">III", len(submits), len(grabs), len(results)))
        parts.append(submits + grabs + results)
    return b"".join(parts)


class _Transport:
    """Counts the JOB_CREATED replies written to one connection."""

    def __init__(self, expected: int, done: asyncio.Event) -> None:
        self.created = 0
        self.expected = expected
        self.done = done

    def write(self, data: bytes | memoryview) -> None:
        self.created += bytes(data).count(b"\0RES\x00\x00\x00\x08")
        if self.created >= self.expected:
            self.done.set()

    def writelines(self, parts: list[bytes | memoryview]) -> None:
        for part in parts:
            self.write(part)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def drive(queue: str, data: bytes, count: int) -> None:
    """Submit ``count`` batches, one per connection at a time, each until acknowledged."""
    from geartrain.server.app import Server
    from geartrain.server.config import Settings
    from geartrain.server.connection import Connection
    from geartrain.server.persistence import open_store

    store = None
    if queue != "none":
        store = open_store(queue)
        await store.open()
    server = _server(Server(Settings(), store=store))
    size = len(data) // count
    chunks = [data[i * size : (i + 1) * size] for i in range(count)]
    for first in range(0, count, CONNECTIONS):
        events = []
        for chunk in chunks[first : first + CONNECTIONS]:
            done = asyncio.Event()
            transport = _Transport(JOBS_PER_BATCH, done)
            conn = Connection(server)
            conn.connection_made(transport)  # type: ignore[arg-type]
            conn.data_received(chunk)
            events.append(done)
        for done in events:
            await done.wait()
    if store is not None:
        await store.close()


async def drive_foreground(data: bytes) -> None:
    """One client and one worker connection: each batch submitted, grabbed and completed."""
    from geartrain.server.app import Server
    from geartrain.server.config import Settings
    from geartrain.server.connection import Connection

    server = _server(Server(Settings()))
    done = asyncio.Event()
    client, worker = Connection(server), Connection(server)
    client.connection_made(_Transport(0, done))  # type: ignore[arg-type]
    worker.connection_made(_Transport(0, done))  # type: ignore[arg-type]
    worker.data_received(request(1, b"bench"))  # CAN_DO
    offset = 0
    while offset < len(data):
        sizes = struct.unpack_from(">III", data, offset)
        offset += 12
        for conn, size in zip((client, worker, worker), sizes, strict=True):
            conn.data_received(data[offset : offset + size])
            offset += size
        await asyncio.sleep(0)  # as between reads: let scheduled flushes run


def _server(server: Server) -> Server:
    """The server, under the permissions file ``--permissions`` names (if any).

    Its connections have no address (the transport is fake): only ``[default]`` applies.
    """
    rules = os.environ.get(_PERMISSIONS)
    if rules:
        from geartrain.server.permissions import Permissions

        server.permissions = Permissions.load(rules, server.counters.permission_denied)
    return server


def child(queue: str, path: str, count: int) -> None:
    """What runs under callgrind: the server's own settings, then the load."""
    with open(path, "rb") as file:
        data = file.read()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)  # as `geartrain serve` sets it
    if queue == "fg":
        asyncio.run(drive_foreground(data))
    else:
        asyncio.run(drive(queue, data, count))


def count_instructions(queue: str, path: str, count: int) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        queue,
        path,
        str(count),
    ]
    result = subprocess.run(command, capture_output=True, check=False)
    found = COLLECTED.search(result.stderr)
    if result.returncode != 0 or found is None:
        sys.exit(f"callgrind run failed ({result.returncode}):\n{result.stderr.decode()[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queues", default="none,sqlite,fg", help="none, sqlite and/or fg")
    parser.add_argument("--batches", default="8,24", help="the two batch counts compared")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--permissions", help="run the server under this permissions file")
    opts = parser.parse_args()
    if opts.permissions:
        os.environ[_PERMISSIONS] = os.path.abspath(opts.permissions)  # for the child
    if opts.child:
        queue, path, count = opts.child
        child(queue, path, int(count))
        return
    if shutil.which("valgrind") is None:
        sys.exit("needs valgrind: apt-get install valgrind")
    few, many = (int(n) for n in opts.batches.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for queue_name in opts.queues.split(","):
            counts = []
            for count in (few, many):
                path = os.path.join(tmp, f"batches-{queue_name}-{count}")
                with open(path, "wb") as file:
                    file.write(_load(queue_name, count))
                queue = queue_name
                if queue_name == "sqlite":
                    queue = f"sqlite:///{tmp}/q-{count}.db"
                counts.append(count_instructions(queue, path, count))
            per_job = (counts[1] - counts[0]) / ((many - few) * JOBS_PER_BATCH)
            results[queue_name] = per_job
            what = "foreground job" if queue_name == "fg" else "background submission"
            print(f"{queue_name:8} {per_job:10,.0f} instructions per {what}")
        if "none" in results and "sqlite" in results:
            print(f"{'sqlite':8} {results['sqlite'] / results['none']:10.2f} x in memory")


def _load(row: str, count: int) -> bytes:
    if row != "fg":
        return batches(count)
    from geartrain.server.config import Settings

    return foreground_batches(count, Settings().handle_prefix())


if __name__ == "__main__":
    main()
