"""The client side of the Gearman protocol, without I/O.

Theory of operation
-------------------
:class:`ClientProtocol` is one connection to one job server. Callers hand it
:class:`Task` objects and requests (status, option, echo); it queues the bytes
to send (:meth:`ClientProtocol.data_to_send`) and turns received bytes into
:class:`Update` and :class:`Reply` objects (:meth:`ClientProtocol.receive_data`).
The sync and asyncio clients only move bytes and wake waiters.

Matching replies follows what the server guarantees (gearmand answers the
request/response pairs of one connection in the order they arrived) and what
libgearman and python-gear rely on: one FIFO of outstanding requests per
connection. JOB_CREATED, ERROR, STATUS_RES, STATUS_RES_UNIQUE, OPTION_RES and
ECHO_RES each answer the oldest outstanding request; an ERROR answers
whichever request is oldest. Everything a worker produces for a job
(WORK_DATA, WORK_WARNING, WORK_STATUS, WORK_COMPLETE, WORK_FAIL,
WORK_EXCEPTION) is matched by handle instead.

WORK_FAIL's body is exactly the handle. gearmand 1.1.x adds a stray NUL when
it turns a WORK_EXCEPTION into a WORK_FAIL for a client without the
``exceptions`` option, so a trailing NUL is stripped before matching.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from geartrain.errors import ConnectionLost, GeartrainError, ProtocolError, ServerError
from geartrain.protocol import RES, BadPacket, Decoder, Packet, PacketType
from geartrain.protocol.codec import as_bytes, encode_request

from .task import JobStatus, Task, TaskState, Update, UpdateKind, to_bytes

P = PacketType
logger = logging.getLogger(__name__)

#: Largest packet body accepted from a server: anything the 32-bit size field
#: allows. The decoder's smaller default protects a server from its clients; a
#: client asked for its results and gearmand passes bodies of any size.
MAX_BODY = 2**32 - 1
#: Bytes read from a server at a time: large enough that a big result arrives
#: in few reads, small enough not to matter per connection.
READ_SIZE = 256 * 1024


class ServerReader:
    """Turns a job server's bytes into packets, for clients and workers alike."""

    def __init__(self) -> None:
        self._decoder = Decoder(expect=RES, max_size=MAX_BODY, text=False)

    def feed(self, data: bytes) -> Iterator[Packet]:
        """The packets ``data`` completes; a bad one the stream survives is skipped.

        Raises:
            ProtocolError: the stream cannot be parsed further; close the connection.
        """
        for message in self._decoder.feed(data):
            if isinstance(message, BadPacket):
                if message.fatal:
                    raise ProtocolError(message.text.decode(errors="replace"))
                continue
            assert isinstance(message, Packet)
            yield message


class RequestKind(enum.Enum):
    """The request a :class:`Reply` answers."""

    STATUS = P.STATUS_RES
    STATUS_UNIQUE = P.STATUS_RES_UNIQUE
    OPTION = P.OPTION_RES
    ECHO = P.ECHO_RES


@dataclass(slots=True)
class Reply:
    """The answer to one GET_STATUS, GET_STATUS_UNIQUE, OPTION_REQ or ECHO_REQ.

    ``done`` turns true when the answer (``value``) or an ``error`` arrived.
    """

    kind: RequestKind
    done: bool = False
    value: JobStatus | bytes | None = None
    error: GeartrainError | None = None

    def outcome(self) -> JobStatus | bytes:
        """The answer, or raise the error that came instead."""
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value

    def status(self) -> JobStatus:
        """The STATUS_RES answer, or raise the error that came instead."""
        value = self.outcome()
        assert isinstance(value, JobStatus)
        return value

    def echoed(self) -> bytes:
        """The ECHO_RES (or OPTION_RES) answer, or raise the error that came instead."""
        value = self.outcome()
        assert isinstance(value, bytes)
        return value


Event = Update | Reply

