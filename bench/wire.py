"""Just enough of the Gearman binary protocol to generate load.

The load generator deliberately does not use ``geartrain.protocol``: it must
measure gearmand on a machine where geartrain does not even import, and its hot
loops need less than a full decoder. Requests are encoded once, before the
timed region; replies are framed by their 12-byte header and, for background
submissions, merely counted (see :class:`ReplyCounter`).

Packet numbers and layouts are those of gearmand's PROTOCOL file.
"""

from __future__ import annotations

import socket
import struct

REQ = b"\0REQ"
RES = b"\0RES"

CAN_DO = 1
PRE_SLEEP = 4
NOOP = 6
SUBMIT_JOB = 7
JOB_CREATED = 8
GRAB_JOB = 9
NO_JOB = 10
JOB_ASSIGN = 11
WORK_COMPLETE = 13
WORK_FAIL = 14
GET_STATUS = 15
SUBMIT_JOB_BG = 18
ERROR = 19
STATUS_RES = 20
WORK_EXCEPTION = 25
GRAB_JOB_UNIQ = 30
JOB_ASSIGN_UNIQ = 31
GRAB_JOB_ALL = 39
JOB_ASSIGN_ALL = 40

#: grab flavour -> GRAB packet. libgearman workers send GRAB_JOB_ALL.
GRABS = {"all": GRAB_JOB_ALL, "uniq": GRAB_JOB_UNIQ, "plain": GRAB_JOB}
#: JOB_ASSIGN flavour -> NUL-terminated arguments before the workload. gearmand
#: answers GRAB_JOB_ALL with JOB_ASSIGN_UNIQ unless the job has a reducer.
ASSIGN_ARGS = {JOB_ASSIGN: 2, JOB_ASSIGN_UNIQ: 3, JOB_ASSIGN_ALL: 4}

_HEADER = struct.Struct(">4sII")
_unpack_header = _HEADER.unpack_from

#: Bodies at least this big are received straight into their own buffer with
#: ``recv_into`` instead of being joined from chunks (one copy, not several).
BIG_BODY = 16 * 1024
#: Chunk size for ordinary reads. Small enough that CPython's over-allocation
#: of the result is cheap, large enough for a batch of replies.
READ_CHUNK = 65536


class ServerError(Exception):
    """The server answered with ERROR, WORK_FAIL or something unexpected."""


def request(ptype: int, *args: bytes, data: bytes = b"") -> bytes:
    """Encode one request packet: NUL-separated ``args`` then ``data``."""
    body = b"\0".join((*args, data)) if args else data
    return _HEADER.pack(REQ, ptype, len(body)) + body


def request_header(ptype: int, *args: bytes, data_size: int) -> bytes:
    """Header and arguments of a request whose large workload is sent separately."""
    head = b"".join(a + b"\0" for a in args)
    return _HEADER.pack(REQ, ptype, len(head) + data_size) + head


def payload(size: int) -> bytes:
    """A deterministic, non-repeating-looking payload of ``size`` bytes."""
    pattern = bytes(97 + (i * 7 + i // 13) % 26 for i in range(251))
    reps = size // len(pattern) + 1
    return (pattern * reps)[:size]


def unique(owner: int, idx: int, j: int) -> bytes:
    """A UUID-shaped, 36-character unique id, distinct per (run, connection, job)."""
    return b"%08x-%04x-4000-8000-%012x" % (owner & 0xFFFFFFFF, idx & 0xFFFF, j & 0xFFFFFFFFFFFF)


def connect(port: int, host: str = "127.0.0.1") -> socket.socket:
    """A blocking TCP connection with Nagle off (what libgearman does too)."""
    sock = socket.create_connection((host, port), timeout=10)
    sock.settimeout(None)  # truly blocking: no poll() before every recv
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send_parts(sock: socket.socket, parts: list[bytes | memoryview]) -> None:
    """Send several buffers with as few system calls as possible, without joining them."""
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


class Reader:
    """Frames reply packets on a blocking socket.

    ``next()`` returns ``(type, body)``. Small bodies are ``bytes`` slices; a body
    of ``BIG_BODY`` bytes or more is received into a reusable ``bytearray`` (valid
    until the next big body) and returned as a ``memoryview`` of it.
    """

    __slots__ = ("_big", "buf", "pos", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.pos = 0
        self._big = bytearray()

    def next(self) -> tuple[int, bytes | memoryview]:
        buf, pos = self.buf, self.pos
        while True:
            if len(buf) - pos >= 12:
                magic, ptype, size = _unpack_header(buf, pos)
                if magic != RES:
                    raise ServerError(f"bad magic {magic!r}")
                end = pos + 12 + size
                if end <= len(buf):
                    self.buf, self.pos = buf, end
                    return ptype, buf[pos + 12 : end]
                if size >= BIG_BODY:
                    self.buf, self.pos = b"", 0
                    return ptype, self._read_big(buf[pos + 12 :], size)
            chunk = self.sock.recv(READ_CHUNK)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf = buf[pos:] + chunk if pos < len(buf) else chunk
            pos = 0

    def _read_big(self, have: bytes, size: int) -> memoryview:
        if len(self._big) < size:
            self._big = bytearray(size)
        view = memoryview(self._big)[:size]
        n = len(have)
        view[:n] = have
        recv_into = self.sock.recv_into
        while n < size:
            got = recv_into(view[n:])
            if not got:
                raise ConnectionError("server closed the connection")
            n += got
        return view


def split_assign(body: bytes | memoryview, nargs: int) -> tuple[bytes, bytes | memoryview]:
    """(handle, workload) of a JOB_ASSIGN* body with ``nargs`` NUL-terminated arguments."""
    if isinstance(body, memoryview):
        head = bytes(body[:512])  # handle, function, unique and reducer are short
        cut = -1
        for _ in range(nargs):
            cut = head.index(0, cut + 1)
        return head[: head.index(0)], body[cut + 1 :]
    cut = -1
    for _ in range(nargs):
        cut = body.index(0, cut + 1)
    return body[: body.index(0)], body[cut + 1 :]


class ReplyCounter:
    """Counts JOB_CREATED replies in a byte stream without framing it.

    A JOB_CREATED header is the 8 bytes ``\\0RES\\0\\0\\0\\x08``; a job handle never
    contains NUL, so this pattern can only occur at a packet boundary. The last 7
    bytes of each chunk are kept so a header split between two reads is still
    found exactly once. ERROR headers are counted the same way, so a refusing
    server is noticed rather than waited for.
    """

    CREATED = RES + b"\0\0\0" + bytes([JOB_CREATED])
    FAILED = RES + b"\0\0\0" + bytes([ERROR])

    __slots__ = ("created", "errors", "tail")

    def __init__(self) -> None:
        self.created = 0
        self.errors = 0
        self.tail = b""

    def feed(self, chunk: bytes) -> None:
        data = self.tail + chunk
        self.created += data.count(self.CREATED)
        if b"\x13" in data:
            self.errors += data.count(self.FAILED)
        self.tail = data[-7:]
