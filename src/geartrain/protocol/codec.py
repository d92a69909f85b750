"""Bytes to packets and back, without any I/O.

Theory of operation
-------------------
A Gearman stream mixes two kinds of message. A message whose first byte is NUL is
a binary packet: a 12-byte header (magic, type, body size, big-endian) and a body
of exactly that size. Any other first byte starts an admin text line that ends at
``\\n``. :class:`Decoder` takes whatever bytes the socket delivered and returns the
complete messages in them, keeping the unfinished tail for the next call.

Three rules keep this fast and safe:

* Parsing is always bounded by the header's size. A body that lacks the NULs its
  type needs is reported as :class:`BadPacket` and skipped; the stream never
  desynchronises (gearmand scans past the body and does).
* Small messages are sliced straight out of the bytes the socket gave us. Only an
  incomplete tail is kept, and once a header announces a body larger than
  ``_ACCUMULATE_AT`` the body is collected in one preallocated buffer, so a
  256 MiB payload is copied once on the way in, however it is chunked.
* Large trailing data is handed out as a ``memoryview`` of that buffer, so it can
  be forwarded to a worker without another copy.

A server goes further: given a ``spool`` (a factory of :class:`~.spool.SpoolWriter`),
its decoder writes the trailing data of every body of at least ``spool_at`` bytes to
an unlinked file as it arrives, keeping only the few arguments before it, and hands
the packet out with a :class:`~.spool.Spooled` payload. A 4 GiB job then costs the
server a file, not 4 GiB of memory. A body whose type has no trailing data cannot be
that large legitimately; it is read past and refused, never held.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable
from typing import Final, NamedTuple

from .constants import (
    ARGUMENTS,
    DEFAULT_MAX_PACKET_SIZE,
    HANDLE_ONLY_TYPES,
    HEADER_SIZE,
    MAX_ADMIN_LINE,
    MAX_HANDLE_SIZE,
    MAX_PACKET_TYPE,
    REQ,
    REQUEST_TYPES,
    RES,
    RESPONSE_TYPES,
    RESULT_TYPES,
    ErrorCode,
)
from .spool import Spooled, SpoolWriter

#: Trailing data held in memory.
Data = bytes | memoryview
#: Trailing data of a received packet: in memory, or (large, on a server) in a spool file.
Payload = bytes | memoryview | Spooled


def in_memory(data: Payload) -> Data:
    """``data``, read back into memory if it was spooled."""
    return data.to_bytes() if isinstance(data, Spooled) else data


def as_bytes(data: Payload) -> bytes:
    """``data`` whole, as bytes (read back from its file if it was spooled)."""
    if isinstance(data, Spooled):
        return data.to_bytes()
    return data if type(data) is bytes else bytes(data)


_HEADER: Final = struct.Struct(">4sII")
_unpack_header = _HEADER.unpack_from
_pack_header = _HEADER.pack

#: Incomplete bodies above this size are collected in a preallocated buffer
#: instead of re-joining the tail on every read.
_ACCUMULATE_AT: Final = 4096
#: Bodies at least this large are collected in an anonymous memory mapping.
_MAP_AT: Final = 1 << 20
#: Trailing data above this size is returned as a memoryview (no copy).
_VIEW_AT: Final = 65536
#: Default size from which a decoder with a spool writes bodies to a file.
DEFAULT_SPOOL_AT: Final = 1 << 20
#: The arguments in front of spooled data (function, unique, handle: each at most a few
#: hundred bytes in any client) may take this much before the packet is refused.
_MAX_SPOOLED_ARGS: Final = 65536


class Packet(NamedTuple):
    """One binary packet: its type, its NUL-separated arguments and trailing data."""

    type: int
    args: tuple[bytes, ...]
    data: Payload = b""


class AdminLine(NamedTuple):
    """One admin text line, without its ``\\r\\n`` or ``\\n``."""

    line: bytes


class BadPacket(NamedTuple):
    """Input the peer got wrong.

    ``fatal`` means the stream can no longer be framed and the connection must be
    closed after the ERROR is sent; otherwise the offending message was skipped.
    """

    code: bytes
    text: bytes
    fatal: bool
    type: int = 0
    #: For a work result (WORK_COMPLETE, WORK_FAIL, WORK_EXCEPTION) that could not be
    #: read, the job handle it starts with, so the receiver can settle that job: a
    #: worker that believes it reported a result must not leave its job assigned forever.
    handle: bytes = b""


Event = Packet | AdminLine | BadPacket


Buffer = bytes | bytearray | mmap.mmap


def _slice(buf: Buffer, start: int, end: int) -> Data:
    if end - start >= _VIEW_AT and not isinstance(buf, bytes):
        return memoryview(buf)[start:end]
    return bytes(buf[start:end])


class Decoder:
    """Incremental parser for one direction of a Gearman connection.

    Args:
        expect: the magic this side should receive: ``REQ`` on a server, ``RES`` on a
            client or worker.
        max_size: the largest body accepted; bigger ones end the stream.
        text: whether admin text lines may appear (only towards a server).
        spool: makes the writer for a large body's trailing data; None keeps every
            body in memory.
        spool_at: the body size from which ``spool`` is used.
    """

    __slots__ = (
        "_acc",
        "_acc_fill",
        "_acc_head",
        "_dead",
        "_layout",
        "_rest",
        "_spooling",
        "expect",
        "max_size",
        "spool",
        "spool_at",
        "text",
    )

    def __init__(
        self,
        expect: bytes = REQ,
        max_size: int = DEFAULT_MAX_PACKET_SIZE,
        text: bool = True,
        spool: Callable[[], SpoolWriter] | None = None,
        spool_at: int = DEFAULT_SPOOL_AT,
    ) -> None:
        self.expect = expect
        self.max_size = max_size
        self.text = text
        self.spool = spool
        self.spool_at = spool_at
        self._spooling: _Spooling | None = None
        self._rest = b""
        self._acc: mmap.mmap | bytearray | None = None
        self._acc_fill = 0
        self._acc_head: tuple[bytes, int] = (b"", 0)
        self._dead = False
        # Types that never travel in this direction are not split into arguments:
        # the receiver answers them as unexpected, whatever their body.
        self._layout = _LAYOUTS[REQ if expect == REQ else RES]

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a message."""
        if self._acc is not None:
            # The header of the body being collected was consumed from the read
            # but is still part of the unfinished message.
            return HEADER_SIZE + self._acc_fill
        if self._spooling is not None:
            return HEADER_SIZE + self._spooling.received
        return len(self._rest)

    @property
    def collecting(self) -> int:
        """Bytes of a large body collected in memory so far (0 when none is)."""
        return self._acc_fill if self._acc is not None else 0

    @property
    def spooling(self) -> bool:
        """Whether a body is being written to a spool file (reads may go to :meth:`feed`
        as memoryviews then: nothing of them is kept)."""
        return self._spooling is not None

    def feed(self, data: bytes | memoryview) -> list[Event]:
        """Add received bytes; return every message they complete, in order.

        After a fatal :class:`BadPacket` the decoder ignores all further input.
        """
        if self._dead:
            return []
        events: list[Event] = []
        if self._spooling is not None:
            data = self._spooling.feed(data, events)
            if self._spooling.remaining == 0:
                self._spooling = None
            if self._spooling is not None or not data:
                return events
        received = data if isinstance(data, bytes) else bytes(data)
        if self._acc is not None:
            received = self._fill_accumulator(received, events)
            if self._acc is not None or not received:
                return events
        buf = self._rest + received if self._rest else received
        self._rest = b""
        pos = self._parse(buf, events)
        if pos < len(buf) and not self._dead:
            self._rest = buf[pos:]
        return events

    # -- internals ---------------------------------------------------------------

    def _parse(self, buf: bytes, events: list[Event]) -> int:  # noqa: C901 - one hot loop
        pos = 0
        end = len(buf)
        expect = self.expect
        # Bodies from this size on are spooled (never, without a spool): one compare a packet.
        spool_at = self.spool_at if self.spool is not None else 1 << 33
        while pos < end:
            if buf[pos] != 0:
                if not self.text:
                    return self._die(events, ErrorCode.INVALID_MAGIC, b"Binary packet expected")
                # At most MAX_ADMIN_LINE bytes may precede the LF, whether or not the
                # LF arrived in the same read; searching only that far also keeps a
                # long read from being scanned for a line that is already too long.
                newline = buf.find(b"\n", pos, pos + MAX_ADMIN_LINE + 1)
                if newline < 0:
                    if end - pos > MAX_ADMIN_LINE:
                        return self._die(
                            events, ErrorCode.ARGUMENT_TOO_LARGE, b"Admin line too long"
                        )
                    return pos
                stop = newline - 1 if newline > pos and buf[newline - 1] == 13 else newline
                events.append(AdminLine(buf[pos:stop]))
                pos = newline + 1
                continue
            if end - pos < HEADER_SIZE:
                return pos
            magic, ptype, size = _unpack_header(buf, pos)
            if magic != expect and magic not in (REQ, RES):
                return self._die(events, ErrorCode.INVALID_MAGIC, b"Invalid magic")
            if ptype == 0 or ptype > MAX_PACKET_TYPE:
                return self._die(
                    events, ErrorCode.INVALID_COMMAND, b"Unknown packet type " + str(ptype).encode()
                )
            if size > self.max_size:
                return self._die(
                    events,
                    ErrorCode.ARGUMENT_TOO_LARGE,
                    b"Packet body of %d bytes exceeds the limit of %d" % (size, self.max_size),
                )
            body_start = pos + HEADER_SIZE
            body_end = body_start + size
            if size >= spool_at:
                # Spooled even when the whole body is here: the job may wait in a queue.
                if not self._spool_body(magic, ptype, size, buf, body_start, events):
                    return end
                pos = body_end
                continue
            if body_end > end:
                if size > _ACCUMULATE_AT:
                    self._start_accumulator(magic, ptype, size, buf, body_start, events)
                    return end
                return pos
            pos = body_end
            if magic != expect:
                events.append(_wrong_magic(expect, ptype, buf, body_start, body_end))
                continue
            events.append(_make_packet(self._layout, ptype, buf, body_start, body_end))
        return pos

    def _start_accumulator(
        self, magic: bytes, ptype: int, size: int, buf: bytes, start: int, events: list[Event]
    ) -> None:
        # Above _MAP_AT, an anonymous mapping rather than a bytearray: its pages are
        # committed only as the body arrives, so a header that announces a huge body
        # and sends nothing costs no memory.
        self._acc = mmap.mmap(-1, size) if size >= _MAP_AT else bytearray(size)
        self._acc_head = (magic, ptype)
        chunk = memoryview(buf)[start:]
        self._acc[: len(chunk)] = chunk
        self._acc_fill = len(chunk)

    def _spool_body(
        self, magic: bytes, ptype: int, size: int, buf: bytes, start: int, events: list[Event]
    ) -> bool:
        """Start spooling a body with what ``buf`` holds of it; True if that was all of it."""
        assert self.spool is not None
        wanted, has_data, count = self._layout[ptype]
        spooling = _Spooling(ptype, size, wanted, count, self.spool)
        if magic != self.expect:
            spooling.refuse(_wrong_magic(self.expect, ptype, b"", 0, 0))
        elif not has_data:
            spooling.refuse(_too_large_without_data(ptype, count))
        spooling.feed(memoryview(buf)[start : start + size], events)
        if spooling.remaining:
            self._spooling = spooling
            return False
        return True

    def body_buffer(self) -> memoryview | None:
        """Writable space for the rest of a large body being collected, or None.

        A reader that receives straight into it (``socket.recv_into``) and then calls
        :meth:`body_filled` saves copying the body out of its own read buffer.
        """
        if self._acc is None or self._dead:
            return None
        return memoryview(self._acc)[self._acc_fill :]

    def body_filled(self, count: int) -> list[Event]:
        """``count`` bytes were written at the start of :meth:`body_buffer`."""
        events: list[Event] = []
        self._acc_fill += count
        acc = self._acc
        if acc is not None and self._acc_fill >= len(acc):
            self._finish_accumulator(acc, events)
        return events

    def _fill_accumulator(self, data: bytes, events: list[Event]) -> bytes:
        acc = self._acc
        assert acc is not None
        need = len(acc) - self._acc_fill
        take = min(need, len(data))
        acc[self._acc_fill : self._acc_fill + take] = memoryview(data)[:take]
        self._acc_fill += take
        if self._acc_fill < len(acc):
            return b""
        self._finish_accumulator(acc, events)
        return data[take:] if take < len(data) else b""

    def _finish_accumulator(self, acc: mmap.mmap | bytearray, events: list[Event]) -> None:
        magic, ptype = self._acc_head
        self._acc = None
        self._acc_fill = 0
        if magic != self.expect:
            events.append(_wrong_magic(self.expect, ptype, acc, 0, len(acc)))
        else:
            events.append(_make_packet(self._layout, ptype, acc, 0, len(acc)))

    def _die(self, events: list[Event], code: bytes, text: bytes) -> int:
        self._dead = True
        self._rest = b""
        self._acc = None
        if self._spooling is not None:
            self._spooling.discard()
            self._spooling = None
        events.append(BadPacket(code, text, fatal=True))
        return 0


