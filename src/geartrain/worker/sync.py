"""Blocking Gearman worker on plain sockets: one job at a time, any number of servers."""

from __future__ import annotations

import contextlib
import logging
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Unpack

from geartrain.client.servers import Address, ServerSpec, format_address
from geartrain.client.transport import connect, receive
from geartrain.errors import GeartrainError, WorkerAborted
from geartrain.protocol import PacketType

from .core import (
    CONNECT_TIMEOUT,
    POLL_INTERVAL,
    READ_SIZE,
    Backoff,
    BaseWorker,
    Unreachable,
    WorkerSettings,
    connect_error,
)
from .job import Job, outcome
from .protocol import Assignment, ServerMessage

logger = logging.getLogger(__name__)

# These lived here first and stay importable from here.
__all__ = ["CONNECT_TIMEOUT", "POLL_INTERVAL", "Backoff", "Unreachable", "Worker", "connect_error"]


class Worker(BaseWorker):
    """A blocking Gearman worker that runs one job at a time.

    Args:
        servers: job servers (see :func:`geartrain.client.parse_servers`); the
            worker connects to all of them and takes jobs from each.
        client_id: label shown by the server's ``workers`` command.
        exceptions: report unexpected exceptions as WORK_EXCEPTION (True) or
            as WORK_FAIL (False, for clients that cannot handle exceptions).
        poll_interval: seconds after which a sleeping connection grabs anyway.
        connect_timeout: seconds allowed per TCP connect (and TLS handshake).
        tls: speak TLS: :class:`geartrain.tls.TLSOptions` or an ``ssl.SSLContext``;
            None = plain TCP.
    """

    def __init__(
        self, servers: ServerSpec | None = None, **settings: Unpack[WorkerSettings]
    ) -> None:
        super().__init__(servers, capacity=1, **settings)
        self._sockets: dict[Address, socket.socket] = {}
        self._selector = selectors.DefaultSelector()
        # While work() runs, stop() (from a signal handler or another thread)
        # writes to this pair to end select() at once rather than after up to
        # poll_interval seconds.
        self._waker: tuple[socket.socket, socket.socket] | None = None
        self._stopping = False
        self._signals = 0

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stop(self) -> None:
        """Ask :meth:`work` to return after the job it is running (callable from a signal)."""
        self._stopping = True
        self.state.accepting = False
        waker = self._waker
        if waker is not None:
            with contextlib.suppress(OSError):
                waker[0].send(b"\0")

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called (or a first signal arrived) during :meth:`work`."""
        return self._stopping

    def close(self) -> None:
        """Close every connection; the servers re-queue jobs still assigned to us."""
        for address in list(self._sockets):
            self._drop(address)

    @property
    def connected(self) -> list[Address]:
        """Servers this worker is connected to right now."""
        return list(self._sockets)

    def work(
        self,
        *,
        max_jobs: int | None = None,
        idle_timeout: float | None = None,
        max_time: float | None = None,
        handle_signals: bool = True,
    ) -> int:
        """Take and run jobs until stopped.

        Args:
            max_jobs: return after this many jobs.
            idle_timeout: return after this many seconds without a job.
            max_time: return after this many seconds (once the running job is done).
            handle_signals: in the main thread, make the first SIGTERM or
                SIGINT finish the running job and return, and the second
                abort it (raising :class:`WorkerAborted`).

        Returns:
            How many jobs were run.

        Raises:
            WorkerAborted: a second signal arrived while a job ran.
        """
        self._stopping = False
        self.state.accepting = True
        self.state.limit = max_jobs
        done = 0
        self._open_waker()
        restore = self._install_signals() if handle_signals else None
        try:
            started = last_job = last_poll = time.monotonic()
            end = None if max_time is None else started + max_time
            while not self._stopping and (max_jobs is None or done < max_jobs):
                now = time.monotonic()
                if idle_timeout is not None and now - last_job >= idle_timeout:
                    break
                if end is not None and now >= end:
                    break
                if now - last_poll >= self.poll_interval:
                    self.state.wake()
                    last_poll = now
                self._connect_due(now)
                self._flush()
                wait = self._wait_time(now, last_job, last_poll, idle_timeout)
                if end is not None:
                    wait = min(wait, max(0.0, end - now))
                for event in self._poll(wait):
                    if isinstance(event, ServerMessage):
                        self._log_message(event)
                        continue
                    self._run(event)
                    done += 1
                    last_job = time.monotonic()
        finally:
            if restore is not None:
                restore()
            self.close()
            self._close_waker()
        return done

    def _open_waker(self) -> None:
        pair = socket.socketpair()
        for sock in pair:
            sock.setblocking(False)
        self._selector.register(pair[1], selectors.EVENT_READ, None)
        self._waker = pair

    def _close_waker(self) -> None:
        pair, self._waker = self._waker, None
        if pair is not None:
            self._selector.unregister(pair[1])
            for sock in pair:
                sock.close()

    # -- internals -----------------------------------------------------------------

    def _wait_time(
        self, now: float, last_job: float, last_poll: float, idle_timeout: float | None
    ) -> float:
        limits = [last_poll + self.poll_interval - now]
        if idle_timeout is not None:
            limits.append(last_job + idle_timeout - now)
        limits.extend(due - now for due in self.backoff.due.values())
        return max(0.0, min(limits))

    def _run(self, assignment: Assignment) -> None:
        registration = self.registry.get(assignment.function)
        job = Job(
            assignment, lambda ptype, args, data: self._progress(assignment, ptype, args, data)
        )
        if registration is None:
            ptype, data = PacketType.WORK_FAIL, b""
        else:
            try:
                ptype, data = outcome(registration.func(job), exceptions=self.exceptions)
            except WorkerAborted:
                raise
            except Exception as exc:
                ptype, data = self._failed(job, exc)
        self._finish(assignment, ptype, data)

    def _connect_due(self, now: float) -> None:
        for address in self.servers:
            if address in self._sockets or self.backoff.due.get(address, 0.0) > now:
                continue
            try:
                sock = connect(address, self.tls, self.connect_timeout)
            except OSError as exc:
                self.unreachable.failed(address, connect_error(exc, self.connect_timeout), now)
                self.backoff.failed(address, now)
                continue
            self.unreachable.connected(address, now)
            self.backoff.succeeded(address)
            self._sockets[address] = sock
            self._selector.register(sock, selectors.EVENT_READ, address)
            self.state.connection_made(address)

    def _flush(self) -> None:
        for address, data in list(self.state.pending_output()):
            sock = self._sockets.get(address)  # type: ignore[call-overload]
            if sock is None:
                continue
            try:
                sock.sendall(data)
            except OSError as exc:
                logger.info("lost %s: %s", format_address(address), exc)  # type: ignore[arg-type]
                self._drop(address, reconnect=True)  # type: ignore[arg-type]

    def _poll(self, timeout: float) -> list[Assignment | ServerMessage]:
        events: list[Assignment | ServerMessage] = []
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                with contextlib.suppress(OSError):
                    key.fileobj.recv(4096)  # type: ignore[union-attr]
                continue
            address: Address = key.data
            try:
                data = receive(key.fileobj, READ_SIZE)  # type: ignore[arg-type]
            except OSError:
                data = b""
            if data is None:  # TLS bytes that carried no message yet
                continue
            if not data:
                logger.info("lost %s", format_address(address))
                self._drop(address, reconnect=True)
                continue
            try:
                events.extend(self.state.receive_data(address, data))
            except GeartrainError as exc:
                logger.warning("bad data from %s: %s", format_address(address), exc)
                self._drop(address, reconnect=True)
        return events

    def _drop(self, address: Address, reconnect: bool = False) -> None:
        sock = self._sockets.pop(address, None)
        if sock is not None:
            self._selector.unregister(sock)
            sock.close()
        self.state.connection_lost(address)
        if reconnect:
            self.backoff.failed(address, time.monotonic())

    def _install_signals(self) -> Callable[[], None] | None:
        if threading.current_thread() is not threading.main_thread():
            return None
        self._signals = 0

        def handler(signum: int, frame: FrameType | None) -> None:
            self._signals += 1
            if self._signals == 1:
                logger.info("signal %d: finishing the running job, then exiting", signum)
                self.stop()
            else:
                raise WorkerAborted(f"aborted by signal {signum}")

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore
