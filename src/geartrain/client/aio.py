# ruff: noqa: ASYNC109 - a ``timeout`` argument mirrors the blocking client's API and
# defaults to the client-wide timeout, which ``asyncio.timeout`` at the call site cannot.
"""asyncio Gearman client.

Each server connection has one reader task that feeds the sans-I/O
:class:`ClientProtocol` and wakes whoever waits on the tasks it updates. Any
number of coroutines may submit and wait concurrently on one
:class:`AsyncClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Generator, Iterable, Sequence
from typing import Any, Unpack

from geartrain.client.transport import open_stream
from geartrain.errors import ConnectionLost, GeartrainError, GeartrainTimeout

from . import core
from .core import to_bytes as _bytes
from .pool import StatusSearch
from .servers import Address, format_address


class AsyncTask(core.Task):
    """A :class:`Task` of an :class:`AsyncClient`; ``await task`` returns its result."""

    _client: AsyncClient
    _changed: asyncio.Event

    async def wait(self, timeout: float | None = None) -> None:
        """Wait until the task is done (created, for a background task).

        Raises:
            GeartrainTimeout: not done within ``timeout`` seconds.
        """
        await self._client.wait([self], timeout)

    async def result(self, timeout: float | None = None) -> bytes:
        """Wait for the task and return its result (the handle for background tasks).

        Raises:
            JobFailed, JobException, ServerError, ConnectionLost, GeartrainTimeout:
                as :meth:`geartrain.client.SyncTask.result`.
        """
        await self.wait(timeout)
        return self.outcome()

    def __await__(self) -> Generator[Any, None, bytes]:
        return self.result().__await__()

    async def __aiter__(self) -> AsyncIterator[core.Update]:
        """Yield the task's updates as they arrive, ending after the last one."""
        while not self._drained:
            if self.updates:
                yield self.updates.popleft()
            else:
                await self._next_change()

    async def _next_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    async def wait_created(self, timeout: float | None = None) -> bytes:
        """Wait until the server acknowledged the job; return its handle.

        Raises:
            ServerError, ConnectionLost: the submission failed.
            GeartrainTimeout: no JOB_CREATED within ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(self._client._timeout(timeout)):
                while self.handle is None and not self.done:
                    await self._next_change()
        except TimeoutError:
            raise GeartrainTimeout("timed out waiting for the job server") from None
        if self.handle is None:
            self.outcome()  # raises why
        assert self.handle is not None
        return self.handle

    async def status(self, timeout: float | None = None) -> core.JobStatus:
        """GET_STATUS on the server that holds this task."""
        handle = await self.wait_created(timeout)
        if self.server is None:
            raise GeartrainError("the task has no server")
        return await self._client.get_status(handle, server=self.server, timeout=timeout)


class _Connection:
    def __init__(
        self,
        address: Address,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        protocol: core.ClientProtocol,
    ) -> None:
        self.address = address
        self.reader = reader
        self.writer = writer
        self.protocol = protocol
        self.reader_task: asyncio.Task[None] | None = None
        # The task being written: if the connection dies meanwhile, it is
        # withdrawn rather than reported lost, so the next server may take it.
        self.sending: core.Task | None = None

    @property
    def usable(self) -> bool:
        return not self.protocol.closed and not self.writer.is_closing()


class AsyncClient(core.BaseClient):
    """An asyncio Gearman client for one or more job servers.

    Takes the same arguments as :class:`geartrain.client.Client`. Use it as an
    ``async with`` block, or call :meth:`close` when done.
    """

    def _init_io(self) -> None:
        self._connections: dict[Address, _Connection] = {}
        self._connecting: dict[Address, asyncio.Lock] = {}
        # Futures of the requests (status, echo) waiting for their reply, by id(reply).
        self._replies: dict[int, asyncio.Future[None]] = {}

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection; tasks still waiting become LOST."""
        for conn in list(self._connections.values()):
            self._lost(conn, "client closed")
            if conn.reader_task is not None:
                conn.reader_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await conn.reader_task
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()

    # -- submitting ----------------------------------------------------------------

    async def submit(
        self, function: str | bytes, payload: str | bytes = b"", **options: Unpack[core.SubmitArgs]
    ) -> AsyncTask:
        """Send a job and return its task without waiting for JOB_CREATED.

        Arguments are those of :meth:`geartrain.client.Client.submit`.

        Raises:
            NoServerAvailable: no server accepted a connection.
        """
        task = self._new_task(AsyncTask, function, payload, options)
        task._client = self
        task._changed = asyncio.Event()
        await self._send_task(task)
        return task

    async def call(
        self, function: str | bytes, payload: str | bytes = b"", **options: Unpack[core.CallArgs]
    ) -> bytes:
        """Run a foreground job and return its result (raises like :meth:`AsyncTask.result`)."""
        task = await self.submit(function, payload, **core.foreground_args(options))
        return await task.result(self._timeout(options.get("timeout")))

    async def submit_background(
        self,
        function: str | bytes,
        payload: str | bytes = b"",
        **options: Unpack[core.BackgroundArgs],
    ) -> bytes:
        """Queue a background job and return its handle once the server has it."""
        task = await self.submit(function, payload, **core.background_args(options))
        return await task.result(self._timeout(options.get("timeout")))

    async def wait(self, tasks: Iterable[AsyncTask], timeout: float | None = None) -> None:
        """Wait until every task is done; failures stay on the tasks.

        Raises:
            GeartrainTimeout: some task is not done within ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(self._timeout(timeout)):
                for task in tasks:
                    while not task.done:
                        await task._next_change()
        except TimeoutError:
            raise GeartrainTimeout("timed out waiting for the job server") from None

    async def gather(
        self, tasks: Sequence[AsyncTask], timeout: float | None = None
    ) -> list[bytes | GeartrainError]:
        """Wait for all tasks; return each result, or the exception that ended it."""
        await self.wait(tasks, timeout)
        return core.outcomes(tasks)

    async def as_completed(
        self, tasks: Iterable[AsyncTask], timeout: float | None = None
    ) -> AsyncIterator[AsyncTask]:
        """Yield tasks as they finish, in completion order."""
        queue: asyncio.Queue[AsyncTask] = asyncio.Queue()
        waiters = [asyncio.ensure_future(_done_then(task, queue)) for task in tasks]
        try:
            async with asyncio.timeout(self._timeout(timeout)):
                for _ in waiters:
                    yield await queue.get()
        except TimeoutError:
            raise GeartrainTimeout("timed out waiting for the job server") from None
        finally:
            for waiter in waiters:
                waiter.cancel()

    # -- queries -------------------------------------------------------------------

    async def get_status(
        self, handle: str | bytes, *, server: Address | None = None, timeout: float | None = None
    ) -> core.JobStatus:
        """GET_STATUS for a handle (see :meth:`geartrain.client.Client.get_status`)."""
        servers = [server] if server is not None else self.servers
        return await self._ask_status(core.RequestKind.STATUS, _bytes(handle), servers, timeout)

    async def get_status_unique(
        self, unique: str | bytes, *, timeout: float | None = None
    ) -> core.JobStatus:
        """GET_STATUS_UNIQUE, asking servers in the order a job with that unique tries them."""
        key = _bytes(unique)
        return await self._ask_status(
            core.RequestKind.STATUS_UNIQUE, key, self.pool.order(key), timeout
        )

    async def echo(self, data: str | bytes = b"ping", *, timeout: float | None = None) -> bytes:
        """ECHO_REQ to the first reachable server; returns the echoed bytes."""
        for address in self.servers:
            conn = await self._connection(address)
            if conn is None:
                continue
            return (
                await self._request(conn, core.RequestKind.ECHO, _bytes(data), timeout)
            ).echoed()
        raise self.pool.unavailable()

    # -- internals -----------------------------------------------------------------

    async def _request(
        self, conn: _Connection, kind: core.RequestKind, argument: bytes, timeout: float | None
    ) -> core.Reply:
        reply = conn.protocol.request(kind, argument)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._replies[id(reply)] = future
        conn.writer.write(conn.protocol.data_to_send())
        try:
            async with asyncio.timeout(self._timeout(timeout)):
                await future
        except TimeoutError:
            raise GeartrainTimeout("timed out waiting for the job server") from None
        finally:
            self._replies.pop(id(reply), None)
        return reply

    async def _ask_status(
        self, kind: core.RequestKind, key: bytes, servers: Sequence[Address], timeout: float | None
    ) -> core.JobStatus:
        search = StatusSearch(self.pool)
        for address in servers:
            conn = await self._connection(address)
            if conn is None:
                continue
            reply = await self._request(conn, kind, key, timeout)
            with contextlib.suppress(ConnectionLost):
                if search.add(reply.status()):
                    break
        return search.result()

    async def _send_task(self, task: AsyncTask) -> None:
        for address, respect_backoff in self.pool.attempts(task.unique):
            conn = await self._connection(address, respect_backoff)
            if conn is not None and await self._sent(conn, task):
                return
        raise self.pool.unavailable()

    async def _sent(self, conn: _Connection, task: AsyncTask) -> bool:
        """Send ``task`` on ``conn``; False if the next server should take it."""
        conn.protocol.submit(task)
        conn.sending = task
        conn.writer.write(conn.protocol.data_to_send())
        try:
            await conn.writer.drain()
        except OSError as exc:
            # drain() fails only when the connection died before the packet was
            # handed whole to the kernel; the reader task has read what came before.
            verdict = self.pool.send_failed(task, str(exc))
            self._lost(conn, verdict.reason)
            return not verdict.retry
        finally:
            conn.sending = None
        task.server = conn.address
        return True

    async def _connection(
        self, address: Address, respect_backoff: bool = True
    ) -> _Connection | None:
        lock = self._connecting.setdefault(address, asyncio.Lock())
        async with lock:
            conn = self._connections.get(address)
            if conn is not None and conn.protocol.retired:
                self._lost(conn, core.RETIRED)
                conn = None
            if conn is not None and conn.usable:
                return conn
            loop = asyncio.get_running_loop()
            if respect_backoff and self.pool.is_down(address, loop.time()):
                return None
            try:
                async with asyncio.timeout(self.connect_timeout):
                    reader, writer = await open_stream(address, self.tls, core.READ_SIZE)
            except (OSError, TimeoutError):
                self.pool.connect_failed(address, loop.time())
                return None
            self.pool.connected(address)
            conn = _Connection(address, reader, writer, self._new_protocol())
            self._connections[address] = conn
            writer.write(conn.protocol.data_to_send())
            conn.reader_task = asyncio.create_task(self._read(conn))
            return conn

    async def _read(self, conn: _Connection) -> None:
        reason = "server closed the connection"
        try:
            while data := await conn.reader.read(core.READ_SIZE):
                self._deliver(conn.protocol.receive_data(data))
        except (OSError, GeartrainError) as exc:
            reason = str(exc)
        self._lost(conn, reason)

    def _lost(self, conn: _Connection, reason: str) -> None:
        if self._connections.get(conn.address) is conn:
            del self._connections[conn.address]
        conn.writer.close()
        if conn.sending is not None:
            conn.protocol.withdraw(conn.sending)
        if not conn.protocol.closed:
            lost = conn.protocol.connection_lost(f"{format_address(conn.address)}: {reason}")
            self._deliver(lost)

    def _answered(self, reply: core.Reply) -> None:
        future = self._replies.get(id(reply))
        if future is not None and not future.done():
            future.set_result(None)

    def _updated(self, task: core.Task) -> None:
        if isinstance(task, AsyncTask):
            task._changed.set()


async def _done_then(task: AsyncTask, queue: asyncio.Queue[AsyncTask]) -> None:
    while not task.done:
        await task._next_change()
    queue.put_nowait(task)
