"""Jobs, functions and peers: the records the scheduler works on.

Everything here is a plain ``__slots__`` record. A server holds a few of these per
connection and function, and one per job, so their size and construction cost
decide memory per queued job and submit throughput.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import TYPE_CHECKING, Any

from . import replies
from .counters import DurationHistogram

if TYPE_CHECKING:
    import asyncio

    from geartrain.protocol.codec import Payload

    from .permissions import Rights
    from .retry import RetryPolicy
    from .scheduler import Scheduler
    from .tls import Identity
    from .writes import WriteGroup

try:
    from mypy_extensions import mypyc_attr
except ImportError:
    # mypyc reads the decorator at compile time; at run time it changes nothing, so
    # mypy_extensions (a build requirement) need not be installed.
    def mypyc_attr(*attrs: Any, **kwattrs: Any) -> Any:  # type: ignore[misc]
        return lambda cls: cls


NO_CLIENTS: tuple[()] = ()


class JobState(enum.IntEnum):
    STORING = 0  # background job being written to the persistent queue, not yet confirmed
    SCHEDULED = 1  # epoch job whose time has not come
    QUEUED = 2  # runnable, in its function's queue
    RUNNING = 3  # assigned to a worker
    ENDED = 4  # completed, failed, cancelled or abandoned; no longer indexed


class Job:
    """One job as the server holds it in memory."""

    __slots__ = (
        "background",
        "clients",
        "data",
        "denominator",
        "due",
        "function",
        "handle",
        "key",
        "numerator",
        "priority",
        "reducer",
        "retries",
        "since_ns",
        "state",
        "store_id",
        "streamed",
        "timer",
        "unique",
        "when",
        "worker",
        "write",
    )

    # An epoch job's exact due time (Unix seconds, fractions allowed); set together
    # with a non-zero ``when`` and only then, so other jobs do not pay for it.
    due: float
    # When the job entered its queue, then when a worker took it (``Scheduler.now_ns``),
    # for the wait and run time histograms. Set by the scheduler, not here: every job it
    # makes gets it where it is queued.
    since_ns: int

    def __init__(
        self,
        handle: bytes,
        function: Function,
        unique: bytes,
        data: Payload,
        priority: int,
        background: bool,
    ) -> None:
        self.handle = handle
        self.function = function
        self.unique = unique
        self.data = data
        self.priority = priority
        self.background = background
        self.key: object = None  # coalescing key in function.uniques, None if not coalescible
        self.reducer = b""
        self.when = 0
        self.retries = 0
        self.numerator = 0
        self.denominator = 0
        # Something of this job (WORK_DATA, WORK_WARNING, WORK_STATUS) reached a client:
        # a foreground retry would repeat it, so a failure from here on is final.
        self.streamed = False
        # Most jobs are background jobs nobody waits for: share one empty tuple
        # rather than give each its own list (less memory, one object fewer for the
        # cyclic collector to track per queued job).
        self.clients: list[Peer] | tuple[()] = NO_CLIENTS
        self.worker: Peer | None = None
        self.state = JobState.QUEUED
        self.store_id = 0  # id in the persistent queue, 0 when not stored
        self.write: WriteGroup | None = None  # the store write a STORING job waits on
        self.timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<Job {self.handle!r} {self.function.name!r} {self.state.name}>"


class Function:
    """A function name with its three priority queues and registered workers."""

    __slots__ = (
        "coalesced",
        "completed",
        "dead_lettered",
        "exceptions",
        "failed",
        "max_queue",
        "name",
        "queued",
        "queues",
        "ran",
        "requeued",
        "retried",
        "retry",
        "running",
        "scheduled",
        "sleepers",
        "storing",
        "submitted",
        "timed_out",
        "uniques",
        "waited",
        "workers",
    )

    def __init__(self, name: bytes) -> None:
        self.name = name
        # Lazy deletion: a cancelled or abandoned job stays in its deque until a
        # grab reaches it, but leaves the counts at once, so every count below is
        # exact and "is there work?" is O(1).
        self.queues: tuple[deque[Job], deque[Job], deque[Job]] = (deque(), deque(), deque())
        self.queued = [0, 0, 0]  # live queued jobs per priority
        self.running = 0
        self.scheduled = 0  # epoch jobs not yet due
        # Background jobs being written to the persistent queue (state STORING). All
        # but epoch jobs already stand in their place in ``queues``, holding back
        # every job behind them.
        self.storing = 0
        self.max_queue = [0, 0, 0]  # 0 = unlimited, per priority
        self.workers: dict[Peer, None] = {}  # registered connections, in order
        self.sleepers: dict[Peer, None] = {}  # sleeping and not yet woken
        self.uniques: dict[object, Job] = {}
        # Totals for the metrics, per priority (0 high, 1 normal, 2 low) like ``queued``.
        self.submitted = [0, 0, 0]  # new jobs (a coalesced submission is not one)
        self.coalesced = [0, 0, 0]  # submissions joined to a job already known
        self.completed = [0, 0, 0]
        self.failed = [0, 0, 0]  # WORK_FAIL, or given up after job_retries attempts
        self.exceptions = [0, 0, 0]
        self.timed_out = [0, 0, 0]  # CAN_DO_TIMEOUT expired (the job is requeued)
        self.requeued = [0, 0, 0]  # back in the queue: worker lost, timeout, CANT_DO
        self.retried = [0, 0, 0]  # failed, run again after the retry policy's backoff
        self.dead_lettered = [0, 0, 0]  # failed for good, kept in the dead-letter queue
        self.waited = DurationHistogram()  # queued until a worker took it
        self.ran = DurationHistogram()  # from assignment to its result
        # The retry policy of this function's background jobs, resolved once when the
        # function is first seen (None: a failed job ends, as on gearmand).
        self.retry: RetryPolicy | None = None

    @property
    def total(self) -> int:
        """Jobs of this function in memory: what ``status`` calls TOTAL."""
        q = self.queued
        return q[0] + q[1] + q[2] + self.running + self.scheduled + self.storing


# Compiled by mypyc, yet subclassed by interpreted classes: the connection (an asyncio
# protocol), the HTTP gateway's peer and the tests' fakes.
@mypyc_attr(allow_interpreted_subclasses=True)
class Peer:
    """Per-connection Gearman state, and all that packet handlers may use of a connection.

    A connection may be a client (it submits and waits), a worker (it registers
    functions and grabs), or both at once. The socket-bound connection class
    subclasses this; handlers (``dispatch``) see only what is here, so they run
    against any subclass, such as one that records what it was sent.
    """

    __slots__ = (
        "abilities",
        "ability_list",
        "assigned",
        "client_id",
        "ended",
        "exceptions",
        "fd",
        "identity",
        "ip",
        "noop_sent",
        "rights",
        "rotation",
        "scheduler",
        "sleeping",
        "waiting",
    )

    #: The scheduler of the server this peer is connected to.
    scheduler: Scheduler

    def __init__(self) -> None:
        self.client_id = b"-"
        self.exceptions = False
        self.fd = -1  # the socket's descriptor, as `workers` shows it
        self.ip = "-"
        # Who the peer's verified TLS client certificate says it is; None without one.
        self.identity: Identity | None = None
        # What a permissions file lets this peer do; None without one (everything).
        self.rights: Rights | None = None
        # worker side
        self.abilities: dict[Function, int] = {}  # function -> timeout in ms (0 = none)
        self.ability_list: list[Function] = []  # same keys, for round-robin by index
        self.rotation = 0
        self.sleeping = False
        self.noop_sent = False
        self.assigned: dict[Job, None] = {}
        # Handles this worker just finished, so a duplicate WORK_FAIL after
        # WORK_EXCEPTION (Perl Gearman::Worker does this) is ignored, not an ERROR.
        self.ended: deque[bytes] = deque(maxlen=16)
        # client side
        self.waiting: dict[Job, None] = {}

    def send(self, packet: bytes) -> None:
        """Queue bytes for the peer (the connection flushes once per loop turn)."""
        raise NotImplementedError

    def send_parts(self, head: bytes, data: Payload) -> None:
        """Queue a packet whose large data is passed through without a copy."""
        raise NotImplementedError

    def send_after(self, write: WriteGroup, reply: bytes) -> None:
        """Send ``reply`` once ``write`` settles, holding later output behind it."""
        raise NotImplementedError

    def send_error(self, code: bytes, text: bytes) -> None:
        self.send(replies.error(code, text))
