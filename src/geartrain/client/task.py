"""What a client submits and hears back: tasks, their updates and job statuses.

Plain data and the rules for turning a submission into its SUBMIT packet; no I/O.
"""

from __future__ import annotations

import enum
import math
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from geartrain.errors import GeartrainError, JobException, JobFailed
from geartrain.protocol import Packet, PacketType, Priority
from geartrain.protocol.codec import encode_request
from geartrain.protocol.constants import MAX_UNIQUE_SIZE

P = PacketType

#: (priority, background) -> the SUBMIT packet that carries it.
SUBMIT_TYPES: dict[tuple[Priority, bool], PacketType] = {
    (Priority.HIGH, False): P.SUBMIT_JOB_HIGH,
    (Priority.NORMAL, False): P.SUBMIT_JOB,
    (Priority.LOW, False): P.SUBMIT_JOB_LOW,
    (Priority.HIGH, True): P.SUBMIT_JOB_HIGH_BG,
    (Priority.NORMAL, True): P.SUBMIT_JOB_BG,
    (Priority.LOW, True): P.SUBMIT_JOB_LOW_BG,
}


def to_bytes(value: bytes | bytearray | memoryview | str) -> bytes:
    """Payloads and names are bytes; ``str`` is accepted and encoded as UTF-8."""
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


def epoch_field(when: float, subsecond: bool = False) -> bytes:
    """The SUBMIT_JOB_EPOCH time field for ``when`` (Unix seconds): never earlier than asked.

    gearmand reads the field with ``strtoll``, so it must be whole seconds there, and
    ``when`` is rounded up to the next whole second. With ``subsecond`` (for servers
    known to read fractions, as geartrain does) it is rounded up to the millisecond and
    sent as decimal text, e.g. ``1700000000.250``.

    Raises:
        ValueError: ``when`` is not a finite number.
    """
    if not math.isfinite(when):
        raise ValueError(f"epoch time must be a finite number, not {when!r}")
    if subsecond and when > 0:
        # The decimal the caller wrote (repr), not the binary float's longer expansion,
        # so that 0.1 s past a second is 100 ms and not 101 ms.
        millis = int((Decimal(repr(when)) * 1000).to_integral_value(ROUND_CEILING))
        seconds, fraction = divmod(millis, 1000)
        if fraction:
            return b"%d.%03d" % (seconds, fraction)
        return b"%d" % seconds
    return b"%d" % math.ceil(when)


class TaskState(enum.Enum):
    """Where a submitted job stands, as far as this client knows."""

    NEW = "new"  #: not sent yet
    SUBMITTED = "submitted"  #: sent, JOB_CREATED not received yet
    CREATED = "created"  #: the server queued it (final for background jobs)
    COMPLETE = "complete"  #: WORK_COMPLETE received
    FAILED = "failed"  #: WORK_FAIL received
    EXCEPTION = "exception"  #: WORK_EXCEPTION received
    REJECTED = "rejected"  #: the server answered the submission with ERROR
    LOST = "lost"  #: the connection broke; the job's fate is unknown


_FINAL = frozenset(
    {TaskState.COMPLETE, TaskState.FAILED, TaskState.EXCEPTION, TaskState.REJECTED, TaskState.LOST}
)


class UpdateKind(enum.Enum):
    """What an :class:`Update` reports."""

    CREATED = "created"
    DATA = "data"
    WARNING = "warning"
    STATUS = "status"
    COMPLETE = "complete"
    FAIL = "fail"
    EXCEPTION = "exception"
    REJECTED = "rejected"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class Update:
    """One thing that happened to a task.

    Attributes:
        task: the task concerned.
        kind: what happened.
        data: WORK_DATA / WORK_WARNING / WORK_COMPLETE / WORK_EXCEPTION payload.
        numerator: WORK_STATUS numerator.
        denominator: WORK_STATUS denominator.
    """

    task: Task
    kind: UpdateKind
    data: bytes = b""
    numerator: int = 0
    denominator: int = 0


TaskCallback = Callable[[Update], object]


class Task:
    """One job submitted by a client, and everything heard about it so far.

    Attributes:
        function: the Gearman function name.
        payload: the job's data.
        unique: the unique id sent (generated for background jobs when absent).
        priority: queue priority.
        background: whether the client detaches after JOB_CREATED.
        when: Unix time before which the job must not run (epoch jobs), or None.
        subsecond_epoch: send ``when`` to the millisecond (servers that read
            fractions, such as geartrain) rather than rounded up to whole seconds.
        handle: the server's job handle, once JOB_CREATED arrived.
        server: ``(host, port)`` of the server the job went to.
        state: see :class:`TaskState`.
        value: the WORK_COMPLETE payload, once it arrived.
        error: why the task ended without a result.
        numerator, denominator: the last WORK_STATUS.
        updates: every update not consumed yet by iterating over the task.
    """

    def __init__(
        self,
        function: bytes | str,
        payload: bytes | str = b"",
        *,
        unique: bytes | str | None = None,
        priority: Priority = Priority.NORMAL,
        background: bool = False,
        when: float | None = None,
        subsecond_epoch: bool = False,
        callback: TaskCallback | None = None,
    ) -> None:
        self.function = to_bytes(function)
        self.payload = to_bytes(payload)
        if when is not None:
            # Epoch jobs are background, normal priority by definition (SUBMIT_JOB_EPOCH).
            background, priority = True, Priority.NORMAL
        if unique is None:
            # Like libgearman: a background job with no unique gets a UUID so that
            # persistent queues keyed on (function, unique) do not collide.
            unique = str(uuid.uuid4()) if background else b""
        self.unique = to_bytes(unique)
        if len(self.unique) > MAX_UNIQUE_SIZE:
            raise ValueError(f"unique id longer than {MAX_UNIQUE_SIZE} bytes")
        if b"\0" in self.function or b"\0" in self.unique:
            raise ValueError("function names and unique ids cannot contain NUL bytes")
        self.priority = Priority(priority)
        self.background = background
        self.when = when
        self.subsecond_epoch = subsecond_epoch
        # Computed now so that a bad time is refused by submit(), not when sending.
        self._epoch = None if when is None else epoch_field(when, subsecond_epoch)
        self.callback = callback
        self.handle: bytes | None = None
        self.server: tuple[str, int] | None = None
        self.state = TaskState.NEW
        self.value: bytes | None = None
        self.error: GeartrainError | None = None
        self.numerator = 0
        self.denominator = 0
        self.updates: deque[Update] = deque()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.function!r} unique={self.unique!r} "
            f"handle={self.handle!r} {self.state.value}>"
        )

    @property
    def done(self) -> bool:
        """True once nothing more will be heard about this task."""
        if self.state in _FINAL:
            return True
        return self.background and self.state is TaskState.CREATED

    @property
    def _drained(self) -> bool:
        """Done, and every update taken: iterating over the task is over."""
        return self.done and not self.updates

    def packet(self) -> bytes:
        """The SUBMIT packet for this task."""
        if self._epoch is not None:
            return encode_request(
                P.SUBMIT_JOB_EPOCH, self.function, self.unique, self._epoch, data=self.payload
            )
        ptype = SUBMIT_TYPES[(self.priority, self.background)]
        return encode_request(ptype, self.function, self.unique, data=self.payload)

    def outcome(self) -> bytes:
        """The result of a finished task, or the exception explaining why there is none.

        For a background task this is the handle.

        Raises:
            GeartrainError: the task was rejected, failed, raised or was lost.
        """
        if self.error is not None:
            raise self.error
        if self.background:
            assert self.handle is not None
            return self.handle
        assert self.value is not None
        return self.value

    # -- called by ClientProtocol ------------------------------------------------

    def _apply(self, update: Update) -> None:
        kind = update.kind
        handle = self.handle or b""
        if kind is UpdateKind.STATUS:
            self.numerator, self.denominator = update.numerator, update.denominator
        elif kind is UpdateKind.COMPLETE:
            self.state, self.value = TaskState.COMPLETE, update.data
        elif kind is UpdateKind.FAIL:
            self.state, self.error = TaskState.FAILED, JobFailed(handle)
        elif kind is UpdateKind.EXCEPTION:
            self.state, self.error = TaskState.EXCEPTION, JobException(handle, update.data)
        elif kind is UpdateKind.CREATED:
            self.state = TaskState.CREATED
        self.updates.append(update)


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A STATUS_RES or STATUS_RES_UNIQUE answer.

    Attributes:
        key: the handle (GET_STATUS) or the unique id (GET_STATUS_UNIQUE) asked about.
        known: whether the server has the job.
        running: whether a worker is running it.
        numerator, denominator: the last WORK_STATUS of the job (0/0 before any).
        waiting: attached foreground clients (GET_STATUS_UNIQUE only, else None).
    """

    key: bytes
    known: bool
    running: bool
    numerator: int
    denominator: int
    waiting: int | None = None

    @classmethod
    def from_packet(cls, packet: Packet) -> JobStatus:
        args = packet.args
        waiting = int(args[5] or 0) if len(args) > 5 else None
        return cls(
            args[0],
            args[1] == b"1",
            args[2] == b"1",
            int(args[3] or 0),
            int(args[4] or 0),
            waiting,
        )
