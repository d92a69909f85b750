"""The Gearman administrative text protocol, client side, without I/O.

Theory of operation
-------------------
Admin commands are text lines; each gets exactly one reply, in order
(PROTOCOL.md §12). Replies come in three shapes:

* LIST - lines ending in ``\\n``, closed by a line holding a single ``.``
  (``status``, ``workers``, ``show jobs`` ...);
* OK - ``OK\\r\\n`` (``maxqueue``, ``create``, ``drop``, ``cancel``);
* VALUE - ``OK <value>\\n`` (``version``, ``verbose``, ``getpid``);

and any command may instead be answered ``ERR <code> <text>\\r\\n`` with ``+``
for spaces in the text. :class:`AdminProtocol` frames replies and keeps each
reply's exact bytes, so a command-line tool can print them unchanged; the
``parse_*`` functions turn them into dataclasses. Binary ECHO_REQ packets may be
interleaved on the same connection, which :meth:`AdminProtocol.ping` uses.
"""

from __future__ import annotations

import enum
import os
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from geartrain.client.servers import Address, parse_address
from geartrain.errors import AdminError, ConnectionLost, ProtocolError
from geartrain.protocol import RES, PacketType
from geartrain.protocol.codec import encode_request
from geartrain.protocol.constants import HEADER_SIZE


class Shape(enum.Enum):
    """How a command's successful reply is framed."""

    LIST = "list"
    OK = "ok"
    VALUE = "value"
    ECHO = "echo"


@dataclass(slots=True)
class AdminReply:
    """One reply: its exact bytes and, once complete, its meaning.

    Attributes:
        command: the command line sent (without line end).
        shape: the expected shape.
        raw: every byte of the reply as received.
        lines: for LIST replies, the lines without their ``\\n`` and without the ``.``.
        value: for VALUE replies, the text after ``OK ``; for ECHO the echoed bytes.
        error: the ``ERR`` answer, if the server refused the command.
        done: True once the whole reply arrived.
    """

    command: bytes
    shape: Shape
    raw: bytes = b""
    lines: list[bytes] = field(default_factory=list)
    value: bytes = b""
    error: AdminError | None = None
    done: bool = False

    def check(self) -> AdminReply:
        """Return self, or raise the server's error."""
        if self.error is not None:
            raise self.error
        return self


def _is_error(line: bytes, shape: Shape) -> bool:
    if not line.startswith(b"ERR "):
        return False
    # A list line could start with "ERR " too (a function of that name); error
    # lines end in \r\n and carry no tab.
    return shape is not Shape.LIST or (line.endswith(b"\r\n") and b"\t" not in line)


def parse_error(line: bytes) -> AdminError:
    """``ERR CODE text+with+pluses`` -> :class:`AdminError`."""
    rest = line[4:].rstrip(b"\r\n").decode(errors="replace")
    code, _, text = rest.partition(" ")
    if not code.replace("_", "").isupper():
        # Some gearmand errors have no code word ("ERR function not found").
        code, text = "ERROR", rest
    return AdminError(code, text.replace("+", " "))


class AdminProtocol:
    """Frames admin replies for one connection."""

    def __init__(self) -> None:
        self._buffer = b""
        self._pending: deque[AdminReply] = deque()
        self._outbox = bytearray()

    def command(self, line: str | bytes, shape: Shape) -> AdminReply:
        """Queue one admin command; return its (pending) reply."""
        data = line.encode() if isinstance(line, str) else line
        if b"\n" in data or data[:1] == b"\0":
            raise ValueError("an admin command is one line of text")
        self._outbox += data + b"\r\n"  # gearadmin always sends \r\n
        reply = AdminReply(data, shape)
        self._pending.append(reply)
        return reply

    def ping(self, token: bytes) -> AdminReply:
        """Queue an ECHO_REQ; the reply's value is the echoed data."""
        self._outbox += encode_request(PacketType.ECHO_REQ, data=token)
        reply = AdminReply(b"", Shape.ECHO)
        self._pending.append(reply)
        return reply

    def data_to_send(self) -> bytes:
        """Bytes queued since the last call."""
        data = bytes(self._outbox)
        self._outbox.clear()
        return data

    def receive_data(self, data: bytes) -> list[AdminReply]:
        """Feed received bytes; return the replies they completed.

        Raises:
            ProtocolError: bytes arrived that answer nothing.
        """
        self._buffer += data
        finished: list[AdminReply] = []
        while self._buffer:
            if not self._pending:
                raise ProtocolError("admin reply without a command")
            reply = self._pending[0]
            if not self._step(reply):
                break
            if reply.done:
                self._pending.popleft()
                finished.append(reply)
        return finished

    def _step(self, reply: AdminReply) -> bool:
        """Consume one line (or packet) for ``reply``; False when more bytes are needed."""
        if reply.shape is Shape.ECHO:
            return self._echo(reply)
        end = self._buffer.find(b"\n")
        if end < 0:
            return False
        line, self._buffer = self._buffer[: end + 1], self._buffer[end + 1 :]
        reply.raw += line
        first = len(reply.raw) == len(line)
        if (
            first
            and line.startswith(b"ERR ")
            and (reply.shape is not Shape.LIST or b"\t" not in line)
        ):
            reply.error, reply.done = parse_error(line), True
        elif reply.shape is Shape.LIST:
            if line == b".\n":
                reply.done = True
            else:
                reply.lines.append(line[:-1])
        else:
            text = line.rstrip(b"\r\n")
            reply.value = text[3:] if text.startswith(b"OK ") else b""
            reply.done = True
        return True

    def _echo(self, reply: AdminReply) -> bool:
        if len(self._buffer) < HEADER_SIZE:
            return False
        magic, ptype, size = struct.unpack_from(">4sII", self._buffer)
        if magic != RES or ptype not in (PacketType.ECHO_RES, PacketType.ERROR):
            raise ProtocolError("expected ECHO_RES")
        if len(self._buffer) < HEADER_SIZE + size:
            return False
        body = self._buffer[HEADER_SIZE : HEADER_SIZE + size]
        reply.raw = self._buffer[: HEADER_SIZE + size]
        self._buffer = self._buffer[HEADER_SIZE + size :]
        if ptype == PacketType.ERROR:
            code, _, text = body.partition(b"\0")
            reply.error = AdminError(code.decode(errors="replace"), text.decode(errors="replace"))
        reply.value = body
        reply.done = True
        return True


# -- typed results -------------------------------------------------------------------


def _text(value: bytes) -> str:
    # Lossless: names that are not UTF-8 survive a round trip through str.
    return value.decode("utf-8", "surrogateescape")


def _int(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class FunctionStatus:
    """One line of ``status``: jobs and workers of a function."""

    function: str
    total: int  #: queued plus running jobs
    running: int
    workers: int  #: registrations (CAN_DO), duplicates counted

    @property
    def queued(self) -> int:
        """Jobs waiting for a worker."""
        return self.total - self.running


@dataclass(frozen=True, slots=True)
class PriorityStatus:
    """One line of ``prioritystatus``: queued (not running) jobs per priority."""

    function: str
    high: int
    normal: int
    low: int
    workers: int


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One line of ``workers``: a connection and the functions it registered."""

    fd: int
    ip: str
    client_id: str
    functions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class JobInfo:
    """One line of ``show jobs``."""

    handle: str
    retries: int
    ignore: bool  #: abandoned or cancelled, waiting to be discarded
    queued: bool  #: handed to the persistent queue


def parse_status(lines: list[bytes]) -> list[FunctionStatus]:
    """Parse ``status`` lines (``name\\tTOTAL\\tRUNNING\\tWORKERS``)."""
    result = []
    for line in lines:
        name, *numbers = line.rsplit(b"\t", 3)
        total, running, workers = (_int(n) for n in (numbers + [b"0"] * 3)[:3])
        result.append(FunctionStatus(_text(name), total, running, workers))
    return result


def parse_priority_status(lines: list[bytes]) -> list[PriorityStatus]:
    """Parse ``prioritystatus`` lines (``name\\tHIGH\\tNORMAL\\tLOW\\tWORKERS``)."""
    result = []
    for line in lines:
        name, *numbers = line.rsplit(b"\t", 4)
        high, normal, low, workers = (_int(n) for n in (numbers + [b"0"] * 4)[:4])
        result.append(PriorityStatus(_text(name), high, normal, low, workers))
    return result


def parse_workers(lines: list[bytes]) -> list[WorkerInfo]:
    """Parse ``workers`` lines (``FD IP CLIENT-ID : fn fn ...``).

    The client id may contain spaces, so the line is split at the last `` :``.
    """
    result = []
    for line in lines:
        head, _, tail = line.rpartition(b" :")
        if not _:
            head, tail = line, b""
        fd, _, rest = head.partition(b" ")
        ip, _, client_id = rest.partition(b" ")
        functions = tuple(_text(f) for f in tail.split(b" ") if f)
        result.append(WorkerInfo(_int(fd), _text(ip), _text(client_id), functions))
    return result


def parse_jobs(lines: list[bytes]) -> list[JobInfo]:
    """Parse ``show jobs`` lines (``HANDLE\\tRETRIES\\tIGNORE\\tQUEUED``)."""
    result = []
    for line in lines:
        handle, *numbers = line.rsplit(b"\t", 3)
        retries, ignore, queued = (_int(n) for n in (numbers + [b"0"] * 3)[:3])
        result.append(JobInfo(_text(handle), retries, bool(ignore), bool(queued)))
    return result


@dataclass(frozen=True, slots=True)
class MemoryReport:
    """The reply to ``memory`` (geartrain's own command): the memory budget's figures."""

    #: ``budget``, ``high_water``, ``low_water``, ``held``, ``jobs``, ``output``,
    #: ``bodies``, ``peak`` in bytes; ``over`` 0 or 1; ``paused`` connections.
    figures: dict[str, int]
    #: The connections paused for memory: (fd, ip, client id).
    paused: tuple[tuple[int, str, str], ...]


def parse_memory(lines: list[bytes]) -> MemoryReport:
    """Parse ``memory`` lines (``NAME\tVALUE``, then ``connection\tFD\tIP\tID``)."""
    figures: dict[str, int] = {}
    paused: list[tuple[int, str, str]] = []
    for line in lines:
        name, _, rest = line.partition(b"\t")
        if name == b"connection":
            fd, _, tail = rest.partition(b"\t")
            ip, _, client_id = tail.partition(b"\t")
            paused.append((_int(fd), _text(ip), _text(client_id)))
        else:
            figures[_text(name)] = _int(rest)
    return MemoryReport(figures, tuple(paused))


def parse_unique_jobs(lines: list[bytes]) -> list[str]:
    """``show unique jobs`` lines are the unique ids themselves."""
    return [_text(line) for line in lines]


def maxqueue_command(function: str, limits: tuple[int, ...]) -> str:
    """``maxqueue NAME [N | H N L]``: one limit for all priorities or three."""
    if len(limits) not in (0, 1, 3):
        raise ValueError("give no limit (unlimited), one for all priorities, or high normal low")
    return " ".join(["maxqueue", function, *(str(int(n)) for n in limits)])


def check_word(value: str) -> str:
    """Admin arguments are single words: the server splits lines on spaces."""
    if not value or any(c in value for c in " \r\n"):
        raise ValueError(f"not usable in an admin command: {value!r}")
    return value


# -- what both admin clients share -------------------------------------------------------

#: Seconds to wait for a connection or a reply.
TIMEOUT = 10.0


def resolve(server: str | Address | None) -> Address:
    """An admin target: an address, ``host[:port]``, or the first of ``GEARMAN_SERVERS``."""
    if server is None:
        spec = os.environ.get("GEARMAN_SERVERS") or os.environ.get("GEARMAN_SERVER") or ""
        server = spec.split(",")[0] or "127.0.0.1"
    if isinstance(server, str):
        return parse_address(server)
    return (server[0], int(server[1]))


def ping_token() -> bytes:
    """Random data for a ping, so that a stale echo cannot pass for the answer."""
    return os.urandom(8).hex().encode()


def check_echo(reply: AdminReply, token: bytes) -> None:
    """Raise unless the ping's reply echoed ``token``."""
    reply.check()
    if reply.value != token:
        raise ConnectionLost("echo returned other data")


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Command(Generic[T]):
    """One admin command: the line to send, the reply's shape, and how to read it."""

    line: str
    shape: Shape
    parse: Callable[[AdminReply], T]


def _lines(parser: Callable[[list[bytes]], T]) -> Callable[[AdminReply], T]:
    return lambda reply: parser(reply.lines)


def _ok(reply: AdminReply) -> None:
    return None


def _value(reply: AdminReply) -> str:
    return reply.value.decode()


def _ok_command(line: str) -> Command[None]:
    return Command(line, Shape.OK, _ok)


STATUS = Command("status", Shape.LIST, _lines(parse_status))
PRIORITY_STATUS = Command("prioritystatus", Shape.LIST, _lines(parse_priority_status))
WORKERS = Command("workers", Shape.LIST, _lines(parse_workers))
JOBS = Command("show jobs", Shape.LIST, _lines(parse_jobs))
UNIQUE_JOBS = Command("show unique jobs", Shape.LIST, _lines(parse_unique_jobs))
VERSION = Command("version", Shape.VALUE, _value)
VERBOSE = Command("verbose", Shape.VALUE, _value)
GETPID = Command("getpid", Shape.VALUE, lambda reply: int(reply.value))


def cancel_job(handle: str) -> Command[None]:
    """``cancel job HANDLE``."""
    return _ok_command(f"cancel job {check_word(handle)}")


def create_function(function: str) -> Command[None]:
    """``create function NAME``."""
    return _ok_command(f"create function {check_word(function)}")


def drop_function(function: str) -> Command[None]:
    """``drop function NAME``."""
    return _ok_command(f"drop function {check_word(function)}")


def maxqueue(function: str, limits: tuple[int, ...]) -> Command[None]:
    """``maxqueue NAME [N | H N L]``."""
    return _ok_command(maxqueue_command(check_word(function), limits))
