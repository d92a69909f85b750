"""Exact-byte vectors: the walk-through of PROTOCOL.md §3.1 and the argument rules of §2.1.

Every vector is decoded by the side that receives it (a server decoder for ``\\0REQ``, a
client/worker decoder without text lines for ``\\0RES``) and encoded by the side that
sends it, and both must match the bytes exactly.
"""

from __future__ import annotations

import pytest

from geartrain.protocol.codec import Decoder, Packet, encode, encode_head, encode_request, in_memory
from geartrain.protocol.constants import ARGUMENTS, HEADER_SIZE, REQ, RES, PacketType

from .helpers import feed_chunks
from .strategies import received

P = PacketType


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text)


def receiver(magic: bytes) -> Decoder:
    """The decoder of whoever receives packets with this magic."""
    return Decoder(expect=REQ) if magic == REQ else Decoder(expect=RES, text=False)


def encode_as(magic: bytes, packet: Packet) -> bytes:
    if magic == REQ:
        return encode_request(packet.type, *packet.args, data=in_memory(packet.data))
    return encode(packet.type, *packet.args, data=in_memory(packet.data))


# (id, magic, wire bytes as in PROTOCOL.md §3.1, the packet they carry)
WALKTHROUGH: list[tuple[str, bytes, str, Packet]] = [
    (
        "W>S CAN_DO upper",
        REQ,
        "00 52 45 51 00 00 00 01 00 00 00 05 75 70 70 65 72",
        Packet(P.CAN_DO, (b"upper",)),
    ),
    (
        "W>S GRAB_JOB_UNIQ",
        REQ,
        "00 52 45 51 00 00 00 1e 00 00 00 00",
        Packet(P.GRAB_JOB_UNIQ, ()),
    ),
    (
        "S>W NO_JOB",
        RES,
        "00 52 45 53 00 00 00 0a 00 00 00 00",
        Packet(P.NO_JOB, ()),
    ),
    (
        "W>S PRE_SLEEP",
        REQ,
        "00 52 45 51 00 00 00 04 00 00 00 00",
        Packet(P.PRE_SLEEP, ()),
    ),
    (
        "C>S SUBMIT_JOB",
        REQ,
        "00 52 45 51 00 00 00 07 00 00 00 0f 75 70 70 65 72 00 6a 6f 62 2d 37 00 61 62 63",
        Packet(P.SUBMIT_JOB, (b"upper", b"job-7"), b"abc"),
    ),
    (
        "S>C JOB_CREATED",
        RES,
        "00 52 45 53 00 00 00 08 00 00 00 08 48 3a 62 6f 78 3a 34 32",
        Packet(P.JOB_CREATED, (b"H:box:42",)),
    ),
    (
        "S>W NOOP",
        RES,
        "00 52 45 53 00 00 00 06 00 00 00 00",
        Packet(P.NOOP, ()),
    ),
    (
        "S>W JOB_ASSIGN_UNIQ",
        RES,
        "00 52 45 53 00 00 00 1f 00 00 00 18"
        " 48 3a 62 6f 78 3a 34 32 00 75 70 70 65 72 00 6a 6f 62 2d 37 00 61 62 63",
        Packet(P.JOB_ASSIGN_UNIQ, (b"H:box:42", b"upper", b"job-7"), b"abc"),
    ),
    (
        "W>S WORK_STATUS",
        REQ,
        "00 52 45 51 00 00 00 0c 00 00 00 0c 48 3a 62 6f 78 3a 34 32 00 31 00 32",
        Packet(P.WORK_STATUS, (b"H:box:42", b"1", b"2")),
    ),
    (
        "S>C WORK_STATUS",
        RES,
        "00 52 45 53 00 00 00 0c 00 00 00 0c 48 3a 62 6f 78 3a 34 32 00 31 00 32",
        Packet(P.WORK_STATUS, (b"H:box:42", b"1", b"2")),
    ),
    (
        "W>S WORK_COMPLETE",
        REQ,
        "00 52 45 51 00 00 00 0d 00 00 00 0c 48 3a 62 6f 78 3a 34 32 00 41 42 43",
        Packet(P.WORK_COMPLETE, (b"H:box:42",), b"ABC"),
    ),
    (
        "S>C WORK_COMPLETE",
        RES,
        "00 52 45 53 00 00 00 0d 00 00 00 0c 48 3a 62 6f 78 3a 34 32 00 41 42 43",
        Packet(P.WORK_COMPLETE, (b"H:box:42",), b"ABC"),
    ),
]


def _body(*parts: bytes) -> bytes:
    return b"".join(parts)