_WORK_KINDS: dict[int, UpdateKind] = {
    P.WORK_DATA: UpdateKind.DATA,
    P.WORK_WARNING: UpdateKind.WARNING,
    P.WORK_STATUS: UpdateKind.STATUS,
    P.WORK_COMPLETE: UpdateKind.COMPLETE,
    P.WORK_FAIL: UpdateKind.FAIL,
    P.WORK_EXCEPTION: UpdateKind.EXCEPTION,
}
_ENDING = frozenset({UpdateKind.COMPLETE, UpdateKind.FAIL, UpdateKind.EXCEPTION})


#: ERROR codes after which gearmand and geartrain close the connection: the stream could
#: not be framed (an oversized body, a bad magic).
_CLOSING_ERRORS = frozenset({b"ARGUMENT_TOO_LARGE", b"INVALID_MAGIC"})
#: Why a retired connection (``ClientProtocol.retired``) was let go.
RETIRED = "closed after the server's refusal"


class ClientProtocol:
    """One client connection's protocol state.

    Args:
        exceptions: ask the server to forward WORK_EXCEPTION (OPTION_REQ
            ``exceptions``); without it gearmand turns exceptions into WORK_FAIL.
        client_id: a label for the server's ``workers`` listing (SET_CLIENT_ID).
    """

    def __init__(self, *, exceptions: bool = False, client_id: bytes | str | None = None) -> None:
        self._reader = ServerReader()
        self._outbox = bytearray()
        self._pending: deque[Task | Reply] = deque()
        self._running: dict[bytes, list[Task]] = {}
        self.closed = False
        #: The server answered with an error after which it closes the connection (a
        #: packet it could not frame): new requests should go on a new connection.
        self.closing = False
        if client_id is not None:
            self._outbox += encode_request(P.SET_CLIENT_ID, to_bytes(client_id))
        if exceptions:
            self.request(RequestKind.OPTION, b"exceptions")

    # -- requests ----------------------------------------------------------------

    def submit(self, task: Task) -> None:
        """Queue a task's SUBMIT packet; its JOB_CREATED is matched later."""
        self._check_open()
        self._outbox += task.packet()
        task.state = TaskState.SUBMITTED
        self._pending.append(task)

    def request(self, kind: RequestKind, argument: bytes) -> Reply:
        """Queue a GET_STATUS(_UNIQUE), OPTION_REQ or ECHO_REQ; return its pending reply."""
        self._check_open()
        if kind is RequestKind.ECHO:
            self._outbox += encode_request(P.ECHO_REQ, data=argument)
        else:
            ptype = {
                RequestKind.STATUS: P.GET_STATUS,
                RequestKind.STATUS_UNIQUE: P.GET_STATUS_UNIQUE,
                RequestKind.OPTION: P.OPTION_REQ,
            }[kind]
            self._outbox += encode_request(ptype, argument)
        reply = Reply(kind)
        self._pending.append(reply)
        return reply

    def withdraw(self, task: Task) -> None:
        """Forget a task whose SUBMIT never reached the server (the send failed).

        The task becomes NEW again, so that :meth:`connection_lost` does not
        report it lost and another connection may take it. A task the server
        already answered (ERROR) is left alone.
        """
        if any(item is task for item in self._pending):
            self._pending.remove(task)
            task.state = TaskState.NEW

    def data_to_send(self) -> bytes:
        """Bytes queued for the server since the last call."""
        data = bytes(self._outbox)
        self._outbox.clear()
        return data

    @property
    def outstanding(self) -> int:
        """Requests without a reply plus foreground tasks without a result."""
        return len(self._pending) + sum(len(tasks) for tasks in self._running.values())

    # -- incoming ----------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the server; return what they completed, in order.

        Raises:
            ProtocolError: the server sent something unparseable; the
                connection must be closed (call :meth:`connection_lost`).
        """
        events: list[Event] = []
        for packet in self._reader.feed(data):
            self._handle(packet, events)
        return events

    def connection_lost(self, reason: str = "connection to the job server lost") -> list[Event]:
        """The connection is gone: every task and request waiting on it is lost."""
        self.closed = True
        events: list[Event] = []
        waiting: list[Task | Reply] = list(self._pending)
        for tasks in self._running.values():
            waiting.extend(tasks)
        self._pending.clear()
        self._running.clear()
        for item in waiting:
            if isinstance(item, Reply):
                item.error = ConnectionLost(reason)
                item.done = True
                events.append(item)
            else:
                item.state = TaskState.LOST
                item.error = ConnectionLost(reason)
                events.append(Update(item, UpdateKind.LOST))
        return events

    # -- internals ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise ConnectionLost("connection to the job server is closed")

    def _handle(self, packet: Packet, events: list[Event]) -> None:
        ptype = packet.type
        kind = _WORK_KINDS.get(ptype)
        if kind is not None:
            self._work(kind, packet, events)
        elif ptype == P.JOB_CREATED:
            self._created(self._pop_task(), packet.args[0], events)
        elif ptype == P.ERROR:
            self._error(packet, events)
        elif ptype in (P.STATUS_RES, P.STATUS_RES_UNIQUE, P.OPTION_RES, P.ECHO_RES):
            reply = self._pop_reply(ptype)
            if ptype == P.OPTION_RES:
                reply.value = packet.args[0]
            elif ptype == P.ECHO_RES:
                reply.value = as_bytes(packet.data)
            else:
                reply.value = JobStatus.from_packet(packet)
            reply.done = True
            events.append(reply)
        # NOOP and anything else a client is not expected to get are ignored.

    def _pop_task(self) -> Task:
        item = self._pending.popleft() if self._pending else None
        if not isinstance(item, Task):
            raise ProtocolError(f"JOB_CREATED does not answer {item!r}")
        return item

    def _pop_reply(self, ptype: int) -> Reply:
        item = self._pending.popleft() if self._pending else None
        if not isinstance(item, Reply) or item.kind.value != ptype:
            raise ProtocolError(f"{PacketType(ptype).name} does not answer {item!r}")
        return item

    def _created(self, task: Task, handle: bytes, events: list[Event]) -> None:
        task.handle = handle
        update = Update(task, UpdateKind.CREATED)
        task._apply(update)
        events.append(update)
        if not task.background:
            self._running.setdefault(handle, []).append(task)

    @property
    def retired(self) -> bool:
        """The server is closing this connection (``closing``) and nothing is outstanding
        on it: a request sent now could be lost with it, so new ones take a new one."""
        return self.closing and not self._pending and not self._running

    def _error(self, packet: Packet, events: list[Event]) -> None:
        if packet.args[0] in _CLOSING_ERRORS:
            self.closing = True
        error = ServerError(
            packet.args[0].decode(errors="replace"), packet.args[1].decode(errors="replace")
        )
        if not self._pending:
            return  # unsolicited (e.g. JOB_NOT_FOUND): nothing of ours to fail
        item = self._pending.popleft()
        if isinstance(item, Reply):
            item.error, item.done = error, True
            events.append(item)
        else:
            item.state, item.error = TaskState.REJECTED, error
            update = Update(item, UpdateKind.REJECTED)
            item.updates.append(update)
            events.append(update)

    def _work(self, kind: UpdateKind, packet: Packet, events: list[Event]) -> None:
        handle = packet.args[0]
        if kind is UpdateKind.FAIL:
            handle = handle.rstrip(b"\0")
        tasks = self._running.get(handle)
        if not tasks:
            return
        data, numerator, denominator = as_bytes(packet.data), 0, 0
        if kind is UpdateKind.STATUS:
            numerator, denominator = _int(packet.args[1]), _int(packet.args[2])
        if kind in _ENDING:
            del self._running[handle]
        for task in tasks:
            update = Update(task, kind, data, numerator, denominator)
            task._apply(update)
            events.append(update)


def _int(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        return 0
