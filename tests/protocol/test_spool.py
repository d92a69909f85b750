"""Large bodies received into spool files: whole, framed, and never held in memory.

A decoder given a spool writes the trailing data of every body of at least
``spool_at`` bytes to an unlinked file as it arrives. These tests check what comes
out (the packet, its arguments, its payload byte for byte), what the decoder keeps
meanwhile, that nothing is left in the spool directory, and that every refusal (a
full disk, a type without trailing data, arguments without their NULs, the wrong
magic) costs one ERROR and leaves the stream framed for the next packet.
"""

from __future__ import annotations

import errno
import os
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geartrain.protocol.codec import BadPacket, Decoder, Event, Packet, encode_head, encode_request
from geartrain.protocol.constants import RES, ErrorCode, PacketType
from geartrain.protocol.spool import Spooled, SpoolWriter, spool_from

from .helpers import feed_chunks, split_at
from .strategies import comparable, sides, streams

P = PacketType
KiB = 1024
SPOOL_AT = 64 * KiB
AFTER = encode_request(P.ECHO_REQ, data=b"after")


def payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def decoder_in(directory: Path) -> Decoder:
    return Decoder(spool=lambda: SpoolWriter(directory), spool_at=SPOOL_AT)


def feed(decoder: Decoder, stream: bytes, step: int) -> list[Event]:
    events: list[Event] = []
    view = memoryview(stream)
    for offset in range(0, len(stream), step):
        events += decoder.feed(view[offset : offset + step])
    return events


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("step", [1000, 4096, 65_536, 256 * KiB, 10**7])
def test_large_submission_arrives_whole_in_a_spool_file(tmp_path: Path, step: int) -> None:
    data = payload(3 * SPOOL_AT + 17)
    head = encode_head(P.SUBMIT_JOB, (b"reverse", b"unique-1"), len(data), magic=b"\0REQ")
    decoder = decoder_in(tmp_path)

    events = feed(decoder, head[:100] + head[100:] + data + AFTER, step)

    assert len(events) == 2, events
    packet, after = events
    assert isinstance(packet, Packet)
    assert (packet.type, packet.args) == (P.SUBMIT_JOB, (b"reverse", b"unique-1"))
    assert isinstance(packet.data, Spooled)
    assert len(packet.data) == len(data)
    assert packet.data.to_bytes() == data
    assert b"".join(packet.data.chunks(1000)) == data
    assert after == Packet(P.ECHO_REQ, (), b"after")
    # The file has no name: nothing is left in the directory, even while it is in use.
    assert list(tmp_path.iterdir()) == []
    assert decoder.buffered == 0 and not decoder.spooling


def test_decoder_holds_only_the_arguments_while_spooling(tmp_path: Path) -> None:
    data = payload(1024 * KiB)
    head = encode_head(P.WORK_COMPLETE, (b"H:host:1",), len(data), magic=RES)
    decoder = Decoder(expect=RES, text=False, spool=lambda: SpoolWriter(tmp_path))
    decoder.spool_at = SPOOL_AT
    assert decoder.feed(head + data[: 512 * KiB]) == []
    assert decoder.spooling
    # Nothing of the body is kept in memory: the bytes went to the file.
    assert decoder.body_buffer() is None
    (packet,) = decoder.feed(data[512 * KiB :])
    assert isinstance(packet, Packet) and packet.args == (b"H:host:1",)
    assert isinstance(packet.data, Spooled) and packet.data.to_bytes() == data


def test_spool_file_is_closed_when_the_payload_is_dropped(tmp_path: Path) -> None:
    before, counted = open_descriptors(), Spooled.open_count
    spooled = spool_from(tmp_path, iter([b"a" * 1000, b"b" * 24]))
    assert open_descriptors() == before + 1
    assert Spooled.open_count == counted + 1
    assert spooled.read(990, 20) == b"a" * 10 + b"b" * 10
    del spooled
    assert open_descriptors() == before
    assert Spooled.open_count == counted


def test_small_bodies_stay_in_memory(tmp_path: Path) -> None:
    data = payload(SPOOL_AT - 100)
    head = encode_head(P.SUBMIT_JOB, (b"f", b""), len(data), magic=b"\0REQ")
    (packet,) = feed(decoder_in(tmp_path), head + data, 4096)
    assert isinstance(packet, Packet) and not isinstance(packet.data, Spooled)
    assert bytes(packet.data) == data


class _FullDisk(SpoolWriter):
    """A spool on a disk that fills up after ``room`` bytes."""

    def __init__(self, directory: Path, room: int) -> None:
        super().__init__(directory)
        self.room = room

    def write(self, data: bytes | memoryview) -> None:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        super().write(data)


