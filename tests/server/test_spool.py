"""Large jobs through a real server: spooled on the way in, sent from the file on the way out.

The server keeps bodies of at least ``spool_threshold`` bytes in unlinked spool files.
These tests drive a listening server over sockets: a large job and its large result
arrive byte for byte and in order with the packets around them, the job waits in
the queue as a file and not in memory, ``-`` uniques still coalesce by content, and
a spool that cannot be written costs the sender one clear ERROR and nothing else.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
from pathlib import Path

from geartrain.protocol.codec import Decoder, Packet, encode_request
from geartrain.protocol.constants import RES, PacketType
from geartrain.protocol.spool import Spooled

from .conftest import RawClient, running_server

P = PacketType
KiB = 1024
MiB = 1024 * KiB


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(size + seed).randbytes(size)


def digest(data: bytes) -> tuple[int, str]:
    """Length and hash: what large payloads are compared by (a mismatch prints short)."""
    return len(data), hashlib.sha256(data).hexdigest()


async def connect(host: str, port: int) -> RawClient:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
    return RawClient(reader, writer)


async def test_large_job_and_result_round_trip_through_spool_files(tmp_path: Path) -> None:
    job, result = payload(5 * MiB), payload(7 * MiB, seed=1)
    async with running_server(spool_threshold=64 * KiB, spool_directory=str(tmp_path)) as srv:
        client = await connect(*srv.addresses[0])
        worker = await connect(*srv.addresses[0])
        client.send(P.SUBMIT_JOB, b"big", b"u-1", data=job)
        handle = (await client.packet()).args[0]
        queued = srv.scheduler.jobs[handle]
        assert isinstance(queued.data, Spooled) and len(queued.data) == len(job)
        assert os.listdir(tmp_path) == []  # the spool file has no name

        worker.send(P.CAN_DO, b"big")
        worker.send(P.GRAB_JOB_UNIQ)
        worker.send(P.ECHO_REQ, data=b"after the assignment")
        assign = await worker.packet(wait=20)
        assert (assign.type, assign.args) == (P.JOB_ASSIGN_UNIQ, (handle, b"big", b"u-1"))
        assert digest(bytes(assign.data)) == digest(job)
        assert await worker.packets(1) == [(P.ECHO_RES, (), b"after the assignment")]

        worker.send(P.WORK_DATA, handle, data=b"small first")
        worker.send(P.WORK_COMPLETE, handle, data=result)
        got = await client.packets(2, wait=20)
        assert got[0] == (P.WORK_DATA, (handle,), b"small first")
        assert got[1][:2] == (P.WORK_COMPLETE, (handle,))
        assert digest(got[1][2]) == digest(result)
        for peer in (client, worker):
            await peer.close()


async def test_a_slow_reader_gets_every_byte_of_a_spooled_result(tmp_path: Path) -> None:
    job = payload(3 * MiB)
    async with running_server(spool_threshold=64 * KiB, spool_directory=str(tmp_path)) as srv:
        host, port = srv.addresses[0]
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KiB)
        slow.connect((host, port))
        slow.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(slow, encode_request(P.ECHO_REQ, data=job))
        await loop.sock_sendall(slow, encode_request(P.ECHO_REQ, data=b"next"))
        decoder = Decoder(expect=RES, text=False)
        events = []
        async with asyncio.timeout(30):
            while len(events) < 2:
                await asyncio.sleep(0.001)  # a reader slower than the server can send
                chunk = await loop.sock_recv(slow, 8 * KiB)
                assert chunk, "server closed the connection"
                events += decoder.feed(chunk)
        slow.close()
    first, second = events
    assert isinstance(first, Packet) and digest(bytes(first.data)) == digest(job)
    assert second == Packet(P.ECHO_RES, (), b"next")


async def test_dash_uniques_coalesce_spooled_payloads_by_content(tmp_path: Path) -> None:
    same, other = payload(300 * KiB), payload(300 * KiB, seed=9)
    async with running_server(spool_threshold=64 * KiB, spool_directory=str(tmp_path)) as srv:
        client = await connect(*srv.addresses[0])
        for data in (same, same, other):
            client.send(P.SUBMIT_JOB_BG, b"f", b"-", data=data)
        handles = [(await client.packet()).args[0] for _ in range(3)]
        assert handles[0] == handles[1] != handles[2]
        await client.close()


async def test_a_spool_that_cannot_be_written_refuses_that_job_only(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_bytes(b"")
    async with running_server(
        spool_threshold=64 * KiB, spool_directory=str(not_a_directory)
    ) as srv:
        client = await connect(*srv.addresses[0])
        client.send(P.SUBMIT_JOB_BG, b"f", b"u", data=payload(200 * KiB))
        client.send(P.SUBMIT_JOB_BG, b"f", b"v", data=b"small")
        refusal, created = await client.packets(2)
        assert refusal[0] == P.ERROR and refusal[1][0] == b"QUEUE_ERROR"
        assert b"Could not spool" in refusal[1][1]
        assert created[0] == P.JOB_CREATED
        assert len(srv.scheduler.jobs) == 1
        await client.close()
