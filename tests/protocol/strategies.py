"""Hypothesis strategies for Gearman packets, streams and near-valid garbage.

A *message* is the bytes of one thing on the wire together with the event the decoder
must turn it into. Streams are lists of messages, so a test knows exactly which events
to expect and at which byte offset each one completes.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from geartrain.protocol.codec import (
    AdminLine,
    BadPacket,
    Event,
    Packet,
    as_bytes,
    encode,
    in_memory,
)
from geartrain.protocol.constants import (
    ARGUMENTS,
    HANDLE_ONLY_TYPES,
    MAX_ADMIN_LINE,
    REQ,
    REQUEST_TYPES,
    RES,
    RESPONSE_TYPES,
    RESULT_TYPES,
    ErrorCode,
)

TYPES = sorted(ARGUMENTS)
#: Bodies above the codec's accumulate threshold take its other path; keep some.
LARGE_MIN = 4097


@dataclass(frozen=True)
class Message:
    wire: bytes
    event: Event


def other(magic: bytes) -> bytes:
    return RES if magic == REQ else REQ


def header(magic: bytes, ptype: int, size: int) -> bytes:
    return magic + ptype.to_bytes(4, "big") + size.to_bytes(4, "big")


def native(magic: bytes) -> frozenset[int]:
    """The types that travel in the direction of this magic, the ones a decoder splits."""
    return REQUEST_TYPES if magic == REQ else RESPONSE_TYPES


def received(magic: bytes, packet: Packet) -> Packet:
    """What the receiver of ``magic`` packets gets for ``packet``.

    Types that never travel in that direction come out unsplit, with no arguments:
    the receiver answers them as unexpected whatever their body (PROTOCOL.md §2.2).
    """
    return packet if packet.type in native(magic) else Packet(packet.type, ())


def needs_nuls(ptype: int) -> int:
    count, has_data = ARGUMENTS[ptype]
    return count if has_data else max(count - 1, 0)


no_nul = st.binary(max_size=12).map(lambda b: b.replace(b"\0", b""))


@st.composite
def packets(
    draw: st.DrawFn,
    data: st.SearchStrategy[bytes] | None = None,
    types: frozenset[int] | None = None,
) -> Packet:
    """Any packet the codec can encode unambiguously: arguments without NUL, any data."""
    ptype = draw(st.sampled_from(TYPES if types is None else sorted(types)))
    count, has_data = ARGUMENTS[ptype]
    args = tuple(draw(no_nul) for _ in range(count))
    payload = draw(data if data is not None else st.binary(max_size=40)) if has_data else b""
    return Packet(ptype, args, payload)


def pattern(size: int) -> bytes:
    """Cheap, non-repeating-looking bytes of any size (with NULs and LFs in them)."""
    block = bytes(range(256))
    return (block * (size // 256 + 1))[:size]


large_data = st.integers(LARGE_MIN, 70_000).map(pattern)


@st.composite
def packet_messages(draw: st.DrawFn, magic: bytes, large: bool = False) -> Message:
    packet = draw(packets(large_data if large else None))
    wire = encode(packet.type, *packet.args, data=in_memory(packet.data), magic=magic)
    return Message(wire, received(magic, packet))


@st.composite
def foreign_messages(draw: st.DrawFn, magic: bytes) -> Message:
    """A type that never travels this way, with any body, NULs or not."""
    ptype = draw(st.sampled_from(sorted(set(TYPES) - native(magic))))
    body = draw(st.binary(max_size=30))
    return Message(header(magic, ptype, len(body)) + body, Packet(ptype, ()))


@st.composite
def wrong_magic_messages(draw: st.DrawFn, magic: bytes) -> Message:
    packet = draw(packets())
    wire = encode(packet.type, *packet.args, data=in_memory(packet.data), magic=other(magic))
    text = b"Request magic expected" if magic == REQ else b"Response magic expected"
    # A work result names the job it settles even when it cannot be read.
    handle = packet.args[0] if packet.type in RESULT_TYPES else b""
    return Message(wire, BadPacket(ErrorCode.INVALID_MAGIC, text, False, packet.type, handle))


@st.composite
def short_messages(draw: st.DrawFn, magic: bytes) -> Message:
    """A body with fewer NULs than its type needs: reported, skipped, never desynced."""
    # A handle-only work packet is complete without its NUL (tested on its own).
    shortable = [t for t in sorted(native(magic)) if needs_nuls(t) and t not in HANDLE_ONLY_TYPES]
    ptype = draw(st.sampled_from(shortable))
    nuls = draw(st.integers(0, needs_nuls(ptype) - 1))
    parts = [draw(no_nul) for _ in range(nuls + 1)]
    body = b"\0".join(parts)
    return Message(header(magic, ptype, len(body)) + body, _short_event(ptype))


def _short_event(ptype: int) -> BadPacket:
    # The text is free-form; tests compare BadPackets by code, flag and type.
    return BadPacket(ErrorCode.INVALID_PACKET, b"", False, ptype)


line_text = st.binary(max_size=30).filter(
    lambda b: b"\n" not in b and not b.startswith(b"\0") and not b.endswith(b"\r")
)


@st.composite
def admin_messages(draw: st.DrawFn) -> Message:
    line = draw(line_text)
    ending = draw(st.sampled_from([b"\n", b"\r\n"]))
    return Message(line + ending, AdminLine(line))


def messages(magic: bytes, text: bool, large: bool = False) -> st.SearchStrategy[Message]:
    options = [
        packet_messages(magic),
        wrong_magic_messages(magic),
        short_messages(magic),
        foreign_messages(magic),
    ]
    if text:
        options.append(admin_messages())
    if large:
        options.append(packet_messages(magic, large=True))
    return st.one_of(options)


def comparable(event: Event) -> object:
    """A key that equates events the protocol considers the same.

    Data is compared as bytes (it may be a memoryview) and BadPacket texts, which
    are for humans, are left out.
    """
    if isinstance(event, BadPacket):
        return ("bad", event.code, event.fatal, event.type)
    if isinstance(event, Packet):
        return (event.type, event.args, as_bytes(event.data))
    return event


@st.composite
def sides(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(expected magic, whether text lines are allowed): a server or a client decoder."""
    return draw(st.sampled_from([(REQ, True), (RES, False), (REQ, False)]))


