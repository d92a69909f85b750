"""What the blocking and asyncio workers share, so that they cannot drift apart.

:class:`BaseWorker` holds the registered functions, the server list and the settings;
:class:`Backoff` and :class:`Unreachable` decide when to retry a server and when to say it
is unreachable. The per-connection protocol and the worker's slots are in
:mod:`geartrain.worker.protocol`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar, Unpack, overload

from geartrain.client.core import to_bytes
from geartrain.client.servers import Address, ServerSpec, format_address, parse_servers
from geartrain.errors import WorkFail
from geartrain.protocol import PacketType
from geartrain.tls import ClientTLS, TLSArgument

from . import job as _job
from .job import Job, Registration, outcome
from .protocol import Assignment, ServerMessage, WorkerState

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


#: Seconds between re-polls of a sleeping connection. gearmand 1.1.x does not
#: wake workers when an epoch job becomes due; a re-poll picks such jobs up.
POLL_INTERVAL = 10.0
#: First and largest delay, in seconds, between reconnection attempts.
RECONNECT_MIN = 0.5
RECONNECT_MAX = 30.0
#: Seconds allowed for each TCP connect to a job server.
CONNECT_TIMEOUT = 5.0
#: Seconds between repeated reports that a server still cannot be reached.
REPORT_EVERY = 60.0
#: Bytes read from a server at a time (as the client reads).
READ_SIZE = 256 * 1024


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


class WorkerSettings(TypedDict, total=False):
    """Keyword arguments both workers take; documented on :class:`geartrain.worker.Worker`.

    Defaults: ``client_id=None``, ``exceptions=True``, ``poll_interval=POLL_INTERVAL``,
    ``connect_timeout=CONNECT_TIMEOUT``, ``tls=None`` (plain TCP).
    """

    client_id: str | bytes | None
    exceptions: bool
    poll_interval: float
    connect_timeout: float
    tls: TLSArgument


class BaseWorker:
    """Registration bookkeeping shared by :class:`Worker` and ``AsyncWorker``."""

    def __init__(
        self, servers: ServerSpec | None, *, capacity: int, **settings: Unpack[WorkerSettings]
    ) -> None:
        self.servers = parse_servers(servers)
        self.exceptions = settings.get("exceptions", True)
        self.poll_interval = settings.get("poll_interval", POLL_INTERVAL)
        self.connect_timeout = settings.get("connect_timeout", CONNECT_TIMEOUT)
        self.tls = ClientTLS.of(settings.get("tls"))
        self.state = WorkerState(capacity, settings.get("client_id"))
        self.registry: dict[bytes, Registration] = {}
        self.jobs_done = 0
        self.backoff = Backoff()
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
        self.registry[name] = Registration(func, _job.timeout_ms(timeout))
        self.state.register(name, self.registry[name].timeout_ms)
        return func

    def unregister(self, function: str | bytes) -> None:
        """Stop taking jobs for a function (CANT_DO)."""
        name = to_bytes(function)
        self.registry.pop(name, None)
        self.state.unregister(name)

    def _flush(self) -> None:
        """Send what the protocol state queued (each I/O layer its own way)."""
        raise NotImplementedError

    def _failed(self, job: Job, exc: Exception) -> tuple[PacketType, bytes]:
        """The packet that reports a worker function's exception, logged unless deliberate."""
        if not isinstance(exc, WorkFail):  # a deliberate WORK_FAIL needs no traceback
            logger.exception("job %r failed", job)
        return outcome(error=exc, exceptions=self.exceptions)

    def _finish(self, assignment: Assignment, ptype: PacketType, data: bytes) -> None:
        self.state.finish(assignment, ptype, data)
        self.jobs_done += 1
        self._flush()

    def _progress(
        self, job: Assignment, ptype: PacketType, args: tuple[bytes, ...], data: bytes
    ) -> None:
        self.state.progress(job, ptype, *args, data=data)
        self._flush()

    def _log_message(self, message: ServerMessage) -> None:
        logger.warning(
            "server error on %s: %s %s",
            message.connection,
            message.code.decode(errors="replace"),
            message.text.decode(errors="replace"),
        )