class _Spooling:
    """A large body on its way into a spool file: its arguments, then its data.

    The arguments in front of the data are collected in memory (they are small); the
    data goes to the writer as it arrives. A body that is refused (wrong magic, a type
    without trailing data, arguments too long, a spool that fails) is still read to
    its end, so the stream stays framed, but nothing more of it is kept.
    """

    __slots__ = (
        "args",
        "count",
        "head",
        "need",
        "received",
        "refusal",
        "remaining",
        "spool",
        "type",
        "writer",
    )

    def __init__(
        self, ptype: int, size: int, wanted: int, count: int, spool: Callable[[], SpoolWriter]
    ) -> None:
        self.type = ptype
        self.remaining = size
        self.received = 0
        self.need = wanted
        self.count = count
        self.args: list[bytes] = []
        self.head = bytearray()
        self.spool = spool
        self.writer: SpoolWriter | None = None
        self.refusal: Event | None = None

    def feed(self, data: bytes | memoryview, events: list[Event]) -> bytes | memoryview:
        """Take this body's part of ``data``; return what follows it."""
        view = memoryview(data)
        take = min(self.remaining, len(view))
        chunk = view[:take]
        self.remaining -= take
        self.received += take
        if self.need:
            chunk = self._collect_args(chunk)
        if chunk and self.refusal is None:
            self._write(chunk)
        if self.remaining == 0:
            events.append(self._result())
        return view[take:] if take < len(view) else b""

    def refuse(self, refusal: Event) -> None:
        if self.refusal is None:
            self.refusal = refusal
        self.discard()

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None

    def _collect_args(self, chunk: memoryview) -> memoryview:
        while self.need and chunk:
            window = bytes(chunk[:_MAX_SPOOLED_ARGS])
            nul = window.find(b"\0")
            if nul < 0:
                self.head += window
                chunk = chunk[len(window) :]
                if len(self.head) > _MAX_SPOOLED_ARGS:
                    self.need = 0
                    self.refuse(_args_too_large(self.type))
                continue
            self.args.append(bytes(self.head) + window[:nul])
            self.head.clear()
            chunk = chunk[nul + 1 :]
            self.need -= 1
        return chunk

    def _write(self, chunk: memoryview) -> None:
        try:
            if self.writer is None:
                self.writer = self.spool()
            self.writer.write(chunk)
        except OSError as exc:
            text = b"Could not spool a body of packet type %d: %s" % (
                self.type,
                (exc.strerror or str(exc)).encode(),
            )
            self.refuse(BadPacket(ErrorCode.QUEUE_ERROR, text, fatal=False, type=self.type))

    def _result(self) -> Event:
        handle = self.args[0] if self.args and self.type in RESULT_TYPES else b""
        refusal = self.refusal
        if isinstance(refusal, BadPacket) and handle:
            return refusal._replace(handle=handle)
        if refusal is not None:
            return refusal
        if self.need:
            return _missing_nuls(self.type, self.count)
        data: Payload = self.writer.finish() if self.writer is not None else b""
        self.writer = None
        return Packet(self.type, tuple(self.args), data)


