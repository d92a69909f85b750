"""Property tests of the codec: round trips, chunking independence, garbage.

STYLE.md §5: encode/decode round trips; the same stream split at every byte boundary
gives the same events; garbage either parses or yields a BadPacket, nothing else.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geartrain.protocol.codec import (
    BadPacket,
    Decoder,
    Event,
    Packet,
    encode,
    encode_head,
    in_memory,
)
from geartrain.protocol.constants import ARGUMENTS, HEADER_SIZE, REQ, REQUEST_TYPES, RES

from .helpers import check_event_shape, feed_chunks, plain, split_at
from .strategies import comparable, garbage, native, packets, received, sides, streams

# Bounded so the module runs in seconds; no deadline because nothing here is about time.
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Types with trailing data, and types whose last argument runs to the end of the body.
DATA_TYPES = frozenset(t for t, (_, has_data) in ARGUMENTS.items() if has_data)
SPLIT_TO_THE_END = frozenset(t for t, (n, has_data) in ARGUMENTS.items() if n and not has_data)


def keys(events: list[Event]) -> list[object]:
    return [comparable(e) for e in events]


def decoder_for(magic: bytes, text: bool, max_size: int | None = None) -> Decoder:
    if max_size is None:
        return Decoder(expect=magic, text=text)
    return Decoder(expect=magic, text=text, max_size=max_size)


class TestRoundTrip:
    @FAST
    @given(packet=packets(), magic=st.sampled_from([REQ, RES]))
    def test_encode_then_decode(self, packet: Packet, magic: bytes) -> None:
        wire = encode(packet.type, *packet.args, data=in_memory(packet.data), magic=magic)
        assert wire[:4] == magic
        assert int.from_bytes(wire[4:8], "big") == packet.type
        assert int.from_bytes(wire[8:12], "big") == len(wire) - HEADER_SIZE
        decoder = Decoder(expect=magic, text=magic == REQ)
        assert [plain(e) for e in decoder.feed(wire)] == [received(magic, packet)]
        assert decoder.buffered == 0

    @FAST
    @given(data=st.data(), magic=st.sampled_from([REQ, RES]))
    def test_types_of_the_direction_round_trip_exactly(
        self, data: st.DataObject, magic: bytes
    ) -> None:
        packet = data.draw(packets(types=native(magic)))
        wire = encode(packet.type, *packet.args, data=in_memory(packet.data), magic=magic)
        assert [plain(e) for e in Decoder(expect=magic).feed(wire)] == [packet]

    @FAST
    @given(packet=packets(types=DATA_TYPES), magic=st.sampled_from([REQ, RES]))
    def test_encode_head_agrees_with_encode(self, packet: Packet, magic: bytes) -> None:
        head = encode_head(packet.type, packet.args, len(packet.data), magic=magic)
        assert head + in_memory(packet.data) == encode(
            packet.type, *packet.args, data=in_memory(packet.data), magic=magic
        )

    @FAST
    @given(packet=packets(types=SPLIT_TO_THE_END & REQUEST_TYPES))
    def test_last_argument_of_no_data_types_may_hold_nuls(self, packet: Packet) -> None:
        packet = packet._replace(args=(*packet.args[:-1], packet.args[-1] + b"\0x\0"))
        wire = encode(packet.type, *packet.args, magic=REQ)
        assert Decoder().feed(wire) == [packet]


class TestChunking:
    @FAST
    @given(side=sides(), data=st.data())
    def test_split_at_every_byte_boundary(
        self, side: tuple[bytes, bool], data: st.DataObject
    ) -> None:
        magic, text = side
        wire, expected = data.draw(streams(magic, text))
        assert keys(decoder_for(magic, text).feed(wire)) == keys(expected)
        for i in range(len(wire) + 1):
            events = feed_chunks(decoder_for(magic, text), [wire[:i], wire[i:]])
            assert keys(events) == keys(expected), f"split at {i}"

    @FAST
    @given(side=sides(), data=st.data())
    def test_one_byte_at_a_time(self, side: tuple[bytes, bool], data: st.DataObject) -> None:
        magic, text = side
        wire, expected = data.draw(streams(magic, text))
        decoder = decoder_for(magic, text)
        events = feed_chunks(decoder, [wire[i : i + 1] for i in range(len(wire))])
        assert keys(events) == keys(expected)
        assert decoder.buffered == 0

    @SLOW
    @given(side=sides(), data=st.data())
    def test_random_chunkings_with_large_bodies(
        self, side: tuple[bytes, bool], data: st.DataObject
    ) -> None:
        magic, text = side
        wire, expected = data.draw(streams(magic, text, large=True, max_messages=5))
        cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=40))
        decoder = decoder_for(magic, text)
        events = feed_chunks(decoder, split_at(wire, cuts))
        assert keys(events) == keys(expected)
        assert decoder.buffered == 0


class TestGarbage:
    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        wire=garbage(),
        side=sides(),
        max_size=st.integers(0, 100_000),
        data=st.data(),
    )
    def test_garbage_parses_or_yields_bad_packet(
        self, wire: bytes, side: tuple[bytes, bool], max_size: int, data: st.DataObject
    ) -> None:
        magic, text = side
        whole_decoder = decoder_for(magic, text, max_size)
        whole = [plain(e) for e in whole_decoder.feed(wire)]
        check_event_shape(whole)

        cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=20))
        chunked_decoder = decoder_for(magic, text, max_size)
        chunked = feed_chunks(chunked_decoder, split_at(wire, cuts))
        assert chunked == whole
        assert chunked_decoder.buffered == whole_decoder.buffered

        # Reads of one fixed size, as a socket with a fixed buffer delivers them.
        step = data.draw(st.integers(16, 5000))
        steady = feed_chunks(
            decoder_for(magic, text, max_size),
            [wire[i : i + step] for i in range(0, len(wire), step)],
        )
        assert steady == whole

        if whole and isinstance(whole[-1], BadPacket) and whole[-1].fatal:
            assert whole_decoder.feed(wire) == []
            assert whole_decoder.buffered == 0

        # Whatever was decoded re-encodes to something that decodes the same.
        for event in whole:
            if isinstance(event, Packet):
                again = encode(event.type, *event.args, data=in_memory(event.data), magic=magic)
                assert [plain(e) for e in decoder_for(magic, text).feed(again)] == [event]

    @FAST
    @given(wire=st.binary(max_size=300), side=sides())
    def test_uniform_random_bytes(self, wire: bytes, side: tuple[bytes, bool]) -> None:
        magic, text = side
        decoder = decoder_for(magic, text, 1024)
        events = decoder.feed(wire)
        check_event_shape(events)
        assert decoder.buffered <= len(wire)
