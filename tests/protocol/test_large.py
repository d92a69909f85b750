"""Large bodies: whole on the way out, and collected without quadratic copying.

Nothing here measures time. Linear behaviour is checked through what the decoder
holds (``buffered``) and through the peak memory it allocates while collecting a
body, which a re-join-the-tail implementation would double.
"""

from __future__ import annotations

import random
import tracemalloc

import pytest

from geartrain.protocol.codec import Decoder, Packet, encode_head, encode_request
from geartrain.protocol.constants import HEADER_SIZE, PacketType

from .helpers import feed_chunks

P = PacketType

MiB = 1024 * 1024
CHUNK = 256 * 1024
#: A body collected in memory (a decoder without a spool, as in a client).
BIG = 64 * MiB


def pattern(size: int) -> bytes:
    """Bytes where any misplaced, repeated or dropped chunk changes the content."""
    return random.Random(size).randbytes(size)


@pytest.fixture(scope="module")
def big_payload() -> bytes:
    prefix_size = len(b"upper\0job-1\0")
    return pattern(BIG - prefix_size)


def test_64_mib_body_in_256_kib_chunks(big_payload: bytes) -> None:
    head = encode_head(P.SUBMIT_JOB, (b"upper", b"job-1"), len(big_payload), magic=b"\0REQ")
    assert int.from_bytes(head[8:12], "big") == BIG
    follow = encode_request(P.ECHO_REQ, data=b"after")
    view = memoryview(head + big_payload + follow)
    total = len(view)

    decoder = Decoder()
    events = []
    tracemalloc.start()
    try:
        for offset in range(0, total, CHUNK):
            chunk = bytes(view[offset : offset + CHUNK])
            got = decoder.feed(chunk)
            fed = offset + len(chunk)
            if fed < total:
                # Nothing complete yet, and the decoder holds exactly what it got.
                assert got == []
                assert decoder.buffered == fed
            events.extend(got)
            del chunk, got
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert decoder.buffered == 0
    assert len(events) == 2
    packet, echo = events
    assert isinstance(packet, Packet)
    assert packet.type == P.SUBMIT_JOB
    assert packet.args == (b"upper", b"job-1")
    assert len(packet.data) == len(big_payload)
    assert bytes(packet.data) == big_payload
    assert echo == Packet(P.ECHO_REQ, (), b"after")
    # One body-sized buffer plus a few reads; copying the tail on every read would
    # need two body-sized buffers at once.
    assert peak < BIG + 8 * CHUNK, peak


@pytest.mark.parametrize("step", [1, 7, 4095, 4096, 4097, 65_536, 65_537, 300_000])
def test_body_comes_out_whole_whatever_the_read_size(step: int) -> None:
    size = 70_000 if step < 100 else 1 * MiB
    payload = pattern(size)
    wire = (
        encode_request(P.WORK_COMPLETE, b"H:box:1", data=payload)
        + encode_request(P.WORK_DATA, b"H:box:1", data=payload[:5000])
        + encode_request(P.GRAB_JOB)
    )
    decoder = Decoder()
    events = feed_chunks(decoder, [wire[i : i + step] for i in range(0, len(wire), step)])
    assert events == [
        Packet(P.WORK_COMPLETE, (b"H:box:1",), payload),
        Packet(P.WORK_DATA, (b"H:box:1",), payload[:5000]),
        Packet(P.GRAB_JOB, ()),
    ]
    assert decoder.buffered == 0


def test_buffered_never_exceeds_the_unfinished_message() -> None:
    # Whatever the reads, the decoder holds at most the one message in progress.
    sizes = [10, 5000, 100, 70_000, 3, 4096, 4097]
    wire = b"".join(encode_request(P.ECHO_REQ, data=pattern(n)) for n in sizes)
    ends = []
    end = 0
    for n in sizes:
        end += HEADER_SIZE + n
        ends.append(end)
    decoder = Decoder()
    fed = 0
    for i in range(0, len(wire), 999):
        decoder.feed(wire[i : i + 999])
        fed = min(i + 999, len(wire))
        done = max((e for e in ends if e <= fed), default=0)
        assert decoder.buffered == fed - done
    assert decoder.buffered == 0


def test_data_handed_out_survives_later_reads() -> None:
    # Large data may be a view of the decoder's buffer; a later packet must not
    # overwrite it.
    first, second = pattern(200_000), pattern(200_000)[::-1]
    wire = encode_request(P.ECHO_REQ, data=first) + encode_request(P.ECHO_REQ, data=second)
    decoder = Decoder()
    events = []
    for i in range(0, len(wire), 10_000):
        events.extend(decoder.feed(wire[i : i + 10_000]))
    assert len(events) == 2
    assert isinstance(events[0], Packet) and isinstance(events[1], Packet)
    assert bytes(events[0].data) == first
    assert bytes(events[1].data) == second


def test_large_data_in_one_read_is_whole() -> None:
    payload = pattern(3 * MiB)
    [packet] = Decoder().feed(encode_request(P.SUBMIT_JOB_BG, b"f", b"u", data=payload))
    assert isinstance(packet, Packet)
    assert bytes(packet.data) == payload