@st.composite
def garbage(draw: st.DrawFn) -> bytes:
    """Bytes that are often almost valid: pieces of packets, headers and lines."""
    piece = st.one_of(
        st.binary(max_size=40),
        packet_messages(REQ).map(lambda m: m.wire),
        packet_messages(RES).map(lambda m: m.wire),
        st.builds(
            header,
            st.sampled_from([REQ, RES, b"\0REX", b"\0\0\0\0"]),
            st.integers(0, 50) | st.integers(0, 2**32 - 1),
            st.integers(0, 64) | st.integers(0, 2**32 - 1),
        ),
        admin_messages().map(lambda m: m.wire),
        # Text around the admin line limit, with and without its newline.
        st.integers(MAX_ADMIN_LINE - 2, MAX_ADMIN_LINE + 2000).map(lambda n: b"x" * n),
        st.just(b"\0"),
        st.just(b"\n"),
    )
    wire = b"".join(draw(st.lists(piece, max_size=12)))
    # Sometimes mangle a byte so that sizes and magics go subtly wrong.
    if wire and draw(st.booleans()):
        i = draw(st.integers(0, len(wire) - 1))
        wire = wire[:i] + bytes([draw(st.integers(0, 255))]) + wire[i + 1 :]
    return wire


@st.composite
def fatal_trailers(draw: st.DrawFn, magic: bytes) -> tuple[bytes, BadPacket]:
    """Something that cannot be framed, then junk the decoder must ignore."""
    kind = draw(st.sampled_from(["magic", "type0", "type43"]))
    if kind == "magic":
        wire, event = header(b"\0BAD", 1, 0), BadPacket(ErrorCode.INVALID_MAGIC, b"", True)
    else:
        ptype = 0 if kind == "type0" else draw(st.integers(43, 2**32 - 1))
        wire, event = header(magic, ptype, 0), BadPacket(ErrorCode.INVALID_COMMAND, b"", True)
    return wire + draw(st.binary(max_size=30)), event


@st.composite
def streams(
    draw: st.DrawFn, magic: bytes, text: bool, large: bool = False, max_messages: int = 8
) -> tuple[bytes, list[Event]]:
    """A stream of messages, sometimes ending in a fatal error, with its events."""
    found = draw(st.lists(messages(magic, text, large), max_size=max_messages))
    wire = b"".join(m.wire for m in found)
    events = [m.event for m in found]
    if draw(st.booleans()):
        trailer, fatal = draw(fatal_trailers(magic))
        wire += trailer
        events.append(fatal)
    return wire, events