def test_full_disk_refuses_that_packet_and_the_stream_goes_on(tmp_path: Path) -> None:
    before = open_descriptors()
    decoder = Decoder(spool=lambda: _FullDisk(tmp_path, 100 * KiB), spool_at=SPOOL_AT)
    data = payload(400 * KiB)
    head = encode_head(P.SUBMIT_JOB_BG, (b"f", b"u"), len(data), magic=b"\0REQ")

    events = feed(decoder, head + data + AFTER, 32 * KiB)

    assert len(events) == 2, events
    refusal, after = events
    assert isinstance(refusal, BadPacket) and not refusal.fatal
    assert refusal.code == ErrorCode.QUEUE_ERROR
    assert b"No space left on device" in refusal.text
    assert after == Packet(P.ECHO_REQ, (), b"after")
    assert open_descriptors() == before  # the half-written file was let go


def test_unusable_spool_directory_refuses_that_packet(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_bytes(b"")
    decoder = decoder_in(not_a_directory)
    data = payload(100 * KiB)
    head = encode_head(P.SUBMIT_JOB, (b"f", b"u"), len(data), magic=b"\0REQ")
    refusal, after = feed(decoder, head + data + AFTER, 8 * KiB)
    assert isinstance(refusal, BadPacket) and refusal.code == ErrorCode.QUEUE_ERROR
    assert b"Could not spool" in refusal.text
    assert after == Packet(P.ECHO_REQ, (), b"after")


def test_large_body_of_a_type_without_data_is_read_past(tmp_path: Path) -> None:
    body = b"f" * (200 * KiB)
    head = encode_head(P.CAN_DO, (), len(body), magic=b"\0REQ")
    refusal, after = feed(decoder_in(tmp_path), head + body + AFTER, 16 * KiB)
    assert isinstance(refusal, BadPacket) and not refusal.fatal
    assert refusal.code == ErrorCode.ARGUMENT_TOO_LARGE
    assert after == Packet(P.ECHO_REQ, (), b"after")


def test_arguments_without_their_nul_are_refused(tmp_path: Path) -> None:
    body = b"x" * (200 * KiB)  # SUBMIT_JOB needs two NULs before its data
    head = encode_head(P.SUBMIT_JOB, (), len(body), magic=b"\0REQ")
    refusal, after = feed(decoder_in(tmp_path), head + body + AFTER, 16 * KiB)
    assert isinstance(refusal, BadPacket) and refusal.code == ErrorCode.ARGUMENT_TOO_LARGE
    assert after == Packet(P.ECHO_REQ, (), b"after")


def test_large_result_with_wrong_magic_names_its_job(tmp_path: Path) -> None:
    data = payload(300 * KiB)
    head = encode_head(P.WORK_COMPLETE, (b"H:host:7",), len(data), magic=RES)
    refusal, after = feed(decoder_in(tmp_path), head + data + AFTER, 64 * KiB)
    assert isinstance(refusal, BadPacket) and refusal.code == ErrorCode.INVALID_MAGIC
    assert refusal.handle == b"H:host:7" and not refusal.fatal
    assert after == Packet(P.ECHO_REQ, (), b"after")


def test_oversized_body_is_fatal_before_anything_is_spooled(tmp_path: Path) -> None:
    decoder = Decoder(max_size=SPOOL_AT * 2, spool=lambda: SpoolWriter(tmp_path / "s"))
    decoder.spool_at = SPOOL_AT
    head = encode_head(P.SUBMIT_JOB, (b"f", b"u"), SPOOL_AT * 4, magic=b"\0REQ")
    (refusal,) = decoder.feed(head)
    assert isinstance(refusal, BadPacket) and refusal.fatal
    assert refusal.code == ErrorCode.ARGUMENT_TOO_LARGE
    assert not (tmp_path / "s").exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(side=sides(), spool_at=st.integers(4097, 70_000), data=st.data())
def test_a_spooling_decoder_yields_what_a_memory_decoder_does(
    side: tuple[bytes, bool], spool_at: int, data: st.DataObject
) -> None:
    magic, text = side
    wire, expected = data.draw(streams(magic, text, large=True, max_messages=5))
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=40))
    with tempfile.TemporaryDirectory() as directory:
        decoder = Decoder(
            expect=magic,
            text=text,
            spool=lambda: SpoolWriter(Path(directory)),
            spool_at=spool_at,
        )
        events = feed_chunks(decoder, split_at(wire, cuts))
        assert [comparable(e) for e in events] == [comparable(e) for e in expected]
        assert decoder.buffered == 0 and not decoder.spooling
        assert os.listdir(directory) == []
