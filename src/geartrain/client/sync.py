"""Blocking Gearman client on plain sockets.

All I/O happens in the calling thread: waiting for a task runs a small
``selectors`` loop over every server connection, which also delivers the
updates of every other task in flight and calls their callbacks. A
:class:`Client` is therefore not thread-safe; use one per thread.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import selectors
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from geartrain.errors import ConnectionLost, GeartrainError, GeartrainTimeout, NoServerAvailable
from geartrain.protocol import Priority

from .core import ClientProtocol, Event, JobStatus, Reply, RequestKind, Task, TaskCallback, Update
from .core import to_bytes as _bytes
from .servers import Address, ServerSpec, format_address, parse_servers, server_order

logger = logging.getLogger(__name__)

#: Default seconds to wait for a TCP connection to a job server.
CONNECT_TIMEOUT = 5.0
#: Seconds a server that refused a connection is skipped before being tried again.
RETRY_AFTER = 5.0
_READ_SIZE = 256 * 1024


def unix_time(when: float | dt.datetime) -> float:
    """Unix time of a SUBMIT_JOB_EPOCH ``when`` (naive datetimes are local time)."""
    if isinstance(when, dt.datetime):
        return when.timestamp()
    return when


class SyncTask(Task):
    """A :class:`Task` of a blocking :class:`Client`, with methods that wait for it."""

    _client: Client

    def wait(self, timeout: float | None = None) -> None:
        """Block until the task is done (created, for a background task).

        Raises:
            GeartrainTimeout: not done within ``timeout`` seconds.
        """
        self._client.wait([self], timeout)

    def result(self, timeout: float | None = None) -> bytes:
        """Wait for the task and return its result (the handle for background tasks).

        Raises:
            JobFailed: the worker sent WORK_FAIL.
            JobException: the worker sent WORK_EXCEPTION.
            ServerError: the server refused the submission.
            ConnectionLost: the connection broke; the job's fate is unknown.
            GeartrainTimeout: no outcome within ``timeout`` seconds.
        """
        self.wait(timeout)
        return self.outcome()

    def wait_created(self, timeout: float | None = None) -> bytes:
        """Block until the server acknowledged the job; return its handle.

        Raises:
            ServerError, ConnectionLost: the submission failed.
            GeartrainTimeout: no JOB_CREATED within ``timeout`` seconds.
        """
        deadline = _deadline(self._client._timeout(timeout))
        self._client._pump(deadline, lambda: self.handle is not None or self.done)
        if self.handle is None:
            self.outcome()  # raises why
        assert self.handle is not None
        return self.handle

    def stream(self, timeout: float | None = None) -> Iterator[Update]:
        """Yield the task's updates (CREATED, DATA, WARNING, STATUS, then the end) as they arrive.

        ``timeout`` (default: the client's) bounds the whole iteration.
        """
        deadline = _deadline(self._client._timeout(timeout))
        while True:
            if self.updates:
                yield self.updates.popleft()
                continue
            if self.done:
                return
            self._client._pump(deadline, lambda: bool(self.updates) or self.done)

    def status(self, timeout: float | None = None) -> JobStatus:
        """Ask the server that holds this task for its status (GET_STATUS)."""
        handle = self.wait_created(timeout)
        if self.server is None:
            raise GeartrainError("the task has no server")
        return self._client.get_status(handle, server=self.server, timeout=timeout)


class _Connection:
    def __init__(self, address: Address, sock: socket.socket, protocol: ClientProtocol) -> None:
        self.address = address
        self.sock = sock
        self.protocol = protocol


class Client:
    """A blocking Gearman client for one or more job servers.

    Args:
        servers: where the job servers are (see :func:`parse_servers`); None
            reads ``GEARMAN_SERVERS`` / ``GEARMAN_SERVER``, then ``127.0.0.1:4730``.
        timeout: default seconds for waiting operations; None waits forever.
        connect_timeout: seconds allowed for each TCP connect.
        exceptions: ask servers to forward WORK_EXCEPTION (``exceptions`` option).
        client_id: label shown by the server's ``workers`` command.
        retry_after: seconds a server that refused a connection is skipped.
        subsecond_epoch: send epoch times (``when``) to the millisecond. Only for
            servers that read fractions (geartrain): gearmand reads whole seconds
            and would run the job up to a second early. Off, times are rounded up
            to whole seconds, so a job never runs early on any server.
    """

    def __init__(
        self,
        servers: ServerSpec | None = None,
        *,
        timeout: float | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        exceptions: bool = False,
        client_id: str | bytes | None = None,
        retry_after: float = RETRY_AFTER,
        subsecond_epoch: bool = False,
    ) -> None:
        self.servers = parse_servers(servers)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.exceptions = exceptions
        self.client_id = client_id
        self.retry_after = retry_after
        self.subsecond_epoch = subsecond_epoch
        self._connections: dict[Address, _Connection] = {}
        self._down_until: dict[Address, float] = {}
        self._selector = selectors.DefaultSelector()
        self._rotation = 0

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection; tasks still waiting become LOST."""
        for conn in list(self._connections.values()):
            self._lost(conn, "client closed")
        self._selector.close()

    # -- submitting ----------------------------------------------------------------

    def submit(
        self,
        function: str | bytes,
        payload: str | bytes = b"",
        *,
        unique: str | bytes | None = None,
        priority: Priority = Priority.NORMAL,
        background: bool = False,
        when: float | dt.datetime | None = None,
        callback: TaskCallback | None = None,
    ) -> SyncTask:
        """Send a job and return at once, without waiting for JOB_CREATED.

        Args:
            function: the Gearman function name.
            payload: the job's data (``str`` is encoded as UTF-8).
            unique: unique id; jobs with equal ids coalesce. Background jobs
                without one get a UUID.
            priority: ``Priority.HIGH``, ``NORMAL`` or ``LOW``.
            background: detach after JOB_CREATED (no result comes back).
            when: run no earlier than this Unix time or datetime
                (SUBMIT_JOB_EPOCH; implies background, normal priority). Sent
                rounded up to whole seconds, or to the millisecond with
                ``subsecond_epoch``.
            callback: called with every :class:`Update` of the task; an exception it
                raises is logged, not propagated.

        Returns:
            The task; use :meth:`SyncTask.result`, :meth:`SyncTask.stream` or
            :meth:`wait` to follow it.

        Raises:
            NoServerAvailable: no server accepted a connection.
            ValueError: ``when`` is not a finite time.
        """
        task = SyncTask(
            function,
            payload,
            unique=unique,
            priority=priority,
            background=background,
            when=None if when is None else unix_time(when),
            subsecond_epoch=self.subsecond_epoch,
            callback=callback,
        )
        task._client = self
        self._send_task(task)
        return task

    def call(
        self,
        function: str | bytes,
        payload: str | bytes = b"",
        *,
        unique: str | bytes | None = None,
        priority: Priority = Priority.NORMAL,
        timeout: float | None = None,
    ) -> bytes:
        """Run a foreground job and return its result.

        Raises:
            JobFailed, JobException, ServerError, ConnectionLost, GeartrainTimeout:
                as :meth:`SyncTask.result`.
        """
        task = self.submit(function, payload, unique=unique, priority=priority)
        return task.result(self._timeout(timeout))

    def submit_background(
        self,
        function: str | bytes,
        payload: str | bytes = b"",
        *,
        unique: str | bytes | None = None,
        priority: Priority = Priority.NORMAL,
        when: float | dt.datetime | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Queue a background job and return its handle once the server has it."""
        task = self.submit(
            function, payload, unique=unique, priority=priority, background=True, when=when
        )
        return task.result(self._timeout(timeout))

    def wait(self, tasks: Iterable[Task], timeout: float | None = None) -> None:
        """Block until every task is done; failures stay on the tasks.

        Raises:
            GeartrainTimeout: some task is not done within ``timeout`` seconds.
        """
        pending = [task for task in tasks if not task.done]
        self._pump(_deadline(self._timeout(timeout)), lambda: all(t.done for t in pending))

    def gather(
        self, tasks: Sequence[Task], timeout: float | None = None
    ) -> list[bytes | GeartrainError]:
        """Wait for all tasks; return each result, or the exception that ended it."""
        self.wait(tasks, timeout)
        results: list[bytes | GeartrainError] = []
        for task in tasks:
            try:
                results.append(task.outcome())
            except GeartrainError as exc:
                results.append(exc)
        return results

    # -- queries -------------------------------------------------------------------

    def get_status(
        self, handle: str | bytes, *, server: Address | None = None, timeout: float | None = None
    ) -> JobStatus:
        """GET_STATUS for a handle.

        Handles are only meaningful on the server that issued them; pass
        ``server`` when known, otherwise every server is asked and the first
        that knows the job answers.
        """
        servers = [server] if server is not None else self.servers
        return self._ask_status(RequestKind.STATUS, _bytes(handle), servers, timeout)

    def get_status_unique(self, unique: str | bytes, *, timeout: float | None = None) -> JobStatus:
        """GET_STATUS_UNIQUE, asking servers in the order a job with that unique tries them."""
        key = _bytes(unique)
        order = [self.servers[i] for i in server_order(key, len(self.servers))]
        return self._ask_status(RequestKind.STATUS_UNIQUE, key, order, timeout)

    def echo(self, data: str | bytes = b"ping", *, timeout: float | None = None) -> bytes:
        """ECHO_REQ to the first reachable server; returns the echoed bytes."""
        for address in self.servers:
            conn = self._connection(address)
            if conn is None:
                continue
            reply = conn.protocol.request(RequestKind.ECHO, _bytes(data))
            self._flush(conn)
            self._wait_reply(reply, _deadline(self._timeout(timeout)))
            value = reply.outcome()
            assert isinstance(value, bytes)
            return value
        raise NoServerAvailable(self._unavailable())

    # -- internals -----------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def _ask_status(
        self, kind: RequestKind, key: bytes, servers: Sequence[Address], timeout: float | None
    ) -> JobStatus:
        deadline = _deadline(self._timeout(timeout))
        answer: JobStatus | None = None
        for address in servers:
            conn = self._connection(address)
            if conn is None:
                continue
            reply = conn.protocol.request(kind, key)
            self._flush(conn)
            self._wait_reply(reply, deadline)
            try:
                value = reply.outcome()
            except ConnectionLost:
                continue
            assert isinstance(value, JobStatus)
            if value.known:
                return value
            answer = value
        if answer is None:
            raise NoServerAvailable(self._unavailable())
        return answer

    def _wait_reply(self, reply: Reply, deadline: float | None) -> None:
        self._pump(deadline, lambda: reply.done)

    def _send_task(self, task: SyncTask) -> None:
        if task.unique:
            order = server_order(task.unique, len(self.servers))
        else:
            order = server_order(b"", len(self.servers), self._rotation)
            self._rotation += 1
        for respect_backoff in (True, False):
            for index in order:
                address = self.servers[index]
                conn = self._connection(address, respect_backoff)
                if conn is None:
                    continue
                conn.protocol.submit(task)
                try:
                    conn.sock.sendall(conn.protocol.data_to_send())
                except OSError as exc:
                    if self._refused(conn, task):
                        # The server answered ERROR and closed (a packet over its size
                        # limit): that refusal, not a lost connection, is the outcome.
                        self._lost(conn, f"send failed: {exc}")
                        return
                    # sendall() failed, so the packet did not reach the server
                    # whole and cannot have become a job: the next server may
                    # take it without any risk of running it twice.
                    conn.protocol.withdraw(task)
                    self._lost(conn, f"send failed: {exc}")
                    continue
                task.server = address
                return
        raise NoServerAvailable(self._unavailable())

    def _refused(self, conn: _Connection, task: SyncTask) -> bool:
        """Read what a server sent before it cut a send short; True if it refused ``task``."""
        conn.sock.setblocking(False)
        received = b""
        with contextlib.suppress(OSError):
            while chunk := conn.sock.recv(_READ_SIZE):
                received += chunk
        try:
            self._dispatch(conn.protocol.receive_data(received))
        except GeartrainError:
            return False
        return task.error is not None

    def _unavailable(self) -> str:
        names = ", ".join(format_address(a) for a in self.servers)
        return f"no job server reachable ({names})"

    def _connection(self, address: Address, respect_backoff: bool = True) -> _Connection | None:
        conn = self._connections.get(address)
        if conn is not None:
            # Notice a server that went away before trusting the socket with a job.
            self._pump_once(0.0)
            conn = self._connections.get(address)
            if conn is not None:
                return conn
        if respect_backoff and self._down_until.get(address, 0.0) > time.monotonic():
            return None
        try:
            sock = socket.create_connection(address, timeout=self.connect_timeout)
        except OSError:
            self._down_until[address] = time.monotonic() + self.retry_after
            return None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        self._down_until.pop(address, None)
        protocol = ClientProtocol(exceptions=self.exceptions, client_id=self.client_id)
        conn = _Connection(address, sock, protocol)
        self._connections[address] = conn
        self._selector.register(sock, selectors.EVENT_READ, conn)
        self._flush(conn)
        if self._connections.get(address) is not conn:  # died at once
            self._down_until[address] = time.monotonic() + self.retry_after
            return None
        return conn

    def _flush(self, conn: _Connection) -> None:
        data = conn.protocol.data_to_send()
        if data:
            try:
                conn.sock.sendall(data)
            except OSError as exc:
                self._lost(conn, f"send failed: {exc}")

    def _lost(self, conn: _Connection, reason: str) -> None:
        if self._connections.get(conn.address) is conn:
            del self._connections[conn.address]
            self._selector.unregister(conn.sock)
        conn.sock.close()
        self._dispatch(conn.protocol.connection_lost(f"{format_address(conn.address)}: {reason}"))

    def _pump(self, deadline: float | None, until: Callable[[], bool]) -> None:
        """Run the I/O loop until ``until()`` is true."""
        while not until():
            if not self._connections:
                raise ConnectionLost("no open connection to wait on")
            if deadline is None:
                self._pump_once(None)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GeartrainTimeout("timed out waiting for the job server")
            self._pump_once(remaining)

    def _pump_once(self, timeout: float | None) -> None:
        if not self._connections:
            return
        for key, _ in self._selector.select(timeout):
            conn: _Connection = key.data
            try:
                data = conn.sock.recv(_READ_SIZE)
            except OSError as exc:
                self._lost(conn, str(exc))
                continue
            if not data:
                self._lost(conn, "server closed the connection")
                continue
            try:
                events = conn.protocol.receive_data(data)
            except GeartrainError as exc:
                self._lost(conn, str(exc))
                continue
            self._dispatch(events)

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Reply):
                continue
            callback = event.task.callback
            if callback is not None:
                _run_callback(callback, event)


def _run_callback(callback: TaskCallback, update: Update) -> None:
    # A failing callback must not break the I/O loop that serves every other task.
    try:
        callback(update)
    except Exception:
        logger.exception("task callback failed for %r", update.task)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout
