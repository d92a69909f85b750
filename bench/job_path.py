"""The path of one background job through the server's code: files and functions hopped.

    .venv/bin/python bench/job_path.py [--queue URL] [--calls]

Starts an in-process server on a free port with a persistent queue (a temporary SQLite
file by default), registers a raw worker, then traces the server's Python calls from the
moment a SUBMIT_JOB_BG is sent until its JOB_CREATED, the worker's grab, its WORK_COMPLETE
and the store's removal of the job have all happened. It prints the distinct functions of
``geartrain.server`` and ``geartrain.protocol`` that ran, grouped by file, in the order they
were first called: a map for a reader, and a number that shows whether a change made the
path longer. Work done in other processes (the SQLite writer) is not seen.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from geartrain.server.app import Server
from geartrain.server.config import Settings
from geartrain.server.persistence import open_store

_REQ = b"\0REQ"
_WATCHED = ("geartrain/server/", "geartrain/protocol/")

# Packet type numbers (PROTOCOL.md): the few this probe sends and waits for.
CAN_DO, PRE_SLEEP, NOOP, GRAB_JOB, JOB_ASSIGN, WORK_COMPLETE = 1, 4, 6, 9, 11, 13
SUBMIT_JOB_BG, JOB_CREATED = 18, 8


def request(ptype: int, *args: bytes) -> bytes:
    body = b"\0".join(args)
    return _REQ + struct.pack(">II", ptype, len(body)) + body


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, list[bytes]]:
    header = await reader.readexactly(12)
    ptype, size = struct.unpack(">II", header[4:])
    body = await reader.readexactly(size)
    return ptype, body.split(b"\0")


@contextmanager
def traced(seen: dict[str, list[str]], calls: list[str]) -> Iterator[None]:
    """Record every function of the watched packages that is called, by file."""

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        code = frame.f_code
        filename = code.co_filename.replace("\\", "/")
        for watched in _WATCHED:
            at = filename.find(watched)
            if at >= 0:
                name = filename[at + len("geartrain/") :]
                qualname = getattr(code, "co_qualname", code.co_name)
                calls.append(f"{name}:{qualname}")
                functions = seen.setdefault(name, [])
                if qualname not in functions:
                    functions.append(qualname)
                return

    sys.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(None)


async def one_job(queue: str) -> tuple[dict[str, list[str]], list[str]]:
    store = open_store(queue)
    server = Server(Settings(port=0, listen=["127.0.0.1"]), store=store)
    await server.start()
    port = server.listeners[0].sockets[0].getsockname()[1]
    try:
        w_reader, w_writer = await asyncio.open_connection("127.0.0.1", port)
        c_reader, c_writer = await asyncio.open_connection("127.0.0.1", port)
        w_writer.write(request(CAN_DO, b"probe") + request(PRE_SLEEP))
        await w_writer.drain()
        await asyncio.sleep(0.2)  # registered and asleep before the trace starts

        seen: dict[str, list[str]] = {}
        calls: list[str] = []
        with traced(seen, calls):
            c_writer.write(request(SUBMIT_JOB_BG, b"probe", b"unique-1", b"payload"))
            await c_writer.drain()
            ptype, _ = await read_packet(c_reader)
            assert ptype == JOB_CREATED, ptype
            ptype, _ = await read_packet(w_reader)
            assert ptype == NOOP, ptype
            w_writer.write(request(GRAB_JOB))
            await w_writer.drain()
            ptype, args = await read_packet(w_reader)
            assert ptype == JOB_ASSIGN, ptype
            w_writer.write(request(WORK_COMPLETE, args[0], b"done"))
            await w_writer.drain()
            await _store_settles(server)
        for writer in (w_writer, c_writer):
            writer.close()
        return seen, calls
    finally:
        await server.stop()


async def _store_settles(server: Server) -> None:
    """Wait until the finished job is gone from the scheduler and its removal written."""
    for _ in range(200):  # at most 2 s
        await asyncio.sleep(0.01)
        store = server.store
        busy = getattr(store, "outstanding", getattr(store, "pending", 0))
        if not server.scheduler.jobs and not busy:
            return
    raise TimeoutError("the job did not finish within 2 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queue", help="queue URL (default: a temporary SQLite file)")
    parser.add_argument("--calls", action="store_true", help="also print every call in order")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        queue = options.queue or f"sqlite:///{Path(tmp) / 'queue.db'}"
        seen, calls = asyncio.run(one_job(queue))
    total = sum(len(functions) for functions in seen.values())
    print(f"{total} functions in {len(seen)} files, {len(calls)} calls")
    for name, functions in seen.items():
        print(f"  {name} ({len(functions)}): {', '.join(functions)}")
    if options.calls:
        print("\n".join(calls))


if __name__ == "__main__":
    main()