def _too_large_without_data(ptype: int, count: int) -> Event:
    # A type foreign to this direction is answered as unexpected, whatever its body.
    if not count:
        return Packet(ptype, ())
    return _args_too_large(ptype)


def _args_too_large(ptype: int) -> BadPacket:
    return BadPacket(
        ErrorCode.ARGUMENT_TOO_LARGE,
        b"Arguments of packet type %d too large" % ptype,
        fatal=False,
        type=ptype,
    )


def _wrong_magic(expect: bytes, ptype: int, buf: Buffer, start: int, end: int) -> BadPacket:
    text = b"Request magic expected" if expect == REQ else b"Response magic expected"
    handle = _result_handle(ptype, buf, start, end)
    return BadPacket(ErrorCode.INVALID_MAGIC, text, fatal=False, type=ptype, handle=handle)


def _result_handle(ptype: int, buf: Buffer, start: int, end: int) -> bytes:
    """The handle a work result's body starts with, or b"" for other types."""
    if ptype not in RESULT_TYPES:
        return b""
    nul = buf.find(b"\0", start, min(end, start + MAX_HANDLE_SIZE + 1))
    return bytes(buf[start : nul if nul >= 0 else min(end, start + MAX_HANDLE_SIZE)])


_tuple_new = tuple.__new__
#: (NULs to split on, has trailing data, argument count) per type. Types foreign to
#: a decoder's direction get (0, False, 0): no split, handed over as Packet(type, ()).
Layout = list[tuple[int, bool, int]]


