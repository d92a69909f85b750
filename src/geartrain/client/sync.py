"""Blocking Gearman client on plain sockets.

All I/O happens in the calling thread: waiting for a task runs a small
``selectors`` loop over every server connection, which also delivers the
updates of every other task in flight and calls their callbacks. A
:class:`Client` is therefore not thread-safe; use one per thread.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Unpack

from geartrain.client.transport import connect, receive
from geartrain.errors import ConnectionLost, GeartrainError, GeartrainTimeout

from . import core
from .core import CONNECT_TIMEOUT, RETRY_AFTER, unix_time
from .core import to_bytes as _bytes
from .pool import StatusSearch
from .servers import Address, format_address

# CONNECT_TIMEOUT, RETRY_AFTER and unix_time lived here first; they stay importable from here.
__all__ = ["CONNECT_TIMEOUT", "RETRY_AFTER", "Client", "SyncTask", "unix_time"]


class SyncTask(core.Task):
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

    def stream(self, timeout: float | None = None) -> Iterator[core.Update]:
        """Yield the task's updates (CREATED, DATA, WARNING, STATUS, then the end) as they arrive.

        ``timeout`` (default: the client's) bounds the whole iteration.
        """
        deadline = _deadline(self._client._timeout(timeout))
        while not self._drained:
            if self.updates:
                yield self.updates.popleft()
            else:
                self._client._pump(deadline, lambda: bool(self.updates) or self.done)

    def status(self, timeout: float | None = None) -> core.JobStatus:
        """Ask the server that holds this task for its status (GET_STATUS)."""
        handle = self.wait_created(timeout)
        if self.server is None:
            raise GeartrainError("the task has no server")
        return self._client.get_status(handle, server=self.server, timeout=timeout)


class _Connection:
    def __init__(
        self, address: Address, sock: socket.socket, protocol: core.ClientProtocol
    ) -> None:
        self.address = address
        self.sock = sock
        self.protocol = protocol


class Client(core.BaseClient):
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
        tls: speak TLS: :class:`geartrain.tls.TLSOptions` or an ``ssl.SSLContext``;
            None = plain TCP. The handshake counts against ``connect_timeout``.
    """

    def _init_io(self) -> None:
        self._connections: dict[Address, _Connection] = {}
        self._selector = selectors.DefaultSelector()

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
        self, function: str | bytes, payload: str | bytes = b"", **options: Unpack[core.SubmitArgs]
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
        task = self._new_task(SyncTask, function, payload, options)
        task._client = self
        self._send_task(task)
        return task

    def call(
        self, function: str | bytes, payload: str | bytes = b"", **options: Unpack[core.CallArgs]
    ) -> bytes:
        """Run a foreground job and return its result.

        Raises:
            JobFailed, JobException, ServerError, ConnectionLost, GeartrainTimeout:
                as :meth:`SyncTask.result`.
        """
        task = self.submit(function, payload, **core.foreground_args(options))
        return task.result(self._timeout(options.get("timeout")))

    def submit_background(
        self,
        function: str | bytes,
        payload: str | bytes = b"",
        **options: Unpack[core.BackgroundArgs],
    ) -> bytes:
        """Queue a background job and return its handle once the server has it."""
        task = self.submit(function, payload, **core.background_args(options))
        return task.result(self._timeout(options.get("timeout")))

    def wait(self, tasks: Iterable[core.Task], timeout: float | None = None) -> None:
        """Block until every task is done; failures stay on the tasks.

        Raises:
            GeartrainTimeout: some task is not done within ``timeout`` seconds.
        """
        pending = [task for task in tasks if not task.done]
        self._pump(_deadline(self._timeout(timeout)), lambda: all(t.done for t in pending))

    def gather(
        self, tasks: Sequence[core.Task], timeout: float | None = None
    ) -> list[bytes | GeartrainError]:
        """Wait for all tasks; return each result, or the exception that ended it."""
        self.wait(tasks, timeout)
        return core.outcomes(tasks)

    # -- queries -------------------------------------------------------------------

    def get_status(
        self, handle: str | bytes, *, server: Address | None = None, timeout: float | None = None
    ) -> core.JobStatus:
        """GET_STATUS for a handle.

        Handles are only meaningful on the server that issued them; pass
        ``server`` when known, otherwise every server is asked and the first
        that knows the job answers.
        """
        servers = [server] if server is not None else self.servers
        return self._ask_status(core.RequestKind.STATUS, _bytes(handle), servers, timeout)

    def get_status_unique(
        self, unique: str | bytes, *, timeout: float | None = None
    ) -> core.JobStatus:
        """GET_STATUS_UNIQUE, asking servers in the order a job with that unique tries them."""
        key = _bytes(unique)
        return self._ask_status(core.RequestKind.STATUS_UNIQUE, key, self.pool.order(key), timeout)

    def echo(self, data: str | bytes = b"ping", *, timeout: float | None = None) -> bytes:
        """ECHO_REQ to the first reachable server; returns the echoed bytes."""
        for address in self.servers:
            conn = self._connection(address)
            if conn is None:
                continue
            deadline = _deadline(self._timeout(timeout))
            return self._request(conn, core.RequestKind.ECHO, _bytes(data), deadline).echoed()
        raise self.pool.unavailable()

    # -- internals -----------------------------------------------------------------

    def _request(
        self, conn: _Connection, kind: core.RequestKind, argument: bytes, deadline: float | None
    ) -> core.Reply:
        reply = conn.protocol.request(kind, argument)
        self._flush(conn)
        self._pump(deadline, lambda: reply.done)
        return reply

    def _ask_status(
        self, kind: core.RequestKind, key: bytes, servers: Sequence[Address], timeout: float | None
    ) -> core.JobStatus:
        deadline = _deadline(self._timeout(timeout))
        search = StatusSearch(self.pool)
        for address in servers:
            conn = self._connection(address)
            if conn is None:
                continue
            reply = self._request(conn, kind, key, deadline)
            with contextlib.suppress(ConnectionLost):
                if search.add(reply.status()):
                    break
        return search.result()

    def _send_task(self, task: SyncTask) -> None:
        for address, respect_backoff in self.pool.attempts(task.unique):
            conn = self._connection(address, respect_backoff)
            if conn is not None and self._sent(conn, task):
                return
        raise self.pool.unavailable()

    def _sent(self, conn: _Connection, task: SyncTask) -> bool:
        """Send ``task`` on ``conn``; False if the next server should take it."""
        conn.protocol.submit(task)
        try:
            conn.sock.sendall(conn.protocol.data_to_send())
        except OSError as exc:
            self._read_before_close(conn)
            verdict = self.pool.send_failed(task, str(exc))
            if verdict.retry:
                conn.protocol.withdraw(task)
            self._lost(conn, verdict.reason)
            return not verdict.retry
        task.server = conn.address
        return True

    def _read_before_close(self, conn: _Connection) -> None:
        """Read what a server sent before it cut a send short (its refusal, maybe)."""
        conn.sock.setblocking(False)
        received = b""
        with contextlib.suppress(OSError):
            while chunk := conn.sock.recv(core.READ_SIZE):
                received += chunk
        with contextlib.suppress(GeartrainError):
            self._deliver(conn.protocol.receive_data(received))

    def _connection(self, address: Address, respect_backoff: bool = True) -> _Connection | None:
        conn = self._connections.get(address)
        if conn is not None:
            # Notice a server that went away before trusting the socket with a job.
            self._pump_once(0.0)
            conn = self._connections.get(address)
            if conn is not None and conn.protocol.retired:
                self._lost(conn, core.RETIRED)
                conn = None
            if conn is not None:
                return conn
        if respect_backoff and self.pool.is_down(address, time.monotonic()):
            return None
        try:
            sock = connect(address, self.tls, self.connect_timeout)
        except OSError:
            self.pool.connect_failed(address, time.monotonic())
            return None
        self.pool.connected(address)
        conn = _Connection(address, sock, self._new_protocol())
        self._connections[address] = conn
        self._selector.register(sock, selectors.EVENT_READ, conn)
        self._flush(conn)
        if self._connections.get(address) is not conn:  # died at once
            self.pool.connect_failed(address, time.monotonic())
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
        self._deliver(conn.protocol.connection_lost(f"{format_address(conn.address)}: {reason}"))

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
                data = receive(conn.sock, core.READ_SIZE)
            except OSError as exc:
                self._lost(conn, str(exc))
                continue
            if data is None:  # TLS bytes that carried no message yet
                continue
            if not data:
                self._lost(conn, "server closed the connection")
                continue
            try:
                events = conn.protocol.receive_data(data)
            except GeartrainError as exc:
                self._lost(conn, str(exc))
                continue
            self._deliver(events)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout
