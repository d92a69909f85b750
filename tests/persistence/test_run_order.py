"""The persistent queue never changes the order jobs run in.

A background job must be durable before its JOB_CREATED and before any worker gets it,
and its write takes a while; a foreground job needs no write. Jobs submitted together must
still run in priority order, then FIFO, exactly as with no queue at all. Every pair of
(priority, foreground/background) is pipelined in one write and the worker's order is
checked, on every backend, and on a store slow enough to make the race certain.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from geartrain.protocol.codec import as_bytes, encode_request
from geartrain.protocol.constants import PacketType as P
from geartrain.server.app import Server
from geartrain.server.persistence._batch import Batch
from geartrain.server.persistence.memory import MemoryBacking, MemoryStore
from tests.persistence.conftest import Harness
from tests.server.conftest import RawClient, running_server

pytestmark = pytest.mark.timeout(120)

SUBMIT = {
    (0, False): P.SUBMIT_JOB_HIGH,
    (1, False): P.SUBMIT_JOB,
    (2, False): P.SUBMIT_JOB_LOW,
    (0, True): P.SUBMIT_JOB_HIGH_BG,
    (1, True): P.SUBMIT_JOB_BG,
    (2, True): P.SUBMIT_JOB_LOW_BG,
}
#: Every (priority, background) pair, first and second.
PAIRS = list(itertools.product(SUBMIT, repeat=2))


class SlowStore(MemoryStore):
    """A memory store whose every commit takes 50 ms: a fresh foreground job always wins
    the race against a background write, unless the server keeps the order."""

    async def _write(self, batch: Batch) -> None:
        await asyncio.sleep(0.05)
        await super()._write(batch)


@asynccontextmanager
async def connected(server: Server) -> AsyncIterator[Callable[[], Any]]:
    clients: list[RawClient] = []

    async def connect() -> RawClient:
        host, port = server.addresses[0]
        client = RawClient(*await asyncio.open_connection(host, port))
        clients.append(client)
        return client

    try:
        yield connect
    finally:
        for client in clients:
            await client.close()


async def run_in_order(worker: RawClient, count: int) -> list[bytes]:
    """Grab ``count`` jobs one at a time (sleeping when told NO_JOB); return their payloads."""
    payloads: list[bytes] = []
    while len(payloads) < count:
        worker.send(P.GRAB_JOB)
        reply = await worker.packet()
        if reply.type == P.NO_JOB:
            worker.send(P.PRE_SLEEP)
            assert (await worker.packet(wait=10)).type == P.NOOP
            continue
        assert reply.type == P.JOB_ASSIGN, reply
        handle, _function = reply.args
        payloads.append(as_bytes(reply.data))
        worker.send(P.WORK_COMPLETE, handle, data=b"done")
    return payloads


async def check_every_pair(server: Server) -> None:
    async with connected(server) as connect:
        client, worker = await connect(), await connect()
        for n, (first, second) in enumerate(PAIRS):
            function = b"order-%d" % n
            worker.send(P.CAN_DO, function)
            # One write, so the server reads both submissions in one turn.
            client.send_raw(
                b"".join(
                    encode_request(SUBMIT[kind], function, b"", data=b"%d-%d-%d" % (i, *kind))
                    for i, kind in enumerate((first, second))
                )
            )
            ran = await run_in_order(worker, 2)
            expected = sorted(
                [(first[0], 0, b"0-%d-%d" % first), (second[0], 1, b"1-%d-%d" % second)]
            )
            assert ran == [payload for _, _, payload in expected], (first, second)
            # Drain the client's replies (JOB_CREATED, WORK_COMPLETE for foreground jobs).
            replies = 2 + (not first[1]) + (not second[1])
            kinds = sorted([(await client.packet()).type for _ in range(replies)])
            assert kinds.count(P.JOB_CREATED) == 2, (first, second, kinds)
            worker.send(P.CANT_DO, function)


async def test_no_queue_keeps_priority_then_fifo() -> None:
    async with running_server() as server:
        await check_every_pair(server)


async def test_slow_store_keeps_priority_then_fifo() -> None:
    # The server opens and closes the store it is given.
    async with running_server(store=SlowStore()) as server:
        await check_every_pair(server)


async def test_every_backend_keeps_priority_then_fifo(harness: Harness) -> None:
    store = harness.make()
    harness.stores.append(store)  # closed by the harness even if the server is not
    async with running_server(store=store) as server:
        await check_every_pair(server)


async def test_a_refused_background_job_never_runs_and_holds_nothing_back() -> None:
    backing = MemoryBacking()
    async with running_server(store=SlowStore(backing)) as server, connected(server) as connect:
        client, worker = await connect(), await connect()
        worker.send(P.CAN_DO, b"f")
        backing.fail_writes = OSError("disk full")
        client.send_raw(
            encode_request(P.SUBMIT_JOB_HIGH_BG, b"f", b"", data=b"refused")
            + encode_request(P.SUBMIT_JOB_LOW, b"f", b"", data=b"runs")
        )
        assert await run_in_order(worker, 1) == [b"runs"]
        replies = [await client.packet() for _ in range(3)]
        assert [r.type for r in replies] == [P.ERROR, P.JOB_CREATED, P.WORK_COMPLETE]
        assert replies[0].args[0] == b"QUEUE_ERROR"
        backing.fail_writes = None
        worker.send(P.GRAB_JOB)
        assert (await worker.packet()).type == P.NO_JOB  # the refused job is gone
        assert backing.jobs == {}
