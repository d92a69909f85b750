"""The worker side of the Gearman protocol, without I/O.

Theory of operation
-------------------
A worker holds one connection per job server. Each connection cycles through
three states (PROTOCOL.md §9)::

    IDLE --grab()--> GRABBING --NO_JOB / PRE_SLEEP--> SLEEPING
      ^                 |                                 |
      +--JOB_ASSIGN_UNIQ+                                 |
      +-------------------------- NOOP -------------------+

An IDLE connection remembers whether work may be waiting (``hungry``): true on
a fresh connection, after a NOOP and after an assignment (the queue may hold
more). :class:`WorkerState` owns every connection and the worker's capacity
(how many jobs may run at once). Whenever a job arrives or ends it hands out
the free slots as GRAB_JOB_UNIQ requests on hungry connections, counting
outstanding grabs as taken slots so that several servers never hand over more
jobs than the worker can run.

Jobs are grabbed with GRAB_JOB_UNIQ so the unique id reaches the worker.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from geartrain.client.protocol import ServerReader
from geartrain.client.task import to_bytes
from geartrain.protocol import Packet, PacketType
from geartrain.protocol.codec import encode_request, in_memory

P = PacketType
logger = logging.getLogger(__name__)


class ConnState(enum.Enum):
    """Where one worker connection is in the grab/sleep cycle."""

    IDLE = "idle"
    GRABBING = "grabbing"
    SLEEPING = "sleeping"


@dataclass(frozen=True, slots=True)
class Assignment:
    """A job handed to this worker (JOB_ASSIGN_UNIQ, or JOB_ASSIGN without unique).

    Attributes:
        connection: key of the connection it came on; results must go back there.
        handle: the job handle.
        function: the function name.
        unique: the job's unique id (empty when the server sent none).
        payload: the job's data.
    """

    connection: Hashable
    handle: bytes
    function: bytes
    unique: bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class ServerMessage:
    """An ERROR packet the server sent to the worker (e.g. JOB_NOT_FOUND after a timeout)."""

    connection: Hashable
    code: bytes
    text: bytes


WorkerEvent = Assignment | ServerMessage


class WorkerProtocol:
    """One worker connection's protocol state."""

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.state = ConnState.IDLE
        self.hungry = True
        self._reader = ServerReader()
        self._outbox = bytearray()

    def data_to_send(self) -> bytes:
        """Bytes queued for the server since the last call."""
        data = bytes(self._outbox)
        self._outbox.clear()
        return data

    def send(self, ptype: PacketType, *args: bytes, data: bytes = b"") -> None:
        """Queue one request packet."""
        self._outbox += encode_request(ptype, *args, data=data)

    def introduce(self, client_id: bytes | None, functions: dict[bytes, int]) -> None:
        """What a fresh connection sends: SET_CLIENT_ID and one CAN_DO(_TIMEOUT) each."""
        if client_id is not None:
            self.send(P.SET_CLIENT_ID, client_id)
        for function, timeout_ms in functions.items():
            self.can_do(function, timeout_ms)

    def can_do(self, function: bytes, timeout_ms: int = 0) -> None:
        """Register a function, with a server-side time limit in milliseconds if > 0."""
        if timeout_ms > 0:
            self.send(P.CAN_DO_TIMEOUT, function, str(timeout_ms).encode())
        else:
            self.send(P.CAN_DO, function)

    def grab(self) -> None:
        """Ask for a job."""
        self.send(P.GRAB_JOB_UNIQ)
        self.state = ConnState.GRABBING
        self.hungry = False

    def receive_data(self, data: bytes) -> list[WorkerEvent]:
        """Feed bytes from the server; return the assignments and errors they complete.

        Raises:
            ProtocolError: the stream cannot be parsed; close the connection.
        """
        events: list[WorkerEvent] = []
        for packet in self._reader.feed(data):
            self._handle(packet, events)
        return events

    def _handle(self, packet: Packet, events: list[WorkerEvent]) -> None:
        ptype, args = packet.type, packet.args
        if ptype == P.NOOP:
            if self.state is ConnState.SLEEPING:
                self.state = ConnState.IDLE
            self.hungry = True
        elif ptype == P.NO_JOB:
            # Tell the server we sleep; it answers NOOP at once if work is queued.
            self.send(P.PRE_SLEEP)
            self.state = ConnState.SLEEPING
        elif ptype in (P.JOB_ASSIGN_UNIQ, P.JOB_ASSIGN_ALL):
            self._assigned(args[0], args[1], args[2], in_memory(packet.data), events)
        elif ptype == P.JOB_ASSIGN:
            self._assigned(args[0], args[1], b"", in_memory(packet.data), events)
        elif ptype == P.ERROR:
            events.append(ServerMessage(self.key, args[0], args[1]))
        # ECHO_RES and anything unexpected are ignored.

    def _assigned(
        self,
        handle: bytes,
        function: bytes,
        unique: bytes,
        data: bytes | memoryview,
        events: list[WorkerEvent],
    ) -> None:
        self.state = ConnState.IDLE
        self.hungry = True
        events.append(Assignment(self.key, handle, function, unique, bytes(data)))


class WorkerState:
    """Every connection of one worker, and how many jobs it may still take.

    Args:
        capacity: the most jobs running at once.
        client_id: sent as SET_CLIENT_ID on every connection.
    """

    def __init__(self, capacity: int = 1, client_id: bytes | str | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.client_id = None if client_id is None else to_bytes(client_id)
        self.functions: dict[bytes, int] = {}
        self.connections: dict[Hashable, WorkerProtocol] = {}
        self.running: dict[tuple[Hashable, bytes], Assignment] = {}
        self.accepting = True
        #: How many more jobs may be taken in total (None: no limit).
        self.limit: int | None = None

    # -- registrations -----------------------------------------------------------

    def register(self, function: bytes, timeout_ms: int = 0) -> None:
        """Add a function on every connection, now and after each reconnect."""
        self.functions[function] = timeout_ms
        for conn in self.connections.values():
            conn.can_do(function, timeout_ms)
            conn.hungry = True

    def unregister(self, function: bytes) -> None:
        """Remove a function (CANT_DO) everywhere."""
        self.functions.pop(function, None)
        for conn in self.connections.values():
            conn.send(P.CANT_DO, function)

    # -- connections -------------------------------------------------------------

    def connection_made(self, key: Hashable) -> WorkerProtocol:
        """A connection is up: introduce the worker on it and start grabbing."""
        conn = WorkerProtocol(key)
        conn.introduce(self.client_id, self.functions)
        self.connections[key] = conn
        self.refill()
        return conn

    def connection_lost(self, key: Hashable) -> list[Assignment]:
        """Forget a connection; return its running jobs, whose results can no longer be sent.

        The server re-queues those jobs by itself.
        """
        self.connections.pop(key, None)
        orphans = [job for (conn, _), job in self.running.items() if conn == key]
        for job in orphans:
            del self.running[(key, job.handle)]
        self.refill()
        return orphans

    def receive_data(self, key: Hashable, data: bytes) -> list[WorkerEvent]:
        """Feed bytes from one connection; assignments are counted as running."""
        events = self.connections[key].receive_data(data)
        for event in events:
            if isinstance(event, Assignment):
                self.running[(key, event.handle)] = event
                if self.limit is not None:
                    self.limit = max(0, self.limit - 1)
        self.refill()
        return events

    def wake(self) -> None:
        """Treat every sleeping connection as woken (a periodic re-poll).

        gearmand 1.1.x never sends NOOP when an epoch job becomes due, so a
        worker that only waits for NOOP would not run it.
        """
        for conn in self.connections.values():
            if conn.state is ConnState.SLEEPING:
                conn.state = ConnState.IDLE
                conn.hungry = True
        self.refill()

    # -- results -----------------------------------------------------------------

    def finish(self, job: Assignment, ptype: PacketType, data: bytes = b"") -> bool:
        """Send a job's final packet (WORK_COMPLETE, WORK_FAIL or WORK_EXCEPTION).

        Returns:
            False when the job's connection is gone and nothing could be sent.
        """
        self.running.pop((job.connection, job.handle), None)
        conn = self.connections.get(job.connection)
        if conn is not None:
            if ptype == P.WORK_FAIL:
                conn.send(ptype, job.handle)  # the body is exactly the handle
            else:
                conn.send(ptype, job.handle, data=data)
        self.refill()
        return conn is not None

    def progress(self, job: Assignment, ptype: PacketType, *args: bytes, data: bytes = b"") -> bool:
        """Queue WORK_DATA, WORK_WARNING or WORK_STATUS for a running job."""
        conn = self.connections.get(job.connection)
        if conn is None:
            return False
        conn.send(ptype, job.handle, *args, data=data)
        return True

    # -- scheduling --------------------------------------------------------------

    @property
    def grabbing(self) -> int:
        return sum(1 for c in self.connections.values() if c.state is ConnState.GRABBING)

    def refill(self) -> None:
        """Turn free capacity into GRAB_JOB_UNIQ requests on hungry connections."""
        if not self.accepting or not self.functions:
            return
        grabbing = self.grabbing
        free = self.capacity - len(self.running) - grabbing
        if self.limit is not None:
            free = min(free, self.limit - grabbing)
        for conn in self.connections.values():
            if free <= 0:
                return
            if conn.state is ConnState.IDLE and conn.hungry:
                conn.grab()
                free -= 1
        # A connection with nothing to do but no free slot stays IDLE and hungry;
        # it grabs when a job ends.

    def pending_output(self) -> Iterable[tuple[Hashable, bytes]]:
        """``(connection key, bytes)`` for every connection with something to send."""
        for key, conn in self.connections.items():
            data = conn.data_to_send()
            if data:
                yield key, data


# -- shared by the blocking and the asyncio worker ----------------------------------
