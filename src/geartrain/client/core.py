"""What the blocking and asyncio clients share, so that they cannot drift apart.

:class:`BaseClient` holds the server pool, the tasks and the submission API; the I/O
layers (``sync`` and ``aio``) only connect, move bytes and wait. The per-connection
protocol itself is :class:`~geartrain.client.protocol.ClientProtocol`, re-exported here
with the rest of what those layers use.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import TypedDict, TypeVar

from geartrain.errors import GeartrainError
from geartrain.protocol import Priority
from geartrain.tls import ClientTLS, TLSArgument

from .pool import CONNECT_TIMEOUT, RETRY_AFTER, ServerPool
from .protocol import (
    MAX_BODY,
    READ_SIZE,
    RETIRED,
    ClientProtocol,
    Event,
    Reply,
    RequestKind,
    ServerReader,
)
from .servers import Address, ServerSpec
from .task import (
    SUBMIT_TYPES,
    JobStatus,
    Task,
    TaskCallback,
    TaskState,
    Update,
    UpdateKind,
    to_bytes,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_BODY",
    "READ_SIZE",
    "RETIRED",
    "RETRY_AFTER",
    "SUBMIT_TYPES",
    "BackgroundArgs",
    "BaseClient",
    "CallArgs",
    "ClientProtocol",
    "Event",
    "JobStatus",
    "Reply",
    "RequestKind",
    "ServerReader",
    "SubmitArgs",
    "Task",
    "TaskCallback",
    "TaskState",
    "Update",
    "UpdateKind",
    "background_args",
    "foreground_args",
    "outcomes",
    "run_callback",
    "to_bytes",
    "unix_time",
]


def unix_time(when: float | dt.datetime) -> float:
    """Unix time of a SUBMIT_JOB_EPOCH ``when`` (naive datetimes are local time)."""
    if isinstance(when, dt.datetime):
        return when.timestamp()
    return when


def run_callback(callback: TaskCallback, update: Update) -> None:
    """Call a task's callback; what it raises is logged, not propagated."""
    # A failing callback must not break the I/O loop that serves every other task.
    try:
        callback(update)
    except Exception:
        logger.exception("task callback failed for %r", update.task)


def outcomes(tasks: Iterable[Task]) -> list[bytes | GeartrainError]:
    """Each task's result, or the exception that ended it."""
    results: list[bytes | GeartrainError] = []
    for task in tasks:
        try:
            results.append(task.outcome())
        except GeartrainError as exc:
            results.append(exc)
    return results


TaskT = TypeVar("TaskT", bound=Task)


class BaseClient:
    """Settings and server pool shared by the blocking and the asyncio client.

    The arguments are documented on :class:`geartrain.client.Client`.
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
        tls: TLSArgument = None,
    ) -> None:
        self.pool = ServerPool(servers, retry_after)
        self.tls = ClientTLS.of(tls)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.exceptions = exceptions
        self.client_id = client_id
        self.subsecond_epoch = subsecond_epoch
        self._init_io()

    def _init_io(self) -> None:
        """Set up the I/O layer's own state (connections, selector, locks)."""

    @property
    def servers(self) -> list[Address]:
        """The job servers, in the order given."""
        return self.pool.servers

    @property
    def retry_after(self) -> float:
        """Seconds a server that refused a connection is skipped."""
        return self.pool.retry_after

    @retry_after.setter
    def retry_after(self, seconds: float) -> None:
        self.pool.retry_after = seconds

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def _deliver(self, events: list[Event]) -> None:
        """Wake whoever waits on each event, then run the task's callback."""
        for event in events:
            if isinstance(event, Reply):
                self._answered(event)
                continue
            self._updated(event.task)
            if event.task.callback is not None:
                run_callback(event.task.callback, event)

    def _answered(self, reply: Reply) -> None:
        """Wake whoever waits for ``reply`` (the blocking client polls ``reply.done``)."""

    def _updated(self, task: Task) -> None:
        """Wake whoever waits on ``task`` (the blocking client polls the task)."""

    def _new_protocol(self) -> ClientProtocol:
        return ClientProtocol(exceptions=self.exceptions, client_id=self.client_id)

    def _new_task(
        self, cls: type[TaskT], function: str | bytes, payload: str | bytes, options: SubmitArgs
    ) -> TaskT:
        when = options.get("when")
        return cls(
            function,
            payload,
            unique=options.get("unique"),
            priority=options.get("priority", Priority.NORMAL),
            background=options.get("background", False),
            when=None if when is None else unix_time(when),
            subsecond_epoch=self.subsecond_epoch,
            callback=options.get("callback"),
        )


# The keyword arguments of submit(), call() and submit_background(), written once
# for both clients; their meaning is documented on geartrain.client.Client.submit.


class SubmitArgs(TypedDict, total=False):
    """``submit(unique=None, priority=NORMAL, background=False, when=None, callback=None)``."""

    unique: str | bytes | None
    priority: Priority
    background: bool
    when: float | dt.datetime | None
    callback: TaskCallback | None


class CallArgs(TypedDict, total=False):
    """``call(unique=None, priority=NORMAL, timeout=None)``."""

    unique: str | bytes | None
    priority: Priority
    timeout: float | None


class BackgroundArgs(CallArgs, total=False):
    """``submit_background(unique=None, priority=NORMAL, when=None, timeout=None)``."""

    when: float | dt.datetime | None


def foreground_args(options: CallArgs) -> SubmitArgs:
    """What ``call`` passes on to ``submit``."""
    args = SubmitArgs()
    if "unique" in options:
        args["unique"] = options["unique"]
    if "priority" in options:
        args["priority"] = options["priority"]
    return args


def background_args(options: BackgroundArgs) -> SubmitArgs:
    """What ``submit_background`` passes on to ``submit``."""
    args = foreground_args(options)
    args["background"] = True
    if "when" in options:
        args["when"] = options["when"]
    return args