# The argument rules of §2.1, each as (id, magic, body, packet). The header is built
# from the body so the table stays readable; the header layout itself is pinned by
# WALKTHROUGH above.
ARGUMENT_RULES: list[tuple[str, bytes, bytes, Packet]] = [
    # Types without trailing data: the last argument is the unterminated rest.
    ("WORK_FAIL body is exactly the handle", REQ, b"H:box:1", Packet(P.WORK_FAIL, (b"H:box:1",))),
    ("WORK_FAIL to the client", RES, b"H:box:1", Packet(P.WORK_FAIL, (b"H:box:1",))),
    ("GET_STATUS", REQ, b"H:box:1", Packet(P.GET_STATUS, (b"H:box:1",))),
    ("CAN_DO empty function", REQ, b"", Packet(P.CAN_DO, (b"",))),
    ("CAN_DO_TIMEOUT", REQ, b"upper\x0030", Packet(P.CAN_DO_TIMEOUT, (b"upper", b"30"))),
    (
        "OPTION_REQ keeps a trailing NUL in its argument",
        REQ,
        b"exceptions\0",
        Packet(P.OPTION_REQ, (b"exceptions\0",)),
    ),
    ("OPTION_REQ exceptions", REQ, b"exceptions", Packet(P.OPTION_REQ, (b"exceptions",))),
    ("OPTION_RES echoes", RES, b"exceptions", Packet(P.OPTION_RES, (b"exceptions",))),
    (
        "WORK_STATUS last argument takes extra NULs",
        REQ,
        b"H:1\x001\x002\x00",
        Packet(P.WORK_STATUS, (b"H:1", b"1", b"2\0")),
    ),
    (
        "ERROR code and text",
        RES,
        b"INVALID_MAGIC\0Request magic expected",
        Packet(P.ERROR, (b"INVALID_MAGIC", b"Request magic expected")),
    ),
    (
        "STATUS_RES five arguments",
        RES,
        b"H:box:1\x001\x000\x003\x0010",
        Packet(P.STATUS_RES, (b"H:box:1", b"1", b"0", b"3", b"10")),
    ),
    (
        "STATUS_RES_UNIQUE six arguments",
        RES,
        b"job-7\x001\x001\x000\x000\x002",
        Packet(P.STATUS_RES_UNIQUE, (b"job-7", b"1", b"1", b"0", b"0", b"2")),
    ),
    ("SET_CLIENT_ID", REQ, b"worker 1", Packet(P.SET_CLIENT_ID, (b"worker 1",))),
    ("RESET_ABILITIES", REQ, b"", Packet(P.RESET_ABILITIES, ())),
    ("ALL_YOURS", REQ, b"", Packet(P.ALL_YOURS, ())),
    # Types with trailing data: N terminated arguments, then opaque data.
    (
        "JOB_ASSIGN with empty payload ends with the NUL after the function",
        RES,
        b"H:box:1\0upper\0",
        Packet(P.JOB_ASSIGN, (b"H:box:1", b"upper"), b""),
    ),
    (
        "JOB_ASSIGN payload with NULs",
        RES,
        b"H:box:1\0upper\0\0a\0\0",
        Packet(P.JOB_ASSIGN, (b"H:box:1", b"upper"), b"\0a\0\0"),
    ),
    (
        "WORK_COMPLETE empty result",
        REQ,
        b"H:box:1\0",
        Packet(P.WORK_COMPLETE, (b"H:box:1",), b""),
    ),
    (
        "WORK_COMPLETE result with NULs",
        REQ,
        b"H:box:1\0a\0b\0",
        Packet(P.WORK_COMPLETE, (b"H:box:1",), b"a\0b\0"),
    ),
    ("WORK_DATA", REQ, b"H:1\0part", Packet(P.WORK_DATA, (b"H:1",), b"part")),
    ("WORK_WARNING", RES, b"H:1\0warn", Packet(P.WORK_WARNING, (b"H:1",), b"warn")),
    ("WORK_EXCEPTION", RES, b"H:1\0boom\0", Packet(P.WORK_EXCEPTION, (b"H:1",), b"boom\0")),
    ("ECHO_REQ empty", REQ, b"", Packet(P.ECHO_REQ, (), b"")),
    ("ECHO_REQ only NULs", REQ, b"\0\0\0", Packet(P.ECHO_REQ, (), b"\0\0\0")),
    ("ECHO_RES", RES, b"ping\0pong", Packet(P.ECHO_RES, (), b"ping\0pong")),
    (
        "SUBMIT_JOB empty function, unique and payload",
        REQ,
        b"\0\0",
        Packet(P.SUBMIT_JOB, (b"", b""), b""),
    ),
    (
        "SUBMIT_JOB_LOW_BG",
        REQ,
        b"f\0u\0x",
        Packet(P.SUBMIT_JOB_LOW_BG, (b"f", b"u"), b"x"),
    ),
    (
        "SUBMIT_JOB_EPOCH",
        REQ,
        b"f\0u\x001700000000\0payload",
        Packet(P.SUBMIT_JOB_EPOCH, (b"f", b"u", b"1700000000"), b"payload"),
    ),
    (
        "SUBMIT_JOB_SCHED seven arguments",
        REQ,
        b"f\0u\x000\x001\x002\x003\x004\0d",
        Packet(P.SUBMIT_JOB_SCHED, (b"f", b"u", b"0", b"1", b"2", b"3", b"4"), b"d"),
    ),
    (
        "SUBMIT_REDUCE_JOB",
        REQ,
        b"map\0u\0red\0agg\0data",
        Packet(P.SUBMIT_REDUCE_JOB, (b"map", b"u", b"red", b"agg"), b"data"),
    ),
    (
        "JOB_ASSIGN_ALL",
        RES,
        b"H:1\0map\0u\0red\0data",
        Packet(P.JOB_ASSIGN_ALL, (b"H:1", b"map", b"u", b"red"), b"data"),
    ),
]


