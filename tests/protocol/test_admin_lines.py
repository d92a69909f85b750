"""Admin text lines on the server's stream (PROTOCOL.md §1 and §12.1)."""

from __future__ import annotations

import pytest

from geartrain.protocol.codec import AdminLine, BadPacket, Decoder, Packet, encode_request
from geartrain.protocol.constants import MAX_ADMIN_LINE, ErrorCode, PacketType

from .helpers import feed_chunks

P = PacketType


@pytest.mark.parametrize(
    ("wire", "line"),
    [
        (b"status\r\n", b"status"),
        (b"status\n", b"status"),
        (b"\n", b""),
        (b"\r\n", b""),
        (b"show jobs\r\n", b"show jobs"),
        (b" leading space\n", b" leading space"),
        (b"show\tjobs\n", b"show\tjobs"),
        # Only a CR right before the LF belongs to the line ending.
        (b"a\rb\n", b"a\rb"),
        (b"abc\r\r\n", b"abc\r"),
        (b"\r\r\n", b"\r"),
        # Bytes are bytes: no charset, NUL inside a line is just a byte.
        (b"caf\xc3\xa9 \xff\0x\n", b"caf\xc3\xa9 \xff\0x"),
    ],
)
def test_line_endings(wire: bytes, line: bytes) -> None:
    decoder = Decoder()
    assert decoder.feed(wire) == [AdminLine(line)]
    assert decoder.buffered == 0


def test_incomplete_line_waits_for_its_newline() -> None:
    decoder = Decoder()
    assert decoder.feed(b"stat") == []
    assert decoder.buffered == 4
    assert decoder.feed(b"us\r") == []
    assert decoder.feed(b"\nver") == [AdminLine(b"status")]
    assert decoder.buffered == 3
    assert decoder.feed(b"sion\n") == [AdminLine(b"version")]
    assert decoder.buffered == 0


def test_pipelined_lines_come_out_in_order() -> None:
    wire = b"status\r\nworkers\nshow jobs\r\n\nversion\n"
    assert Decoder().feed(wire) == [
        AdminLine(b"status"),
        AdminLine(b"workers"),
        AdminLine(b"show jobs"),
        AdminLine(b""),
        AdminLine(b"version"),
    ]


def test_lines_and_packets_interleave_on_one_stream() -> None:
    wire = (
        b"status\n"
        + encode_request(P.CAN_DO, b"upper")
        + b"workers\r\n"
        + encode_request(P.ECHO_REQ, data=b"ping\n")
        + encode_request(P.GRAB_JOB)
        + b"version\n"
    )
    expected = [
        AdminLine(b"status"),
        Packet(P.CAN_DO, (b"upper",)),
        AdminLine(b"workers"),
        Packet(P.ECHO_REQ, (), b"ping\n"),
        Packet(P.GRAB_JOB, ()),
        AdminLine(b"version"),
    ]
    assert Decoder().feed(wire) == expected
    # The same stream one byte at a time.
    assert feed_chunks(Decoder(), [wire[i : i + 1] for i in range(len(wire))]) == expected


def test_newline_inside_packet_data_is_not_a_line_end() -> None:
    wire = encode_request(P.SUBMIT_JOB, b"f", b"u", data=b"a\nb\r\n") + b"status\n"
    assert Decoder().feed(wire) == [
        Packet(P.SUBMIT_JOB, (b"f", b"u"), b"a\nb\r\n"),
        AdminLine(b"status"),
    ]


def test_client_decoder_refuses_text() -> None:
    # Servers never send admin lines on a client's binary connection; a non-NUL
    # first byte means the stream cannot be framed.
    decoder = Decoder(expect=b"\0RES", text=False)
    [event] = decoder.feed(b"OK\n")
    assert isinstance(event, BadPacket)
    assert event.fatal
    assert event.code == ErrorCode.INVALID_MAGIC


class TestLineLength:
    """A line may hold at most MAX_ADMIN_LINE bytes before its LF, however it arrives."""

    def test_longest_line_is_accepted(self) -> None:
        line = b"x" * MAX_ADMIN_LINE
        assert Decoder().feed(line + b"\n") == [AdminLine(line)]

    def test_longest_line_is_accepted_in_pieces(self) -> None:
        line = b"x" * MAX_ADMIN_LINE
        decoder = Decoder()
        assert decoder.feed(line) == []
        assert decoder.feed(b"\n") == [AdminLine(line)]

    def test_too_long_without_newline_is_fatal(self) -> None:
        decoder = Decoder()
        [event] = decoder.feed(b"x" * (MAX_ADMIN_LINE + 1))
        assert isinstance(event, BadPacket)
        assert event.fatal
        assert event.code == ErrorCode.ARGUMENT_TOO_LARGE

    @pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
    def test_too_long_with_newline_in_the_same_chunk_is_fatal(self, ending: bytes) -> None:
        # Whether the LF arrives in the same read must not change the verdict.
        decoder = Decoder()
        events = decoder.feed(b"y" * (MAX_ADMIN_LINE + 1) + ending + b"status\n")
        assert len(events) == 1
        assert isinstance(events[0], BadPacket)
        assert events[0].fatal
        assert events[0].code == ErrorCode.ARGUMENT_TOO_LARGE

    def test_verdict_does_not_depend_on_chunking(self) -> None:
        wire = b"status\n" + b"z" * (MAX_ADMIN_LINE + 10) + b"\nversion\n"
        whole = Decoder().feed(wire)
        for cut in (1, 8, MAX_ADMIN_LINE, MAX_ADMIN_LINE + 8, MAX_ADMIN_LINE + 16, len(wire) - 1):
            assert feed_chunks(Decoder(), [wire[:cut], wire[cut:]]) == whole, cut
        assert whole[0] == AdminLine(b"status")
        assert isinstance(whole[1], BadPacket) and whole[1].fatal
        assert len(whole) == 2

    def test_long_line_does_not_pin_memory(self) -> None:
        decoder = Decoder()
        decoder.feed(b"x" * MAX_ADMIN_LINE)
        assert decoder.buffered == MAX_ADMIN_LINE
        decoder.feed(b"x")
        assert decoder.buffered == 0