def _layout(accepted: frozenset[int]) -> Layout:
    table: Layout = [(0, False, 0)] * (MAX_PACKET_TYPE + 1)
    for ptype, (count, has_data) in ARGUMENTS.items():
        if ptype in accepted:
            table[ptype] = (count if has_data else max(count - 1, 0), has_data, count)
    return table


_LAYOUTS = {REQ: _layout(REQUEST_TYPES), RES: _layout(RESPONSE_TYPES)}


def _make_packet(
    layout: Layout, ptype: int, buf: Buffer, start: int, end: int
) -> Packet | BadPacket:
    wanted, has_data, count = layout[ptype]
    if end - start >= _VIEW_AT and has_data:
        return _make_large_packet(wanted, ptype, count, buf, start, end)
    body = buf[start:end]
    if type(body) is not bytes:
        body = bytes(body)
    if not wanted:
        if has_data:
            return _tuple_new(Packet, (ptype, (), body))
        # One unterminated argument (CAN_DO, GET_STATUS, ...) or none at all.
        return _tuple_new(Packet, (ptype, (body,) if count else (), b""))
    parts = body.split(b"\0", wanted)
    if len(parts) <= wanted:
        if body and ptype in HANDLE_ONLY_TYPES:
            return _tuple_new(Packet, (ptype, (body,), b""))
        return _missing_nuls(ptype, count)
    if has_data:
        data = parts.pop()
        return _tuple_new(Packet, (ptype, tuple(parts), data))
    return _tuple_new(Packet, (ptype, tuple(parts), b""))


