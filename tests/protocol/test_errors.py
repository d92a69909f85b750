"""Input the peer got wrong: what is fatal, what is skipped, and that nothing desyncs.

PROTOCOL.md §2.2 and §11: bad magic and unknown types cannot be framed (fatal);
``\\0RES`` sent to a server and a body short of NULs are reported and skipped, and the
next packet still parses.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from geartrain.protocol.codec import (
    AdminLine,
    BadPacket,
    Decoder,
    Event,
    Packet,
    encode,
    encode_request,
)
from geartrain.protocol.constants import (
    ARGUMENTS,
    HANDLE_ONLY_TYPES,
    MAX_PACKET_TYPE,
    REQ,
    REQUEST_TYPES,
    RES,
    RESPONSE_TYPES,
    ErrorCode,
    PacketType,
)

from .helpers import feed_chunks

P = PacketType

NEXT = encode_request(P.CAN_DO, b"next")
NEXT_PACKET = Packet(P.CAN_DO, (b"next",))


def header(magic: bytes, ptype: int, size: int) -> bytes:
    return magic + ptype.to_bytes(4, "big") + size.to_bytes(4, "big")


def only_fatal(events: Sequence[Event], code: bytes) -> BadPacket:
    assert len(events) == 1, events
    [event] = events
    assert isinstance(event, BadPacket)
    assert event.fatal
    assert event.code == code
    return event


class TestFatal:
    @pytest.mark.parametrize("magic", [b"\0REX", b"\0\0\0\0", b"\0req", b"\0RE\0"])
    def test_bad_magic(self, magic: bytes) -> None:
        decoder = Decoder()
        only_fatal(decoder.feed(header(magic, P.CAN_DO, 0) + NEXT), ErrorCode.INVALID_MAGIC)

    @pytest.mark.parametrize("ptype", [0, MAX_PACKET_TYPE + 1, 100, 0xFFFFFFFF])
    @pytest.mark.parametrize("magic", [REQ, RES])
    def test_unknown_type(self, ptype: int, magic: bytes) -> None:
        event = only_fatal(
            Decoder().feed(header(magic, ptype, 0) + NEXT), ErrorCode.INVALID_COMMAND
        )
        assert str(ptype).encode() in event.text

    def test_unknown_type_on_the_client_side(self) -> None:
        decoder = Decoder(expect=RES, text=False)
        only_fatal(decoder.feed(header(RES, 43, 0)), ErrorCode.INVALID_COMMAND)

    def test_body_larger_than_max_size(self) -> None:
        decoder = Decoder(max_size=16)
        event = only_fatal(
            decoder.feed(header(REQ, P.ECHO_REQ, 17) + b"x" * 17 + NEXT),
            ErrorCode.ARGUMENT_TOO_LARGE,
        )
        assert b"17" in event.text and b"16" in event.text

    def test_body_of_exactly_max_size_is_fine(self) -> None:
        decoder = Decoder(max_size=16)
        assert decoder.feed(header(REQ, P.ECHO_REQ, 16) + b"x" * 16 + NEXT) == [
            Packet(P.ECHO_REQ, (), b"x" * 16),
            NEXT_PACKET,
        ]

    def test_oversize_is_judged_on_the_header_alone(self) -> None:
        # The body never has to arrive: the header already says it will not fit.
        decoder = Decoder(max_size=64 * 1024 * 1024)
        only_fatal(
            decoder.feed(header(REQ, P.SUBMIT_JOB, 0xFFFFFFFF)), ErrorCode.ARGUMENT_TOO_LARGE
        )
        assert decoder.buffered == 0

    def test_oversize_with_wrong_magic_is_still_fatal(self) -> None:
        decoder = Decoder(max_size=8)
        only_fatal(decoder.feed(header(RES, P.ECHO_REQ, 9)), ErrorCode.ARGUMENT_TOO_LARGE)

    def test_nothing_after_a_fatal_event(self) -> None:
        decoder = Decoder()
        only_fatal(decoder.feed(header(b"\0BAD", 1, 0)), ErrorCode.INVALID_MAGIC)
        assert decoder.feed(NEXT) == []
        assert decoder.feed(b"status\n") == []
        assert decoder.feed(header(b"\0BAD", 1, 0)) == []
        assert decoder.buffered == 0

    def test_events_before_the_fatal_one_are_kept(self) -> None:
        wire = NEXT + b"status\n" + header(REQ, 0, 0) + NEXT
        events = Decoder().feed(wire)
        assert events[:2] == [NEXT_PACKET, AdminLine(b"status")]
        assert isinstance(events[2], BadPacket) and events[2].fatal
        assert len(events) == 3

    def test_fatal_is_reported_once_the_header_is_complete(self) -> None:
        decoder = Decoder()
        bad = header(b"\0XYZ", 1, 0)
        assert decoder.feed(bad[:11]) == []
        only_fatal(decoder.feed(bad[11:]), ErrorCode.INVALID_MAGIC)


class TestWrongMagic:
    def test_response_magic_to_a_server_is_skipped(self) -> None:
        # §2.2: ERROR INVALID_MAGIC "Request magic expected", connection stays open.
        wire = encode(P.SUBMIT_JOB, b"f", b"u", data=b"payload") + NEXT
        assert Decoder().feed(wire) == [
            BadPacket(ErrorCode.INVALID_MAGIC, b"Request magic expected", False, P.SUBMIT_JOB),
            NEXT_PACKET,
        ]

    def test_request_magic_to_a_client_is_skipped(self) -> None:
        wire = encode_request(P.NOOP) + encode(P.NO_JOB)
        assert Decoder(expect=RES, text=False).feed(wire) == [
            BadPacket(ErrorCode.INVALID_MAGIC, b"Response magic expected", False, P.NOOP),
            Packet(P.NO_JOB, ()),
        ]

    def test_skipped_body_may_look_like_anything(self) -> None:
        # The skipped body holds what would be a fatal header and an admin line;
        # none of it may be interpreted.
        body = header(b"\0BAD", 0, 0) + b"status\n"
        wire = header(RES, P.ECHO_RES, len(body)) + body + NEXT
        events = Decoder().feed(wire)
        assert events == [
            BadPacket(ErrorCode.INVALID_MAGIC, b"Request magic expected", False, P.ECHO_RES),
            NEXT_PACKET,
        ]

    def test_large_body_with_wrong_magic_is_skipped_across_reads(self) -> None:
        body = b"\0" * 100_000
        wire = header(RES, P.ECHO_RES, len(body)) + body + NEXT
        chunks = [wire[i : i + 7000] for i in range(0, len(wire), 7000)]
        decoder = Decoder()
        assert feed_chunks(decoder, chunks) == [
            BadPacket(ErrorCode.INVALID_MAGIC, b"Request magic expected", False, P.ECHO_RES),
            NEXT_PACKET,
        ]
        assert decoder.buffered == 0


def needs_nuls(ptype: int) -> int:
    count, has_data = ARGUMENTS[ptype]
    return count if has_data else max(count - 1, 0)


def short_of_nuls(magic: bytes) -> list[object]:
    types = REQUEST_TYPES if magic == REQ else RESPONSE_TYPES
    return [
        pytest.param(magic, t, id=f"{magic[1:].decode()}-{P(t).name}")
        for t in sorted(types)
        if needs_nuls(t) > 0 and t not in HANDLE_ONLY_TYPES
    ]


class TestMissingNuls:
    @pytest.mark.parametrize(("magic", "ptype"), short_of_nuls(REQ) + short_of_nuls(RES))
    def test_one_nul_short_is_skipped_and_the_next_packet_parses(
        self, magic: bytes, ptype: int
    ) -> None:
        # The body ends one NUL short; the NULs of the following packet must not be
        # borrowed to complete it (gearmand's desync, §2.2).
        body = b"\0".join([b"a"] * needs_nuls(ptype))
        follow = encode(P.WORK_COMPLETE, b"H:1", data=b"d\0", magic=magic)
        wire = header(magic, ptype, len(body)) + body + follow
        events = Decoder(expect=magic, text=magic == REQ).feed(wire)
        assert len(events) == 2
        bad, packet = events
        assert isinstance(bad, BadPacket)
        assert bad.code == ErrorCode.INVALID_PACKET
        assert not bad.fatal
        assert bad.type == ptype
        assert packet == Packet(P.WORK_COMPLETE, (b"H:1",), b"d\0")

    def test_can_do_timeout_without_nul_does_not_swallow_the_echo(self) -> None:
        # The exact case observed on gearmand in §2.2.
        wire = (
            header(REQ, P.CAN_DO_TIMEOUT, 5) + b"upper" + encode_request(P.ECHO_REQ, data=b"hello")
        )
        events = Decoder().feed(wire)
        assert [type(e) for e in events] == [BadPacket, Packet]
        assert events[1] == Packet(P.ECHO_REQ, (), b"hello")

    @pytest.mark.parametrize("magic", [REQ, RES])
    @pytest.mark.parametrize("ptype", sorted(HANDLE_ONLY_TYPES), ids=lambda t: P(t).name)
    def test_a_work_packet_may_end_at_its_handle(self, magic: bytes, ptype: int) -> None:
        # Perl's Gearman::Worker sends WORK_COMPLETE as the bare handle for an empty
        # result: the handle is the whole body and the data is empty.
        wire = header(magic, ptype, 8) + b"H:host:1" + encode(P.ECHO_RES, data=b"n", magic=magic)
        events = Decoder(expect=magic, text=magic == REQ).feed(wire)
        assert events[0] == Packet(ptype, (b"H:host:1",), b"")
        assert len(events) == 2 and not isinstance(events[1], BadPacket)

    def test_wrong_magic_on_a_work_result_names_its_handle(self) -> None:
        wire = encode(P.WORK_COMPLETE, b"H:host:7", data=b"result", magic=RES) + NEXT
        events = Decoder().feed(wire)
        assert events[0] == BadPacket(
            ErrorCode.INVALID_MAGIC, b"Request magic expected", False, P.WORK_COMPLETE, b"H:host:7"
        )
        assert events[1:] == [NEXT_PACKET]

    def test_empty_body_of_a_data_type(self) -> None:
        wire = header(REQ, P.WORK_COMPLETE, 0) + NEXT
        events = Decoder().feed(wire)
        assert isinstance(events[0], BadPacket) and not events[0].fatal
        assert events[1:] == [NEXT_PACKET]

    def test_large_body_short_of_nuls_across_reads(self) -> None:
        body = b"f\0" + b"u" * 200_000
        wire = header(REQ, P.SUBMIT_JOB, len(body)) + body + NEXT
        chunks = [wire[i : i + 4096] for i in range(0, len(wire), 4096)]
        events = feed_chunks(Decoder(), chunks)
        assert len(events) == 2
        assert isinstance(events[0], BadPacket)
        assert events[0].code == ErrorCode.INVALID_PACKET
        assert events[0].type == P.SUBMIT_JOB
        assert events[1] == NEXT_PACKET

    @pytest.mark.parametrize("ptype", [P.SUBMIT_JOB, P.WORK_COMPLETE, P.SUBMIT_REDUCE_JOB])
    def test_large_body_short_of_nuls_in_one_read(self, ptype: int) -> None:
        # Large bodies take their own path (data handed out without a copy); the
        # search for NULs must still stop at the end of the body, not find the
        # NUL that starts the next packet's magic.
        body = b"f" * 100_000
        wire = header(REQ, ptype, len(body)) + body + NEXT
        events = Decoder().feed(wire)
        assert len(events) == 2
        assert isinstance(events[0], BadPacket)
        assert events[0].code == ErrorCode.INVALID_PACKET
        assert events[0].type == ptype
        assert events[1] == NEXT_PACKET

    def test_decoder_keeps_working_after_many_bad_packets(self) -> None:
        bad = header(REQ, P.WORK_STATUS, 3) + b"abc"
        decoder = Decoder()
        events = decoder.feed(bad * 50 + NEXT)
        assert len(events) == 51
        assert all(isinstance(e, BadPacket) and not e.fatal for e in events[:50])
        assert events[50] == NEXT_PACKET


FOREIGN_TO_SERVER = sorted(set(ARGUMENTS) - REQUEST_TYPES)
FOREIGN_TO_CLIENT = sorted(set(ARGUMENTS) - RESPONSE_TYPES)


class TestWrongDirection:
    """Types that never travel this way are framed but not split (§2.2).

    gearmand answers any of them with ERROR INVALID_COMMAND whatever the body, so
    the decoder hands them over without arguments rather than judging the body.
    """

    @pytest.mark.parametrize("ptype", FOREIGN_TO_SERVER, ids=[P(t).name for t in FOREIGN_TO_SERVER])
    def test_to_a_server(self, ptype: int) -> None:
        wire = header(REQ, ptype, 5) + b"a\0b\0c" + NEXT
        assert Decoder().feed(wire) == [Packet(ptype, ()), NEXT_PACKET]

    @pytest.mark.parametrize("ptype", FOREIGN_TO_CLIENT, ids=[P(t).name for t in FOREIGN_TO_CLIENT])
    def test_to_a_client(self, ptype: int) -> None:
        wire = header(RES, ptype, 3) + b"abc" + encode(P.NOOP)
        decoder = Decoder(expect=RES, text=False)
        assert decoder.feed(wire) == [Packet(ptype, ()), Packet(P.NOOP, ())]

    def test_known_unimplemented_types_are_not_split(self) -> None:
        # SUBMIT_JOB_SCHED and ALL_YOURS exist but gearmand rejects them (§4.3).
        for ptype in (P.UNUSED, P.ALL_YOURS, P.SUBMIT_JOB_SCHED):
            assert ptype in FOREIGN_TO_SERVER
            assert ptype in FOREIGN_TO_CLIENT

    def test_body_short_of_nuls_is_not_an_invalid_packet(self) -> None:
        wire = header(REQ, P.JOB_ASSIGN, 4) + b"H:1x" + NEXT
        assert Decoder().feed(wire) == [Packet(P.JOB_ASSIGN, ()), NEXT_PACKET]

    def test_large_body_across_reads(self) -> None:
        body = b"H:1\0f\0" + b"\xaa" * 100_000
        wire = header(REQ, P.JOB_ASSIGN, len(body)) + body + NEXT
        chunks = [wire[i : i + 3000] for i in range(0, len(wire), 3000)]
        decoder = Decoder()
        assert feed_chunks(decoder, chunks) == [Packet(P.JOB_ASSIGN, ()), NEXT_PACKET]
        assert decoder.buffered == 0
