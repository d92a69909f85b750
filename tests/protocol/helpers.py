"""Shared helpers for the codec tests: feeding streams and comparing events."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise

from geartrain.protocol.codec import AdminLine, BadPacket, Decoder, Event, Packet, as_bytes
from geartrain.protocol.constants import MAX_PACKET_TYPE


def plain(event: Event) -> Event:
    """The event with memoryview or spooled data turned into bytes, so events compare."""
    if isinstance(event, Packet) and not isinstance(event.data, bytes):
        return event._replace(data=as_bytes(event.data))
    return event


def feed_chunks(decoder: Decoder, chunks: Iterable[bytes]) -> list[Event]:
    """Feed every chunk in order and collect all events, with data as bytes."""
    events: list[Event] = []
    for chunk in chunks:
        events.extend(plain(e) for e in decoder.feed(chunk))
    return events


def split_at(stream: bytes, cuts: Sequence[int]) -> list[bytes]:
    """Cut ``stream`` at the given offsets (any order, duplicates allowed)."""
    points = sorted({min(max(c, 0), len(stream)) for c in cuts})
    bounds = [0, *points, len(stream)]
    return [stream[a:b] for a, b in pairwise(bounds)]


def check_event_shape(events: Sequence[Event]) -> None:
    """Invariants every event list obeys, whatever the input was.

    Only the three event classes appear, a fatal BadPacket is always last, and a
    packet always has a real type and bytes arguments.
    """
    for i, event in enumerate(events):
        assert isinstance(event, Packet | AdminLine | BadPacket), event
        if isinstance(event, BadPacket):
            assert isinstance(event.code, bytes) and event.code
            assert isinstance(event.text, bytes) and event.text
            if event.fatal:
                assert i == len(events) - 1, "events after a fatal BadPacket"
        elif isinstance(event, Packet):
            assert 1 <= event.type <= MAX_PACKET_TYPE
            assert all(isinstance(a, bytes) for a in event.args)
            assert isinstance(event.data, bytes | memoryview)
        else:
            assert isinstance(event.line, bytes)
            assert b"\n" not in event.line