def _make_large_packet(
    wanted: int, ptype: int, count: int, buf: Buffer, start: int, end: int
) -> Packet | BadPacket:
    # Find the few NUL-terminated arguments at the front without copying the body;
    # the data is then a zero-copy view when it sits in an accumulated buffer.
    args: list[bytes] = []
    for _ in range(wanted):
        nul = buf.find(b"\0", start, end)
        if nul < 0:
            return _missing_nuls(ptype, count)
        args.append(bytes(buf[start:nul]))
        start = nul + 1
    return Packet(ptype, tuple(args), _slice(buf, start, end))


def _missing_nuls(ptype: int, count: int) -> BadPacket:
    return BadPacket(
        ErrorCode.INVALID_PACKET,
        b"Packet type %d needs %d NUL-separated arguments" % (ptype, count),
        fatal=False,
        type=ptype,
    )


# -- encoding ----------------------------------------------------------------------


def encode(ptype: int, *args: bytes, data: Data = b"", magic: bytes = RES) -> bytes:
    """Serialise one packet.

    ``args`` are the packet's NUL-separated arguments in order; ``data`` is the
    trailing data of types that have it. The body layout follows ``ARGUMENTS``.
    """
    count, has_data = ARGUMENTS[ptype]
    if has_data:
        body = b"\0".join(args) + b"\0" + data if count else bytes(data)
    else:
        body = b"\0".join(args)
    return _pack_header(magic, ptype, len(body)) + body


def res_packet(ptype: int, body: bytes) -> bytes:
    """A response packet around a body the caller already laid out (the hot path).

    ``encode`` is the general form; this one skips its table lookup and joins, which
    matters for the few packets a busy server sends per job.
    """
    return _pack_header(RES, ptype, len(body)) + body


def encode_head(ptype: int, args: tuple[bytes, ...], data_size: int, magic: bytes = RES) -> bytes:
    """Header and arguments of a data-carrying packet whose data is written separately.

    Lets a large payload go from one socket to another without being copied into
    a new packet.
    """
    prefix = b"\0".join(args) + b"\0" if args else b""
    return _pack_header(magic, ptype, len(prefix) + data_size) + prefix


def encode_request(ptype: int, *args: bytes, data: Data = b"") -> bytes:
    """Serialise a request packet (what clients and workers send)."""
    return encode(ptype, *args, data=data, magic=REQ)