def framed(magic: bytes, ptype: int, body: bytes) -> bytes:
    return magic + ptype.to_bytes(4, "big") + len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize(
    ("magic", "wire", "packet"),
    [pytest.param(m, hexbytes(h), p, id=i) for i, m, h, p in WALKTHROUGH],
)
class TestWalkthrough:
    def test_decode(self, magic: bytes, wire: bytes, packet: Packet) -> None:
        decoder = receiver(magic)
        assert decoder.feed(wire) == [packet]
        assert decoder.buffered == 0

    def test_encode(self, magic: bytes, wire: bytes, packet: Packet) -> None:
        assert encode_as(magic, packet) == wire

    def test_header_fields(self, magic: bytes, wire: bytes, packet: Packet) -> None:
        assert wire[:4] == magic
        assert int.from_bytes(wire[4:8], "big") == packet.type
        assert int.from_bytes(wire[8:12], "big") == len(wire) - HEADER_SIZE


@pytest.mark.parametrize(
    ("magic", "body", "packet"),
    [pytest.param(m, b, p, id=i) for i, m, b, p in ARGUMENT_RULES],
)
class TestArgumentRules:
    def test_decode(self, magic: bytes, body: bytes, packet: Packet) -> None:
        # SUBMIT_JOB_SCHED is rejected by servers, which therefore do not split it.
        expected = received(magic, packet)
        assert receiver(magic).feed(framed(magic, packet.type, body)) == [expected]

    def test_encode(self, magic: bytes, body: bytes, packet: Packet) -> None:
        assert encode_as(magic, packet) == framed(magic, packet.type, body)


def test_whole_server_side_of_the_walkthrough_in_one_stream() -> None:
    requests = [(hexbytes(h), p) for _, m, h, p in WALKTHROUGH if m == REQ]
    stream = b"".join(w for w, _ in requests)
    assert Decoder(expect=REQ).feed(stream) == [p for _, p in requests]


def test_whole_client_side_of_the_walkthrough_in_one_stream() -> None:
    responses = [(hexbytes(h), p) for _, m, h, p in WALKTHROUGH if m == RES]
    stream = b"".join(w for w, _ in responses)
    assert Decoder(expect=RES, text=False).feed(stream) == [p for _, p in responses]


def test_work_fail_has_no_trailing_nul() -> None:
    # §2.1 / §7.4: libgearman matches the handle by exact length.
    wire = encode(P.WORK_FAIL, b"H:box:1")
    assert wire == b"\0RES" + bytes([0, 0, 0, 14, 0, 0, 0, 7]) + b"H:box:1"
    assert not wire.endswith(b"\0")


def test_body_beyond_what_a_no_argument_type_needs_is_swallowed() -> None:
    # §2.2: GRAB_JOB with a 4-byte body is still a GRAB_JOB; the next packet parses.
    stream = framed(REQ, P.GRAB_JOB, b"junk") + framed(REQ, P.CAN_DO, b"upper")
    assert Decoder().feed(stream) == [Packet(P.GRAB_JOB, ()), Packet(P.CAN_DO, (b"upper",))]


@pytest.mark.parametrize("ptype", [t for t, (_, has_data) in ARGUMENTS.items() if has_data])
def test_encode_head_plus_data_equals_encode(ptype: int) -> None:
    count, _ = ARGUMENTS[ptype]
    args = tuple(b"arg%d" % i for i in range(count))
    data = b"pay\0load"
    head = encode_head(ptype, args, len(data))
    assert head + data == encode(ptype, *args, data=data)
    assert encode_head(ptype, args, len(data), magic=REQ) + data == encode_request(
        ptype, *args, data=data
    )


def test_encode_accepts_memoryview_data() -> None:
    data = memoryview(bytearray(b"result\0bytes"))
    assert encode(P.WORK_COMPLETE, b"H:1", data=data) == framed(
        RES, P.WORK_COMPLETE, b"H:1\0result\0bytes"
    )
    assert encode_request(P.ECHO_REQ, data=data) == framed(REQ, P.ECHO_REQ, b"result\0bytes")


def test_every_packet_type_has_an_argument_layout() -> None:
    assert sorted(ARGUMENTS) == list(range(1, 43))
    assert [int(t) for t in PacketType] == list(range(1, 43))


def test_vectors_survive_byte_by_byte_feeding() -> None:
    stream = b"".join(hexbytes(h) for _, m, h, _ in WALKTHROUGH if m == REQ)
    expected = [p for _, m, _, p in WALKTHROUGH if m == REQ]
    decoder = Decoder()
    assert feed_chunks(decoder, [stream[i : i + 1] for i in range(len(stream))]) == expected
    assert decoder.buffered == 0
