"""Receiving the rest of a large body straight into the decoder's buffer (recv_into)."""

from __future__ import annotations

from geartrain.protocol.codec import Decoder, Packet, as_bytes, encode_request
from geartrain.protocol.constants import PacketType as P


def test_body_written_into_body_buffer_completes_the_packet() -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB: collected in a memory mapping
    wire = encode_request(P.SUBMIT_JOB, b"f", b"u", data=payload)
    decoder = Decoder()
    assert decoder.body_buffer() is None
    assert decoder.feed(wire[:5000]) == []
    done = 5000
    events = []
    while done < len(wire):
        space = decoder.body_buffer()
        assert space is not None and len(space) == len(wire) - done
        step = min(300_000, len(space))
        space[:step] = wire[done : done + step]
        events += decoder.body_filled(step)
        done += step
    assert len(events) == 1 and isinstance(events[0], Packet)
    assert events[0].args == (b"f", b"u") and as_bytes(events[0].data) == payload
    assert decoder.body_buffer() is None and decoder.buffered == 0
    follow = encode_request(P.ECHO_REQ, data=b"next")
    assert decoder.feed(follow) == [Packet(P.ECHO_REQ, (), b"next")]


def test_small_packets_have_no_body_buffer() -> None:
    decoder = Decoder()
    wire = encode_request(P.SUBMIT_JOB, b"f", b"", data=b"x" * 100)
    assert decoder.feed(wire[:20]) == []
    assert decoder.body_buffer() is None
    assert len(decoder.feed(wire[20:])) == 1
