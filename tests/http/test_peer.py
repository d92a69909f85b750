"""HttpPeer without sockets: what the scheduler sends becomes replies, within a bound."""

from __future__ import annotations

import asyncio
from pathlib import Path

from geartrain.protocol.codec import encode, encode_head
from geartrain.protocol.constants import PacketType as P
from geartrain.protocol.spool import SpoolWriter
from geartrain.server.http.peer import HttpPeer, Reply
from geartrain.server.scheduler import Scheduler
from geartrain.server.writes import WriteGroup


def peer(max_buffered: int = 1 << 20) -> HttpPeer:
    return HttpPeer(Scheduler(), "127.0.0.1", max_buffered)


async def test_packets_become_replies_in_order() -> None:
    http = peer()
    http.send(encode(P.WORK_DATA, b"H:1", data=b"part"))
    http.send(encode(P.WORK_STATUS, b"H:1", b"1", b"2"))
    http.send(encode(P.WORK_COMPLETE, b"H:1", data=b"a\0b"))  # NULs in data survive
    http.send(encode(P.WORK_FAIL, b"H:1"))
    replies = [await http.next_reply() for _ in range(4)]
    assert replies == [
        Reply(int(P.WORK_DATA), b"H:1", b"part"),
        Reply(int(P.WORK_STATUS), b"H:1", b"1\x002"),
        Reply(int(P.WORK_COMPLETE), b"H:1", b"a\0b"),
        Reply(int(P.WORK_FAIL), b"H:1", b""),
    ]


async def test_large_data_passes_through_without_a_copy() -> None:
    http = peer()
    data = memoryview(bytearray(b"x" * 100_000))
    http.send_parts(encode_head(int(P.WORK_COMPLETE), (b"H:2",), len(data)), data)
    reply = await http.next_reply()
    assert reply is not None and reply.handle == b"H:2" and reply.data is data


async def test_a_reply_held_on_a_refused_store_write_becomes_a_queue_error() -> None:
    http = peer()
    write = WriteGroup()
    http.send_after(write, encode(P.JOB_CREATED, b"H:3"))
    write.settle(b"disk on fire")
    reply = await http.next_reply()
    assert reply == Reply(int(P.ERROR), b"QUEUE_ERROR", b"disk on fire")


async def test_too_much_unread_data_overflows_and_ends_the_wait() -> None:
    http = peer(max_buffered=10)
    http.send(encode(P.WORK_DATA, b"H:4", data=b"123456"))
    assert not http.overflowed
    http.send(encode(P.WORK_DATA, b"H:4", data=b"789012"))  # 12 bytes waiting: over
    assert http.overflowed
    http.send(encode(P.WORK_COMPLETE, b"H:4", data=b"late"))  # dropped
    assert await http.next_reply() is None


async def test_spooled_data_does_not_count_against_the_bound(tmp_path: Path) -> None:
    http = peer(max_buffered=10)
    writer = SpoolWriter(tmp_path)
    writer.write(b"s" * 100_000)
    spooled = writer.finish()
    http.send_parts(encode_head(int(P.WORK_DATA), (b"H:5",), len(spooled)), spooled)
    assert not http.overflowed
    reply = await http.next_reply()
    assert reply is not None and reply.data is spooled
    spooled.close()


async def test_stop_ends_a_wait_at_once() -> None:
    http = peer()
    waiting = asyncio.create_task(http.next_reply())
    await asyncio.sleep(0)
    http.stop()
    async with asyncio.timeout(5):
        assert await waiting is None
    assert http.stopping
