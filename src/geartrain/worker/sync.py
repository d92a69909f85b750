"""Blocking Gearman worker on plain sockets: one job at a time, any number of servers."""

from __future__ import annotations

import contextlib
import logging
import random
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar, overload

from geartrain.client.core import to_bytes
from geartrain.client.servers import Address, ServerSpec, format_address, parse_servers
from geartrain.errors import GeartrainError, WorkerAborted, WorkFail
from geartrain.protocol import PacketType

from .core import Assignment, ServerMessage, WorkerState
from .job import Job, Registration, outcome, timeout_ms

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: Seconds between re-polls of a sleeping connection. gearmand 1.1.x does not
#: wake workers when an epoch job becomes due; a re-poll picks such jobs up.
POLL_INTERVAL = 10.0
#: First and largest delay, in seconds, between reconnection attempts.
RECONNECT_MIN = 0.5
RECONNECT_MAX = 30.0
CONNECT_TIMEOUT = 5.0
#: Seconds between repeated reports that a server still cannot be reached.
REPORT_EVERY = 60.0
_READ_SIZE = 256 * 1024


class Backoff:
    """Exponential reconnection delays with jitter, per server."""

    def __init__(self, first: float = RECONNECT_MIN, largest: float = RECONNECT_MAX) -> None:
        self.first = first
        self.largest = largest
        self._delay: dict[Address, float] = {}
        self.due: dict[Address, float] = {}

    def failed(self, address: Address, now: float) -> None:
        delay = min(self._delay.get(address, self.first / 2) * 2, self.largest)
        self._delay[address] = delay
        # Jitter spreads reconnections of many workers after a server restart.
        self.due[address] = now + delay * random.uniform(0.5, 1.5)

    def succeeded(self, address: Address) -> None:
        self._delay.pop(address, None)
        self.due.pop(address, None)


def connect_error(exc: BaseException, timeout: float) -> str:
    """What a failed connection attempt says, for the log (a timeout has no text)."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"no answer within {timeout:g}s"
    return str(exc) or type(exc).__name__


@dataclass
class _Outage:
    since: float
    reported: float
    error: str
    attempts: int = 1


class Unreachable:
    """Reports servers that cannot be reached, without flooding the log.

    A worker retries a down server every few seconds for as long as it runs. The
    first failure is logged as a warning with the address and the error; after that
    one line every ``every`` seconds (or as soon as the error changes) counts the
    attempts, and reaching the server again is logged once.
    """

    def __init__(self, every: float = REPORT_EVERY) -> None:
        self.every = every
        self._outages: dict[Address, _Outage] = {}

    def failed(self, address: Address, error: str, now: float) -> None:
        outage = self._outages.get(address)
        if outage is None:
            self._outages[address] = _Outage(since=now, reported=now, error=error)
            logger.warning("cannot connect to %s: %s; retrying", format_address(address), error)
            return
        outage.attempts += 1
        if error != outage.error or now - outage.reported >= self.every:
            outage.reported, outage.error = now, error
            logger.warning(
                "still cannot connect to %s after %d attempts in %.0fs: %s; retrying",
                format_address(address),
                outage.attempts,
                now - outage.since,
                error,
            )

    def connected(self, address: Address, now: float) -> None:
        outage = self._outages.pop(address, None)
        if outage is not None:
            logger.warning(
                "connected to %s after %d failed attempts in %.0fs",
                format_address(address),
                outage.attempts,
                now - outage.since,
            )


class BaseWorker:
    """Registration bookkeeping shared by :class:`Worker` and ``AsyncWorker``."""

    def __init__(
        self,
        servers: ServerSpec | None,
        *,
        capacity: int,
        client_id: str | bytes | None,
        exceptions: bool,
        poll_interval: float,
    ) -> None:
        self.servers = parse_servers(servers)
        self.exceptions = exceptions
        self.poll_interval = poll_interval
        self.state = WorkerState(capacity, client_id)
        self.registry: dict[bytes, Registration] = {}
        self.jobs_done = 0
        self.unreachable = Unreachable()

    @overload
    def register(self, function: str | bytes, func: F, *, timeout: float | None = None) -> F: ...

    @overload
    def register(
        self, function: str | bytes, func: None = None, *, timeout: float | None = None
    ) -> Callable[[F], F]: ...

    def register(
        self, function: str | bytes, func: F | None = None, *, timeout: float | None = None
    ) -> F | Callable[[F], F]:
        """Register a function; usable as a call or as a decorator.

        Args:
            function: the Gearman function name.
            func: called with a :class:`Job`; returns the result (bytes, str or
                None). Raising :class:`WorkFail` sends WORK_FAIL, any other
                exception WORK_EXCEPTION.
            timeout: seconds the server lets one job run (CAN_DO_TIMEOUT, sent
                in milliseconds); on expiry the server re-queues the job.

        Returns:
            ``func``, or a decorator when ``func`` is omitted.
        """
        if func is None:

            def decorator(f: F) -> F:
                self.register(function, f, timeout=timeout)
                return f

            return decorator
        name = to_bytes(function)
        self.registry[name] = Registration(func, timeout_ms(timeout))
        self.state.register(name, self.registry[name].timeout_ms)
        return func

    def unregister(self, function: str | bytes) -> None:
        """Stop taking jobs for a function (CANT_DO)."""
        name = to_bytes(function)
        self.registry.pop(name, None)
        self.state.unregister(name)

    def _log_message(self, message: ServerMessage) -> None:
        logger.warning(
            "server error on %s: %s %s",
            message.connection,
            message.code.decode(errors="replace"),
            message.text.decode(errors="replace"),
        )


class Worker(BaseWorker):
    """A blocking Gearman worker that runs one job at a time.

    Args:
        servers: job servers (see :func:`geartrain.client.parse_servers`); the
            worker connects to all of them and takes jobs from each.
        client_id: label shown by the server's ``workers`` command.
        exceptions: report unexpected exceptions as WORK_EXCEPTION (True) or
            as WORK_FAIL (False, for clients that cannot handle exceptions).
        poll_interval: seconds after which a sleeping connection grabs anyway.
        connect_timeout: seconds allowed per TCP connect.
    """

    def __init__(
        self,
        servers: ServerSpec | None = None,
        *,
        client_id: str | bytes | None = None,
        exceptions: bool = True,
        poll_interval: float = POLL_INTERVAL,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        super().__init__(
            servers,
            capacity=1,
            client_id=client_id,
            exceptions=exceptions,
            poll_interval=poll_interval,
        )
        self.connect_timeout = connect_timeout
        self.backoff = Backoff()
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
                if not isinstance(exc, WorkFail):  # a deliberate WORK_FAIL needs no traceback
                    logger.exception("job %r failed", job)
                ptype, data = outcome(error=exc, exceptions=self.exceptions)
        self.state.finish(assignment, ptype, data)
        self.jobs_done += 1
        self._flush()

    def _progress(
        self, job: Assignment, ptype: PacketType, args: tuple[bytes, ...], data: bytes
    ) -> None:
        self.state.progress(job, ptype, *args, data=data)
        self._flush()

    def _connect_due(self, now: float) -> None:
        for address in self.servers:
            if address in self._sockets or self.backoff.due.get(address, 0.0) > now:
                continue
            try:
                sock = socket.create_connection(address, timeout=self.connect_timeout)
            except OSError as exc:
                self.unreachable.failed(address, connect_error(exc, self.connect_timeout), now)
                self.backoff.failed(address, now)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
                data = key.fileobj.recv(_READ_SIZE)  # type: ignore[union-attr]
            except OSError:
                data = b""
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
