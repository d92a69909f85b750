"""connection.py through a fake transport: output order, holding, flow control, files.

The transport records what is written and plays asyncio's flow control by hand
(``pause_writing`` past its high-water mark, ``resume_writing`` once the test drains
it), so the connection's output rules are checked with no socket.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from geartrain.protocol.codec import Decoder, Packet, as_bytes, encode_request
from geartrain.protocol.constants import RES
from geartrain.protocol.constants import PacketType as P
from geartrain.server.app import Server
from geartrain.server.config import Settings
from geartrain.server.connection import Connection

KiB = 1024


class FakeTransport:
    """Records writes; calls pause_writing above ``high_water`` bytes not yet drained."""

    def __init__(self, high_water: int = 64 * KiB) -> None:
        self.high_water = high_water
        self.written = bytearray()
        self.unsent = 0
        self.write_paused = False
        self.reading = True
        self.closing = False
        self.aborted = False
        self.dropped = 0
        self.eof_written = False
        self.protocol: Connection | None = None

    def attach(self, protocol: Connection) -> None:
        self.protocol = protocol
        protocol.connection_made(self)  # type: ignore[arg-type]

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def write(self, data: Any) -> None:
        assert not self.eof_written, "write after write_eof"
        if self.closing:  # as asyncio's transports: dropped, not an error
            self.dropped += len(data)
            return
        self.written += data
        self.unsent += len(data)
        if self.unsent > self.high_water and not self.write_paused:
            self.write_paused = True
            assert self.protocol is not None
            self.protocol.pause_writing()

    def writelines(self, parts: Any) -> None:
        for part in parts:
            self.write(part)

    def drain(self) -> None:
        """The peer read everything: below the low-water mark, writing resumes."""
        self.unsent = 0
        if self.write_paused:
            self.write_paused = False
            assert self.protocol is not None
            self.protocol.resume_writing()

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.1", 40000)}.get(name, default)

    def packets(self) -> list[tuple[int, tuple[bytes, ...], bytes]]:
        events = Decoder(expect=RES, text=False).feed(bytes(self.written))
        assert all(isinstance(e, Packet) for e in events), events
        return [(e.type, e.args, as_bytes(e.data)) for e in events if isinstance(e, Packet)]


def make_server(tmp_path: Path, **options: Any) -> Server:
    return Server(Settings(queue="none", spool_directory=str(tmp_path), **options))


def connect(server: Server, **transport: Any) -> tuple[Connection, FakeTransport]:
    conn = Connection(server)
    fake = FakeTransport(**transport)
    fake.attach(conn)
    return conn, fake


async def flush() -> None:
    """Let the loop run the connection's scheduled flushes and file sends."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_pipelined_requests_are_answered_in_order_in_one_write(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    conn, transport = connect(server)
    conn.data_received(
        encode_request(P.SUBMIT_JOB_BG, b"f", b"a", data=b"1")
        + encode_request(P.ECHO_REQ, data=b"between")
        + encode_request(P.SUBMIT_JOB_BG, b"f", b"b", data=b"2")
    )
    got = transport.packets()
    assert [kind for kind, _, _ in got] == [P.JOB_CREATED, P.ECHO_RES, P.JOB_CREATED]
    assert got[1][2] == b"between"
    assert conn in server.connections


async def test_half_closed_peer_gets_its_answers_then_the_close(tmp_path: Path) -> None:
    conn, transport = connect(make_server(tmp_path))
    conn.data_received(encode_request(P.ECHO_REQ, data=b"last words"))
    conn.eof_received()
    assert transport.packets() == [(P.ECHO_RES, (), b"last words")]
    assert transport.closing and not transport.aborted


async def test_spooled_payload_goes_out_at_the_pace_the_peer_reads(tmp_path: Path) -> None:
    server = make_server(tmp_path, spool_threshold=64 * KiB)
    client, _ = connect(server)
    worker, transport = connect(server, high_water=64 * KiB)
    payload = random.Random(1).randbytes(1000 * KiB)
    client.data_received(encode_request(P.SUBMIT_JOB, b"big", b"u", data=payload))
    worker.data_received(
        encode_request(P.CAN_DO, b"big")
        + encode_request(P.GRAB_JOB)
        + encode_request(P.ECHO_REQ, data=b"queued behind the file")
    )
    await flush()
    # One chunk went out and filled the transport: the rest waits for the peer.
    assert transport.write_paused and len(transport.written) < len(payload)
    assert b"queued behind the file" not in transport.written
    rounds = 0
    while transport.write_paused and rounds < 100:
        transport.drain()
        await flush()
        rounds += 1
    assert rounds > 2, "the payload should have needed several drains"
    (assign_type, assign_args, assign_data), echo = transport.packets()
    assert (assign_type, assign_args[1]) == (P.JOB_ASSIGN, b"big")
    assert assign_data == payload
    assert echo == (P.ECHO_RES, (), b"queued behind the file")


async def test_half_close_waits_for_a_file_being_sent(tmp_path: Path) -> None:
    server = make_server(tmp_path, spool_threshold=64 * KiB)
    conn, transport = connect(server, high_water=64 * KiB)
    payload = random.Random(2).randbytes(500 * KiB)
    conn.data_received(encode_request(P.ECHO_REQ, data=payload))
    conn.eof_received()
    await flush()
    assert not transport.closing  # the file is still being sent
    for _ in range(100):
        if transport.closing:
            break
        transport.drain()
        await flush()
    assert transport.closing
    assert transport.packets() == [(P.ECHO_RES, (), payload)]


async def test_a_peer_that_never_reads_is_dropped(tmp_path: Path) -> None:
    server = make_server(tmp_path, max_packet_size=16 * KiB)
    conn, transport = connect(server, high_water=16 * KiB)
    for _ in range(6):  # more than the 4 packets of 16 KiB it may leave unread
        conn.data_received(encode_request(P.ECHO_REQ, data=b"x" * (15 * KiB)))
    assert transport.aborted


async def test_a_fatal_error_is_read_before_the_close(tmp_path: Path) -> None:
    server = make_server(tmp_path, max_packet_size=64 * KiB)
    conn, transport = connect(server)
    oversized = encode_request(P.ECHO_REQ, data=b"x" * (100 * KiB))
    conn.data_received(oversized[: 32 * KiB])
    [(kind, (code, _), _)] = transport.packets()
    assert (kind, code) == (P.ERROR, b"ARGUMENT_TOO_LARGE")
    # Our side is shut, but what the peer still sends is read, not answered with a reset.
    assert transport.eof_written and not transport.closing
    conn.data_received(oversized[32 * KiB :])
    conn.send(b"late output is dropped")
    await flush()
    conn.eof_received()
    assert transport.closing and not transport.aborted
