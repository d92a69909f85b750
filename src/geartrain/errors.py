"""The exceptions geartrain raises, under one root.

Every error a caller can meet derives from :class:`GeartrainError`, so
``except GeartrainError`` is enough to catch them all. The one exception is
:class:`WorkerAborted`, which derives from ``BaseException`` for the reason
``KeyboardInterrupt`` does. Errors that have a
well-known standard-library meaning also derive from it (timeouts are
:class:`TimeoutError`, lost connections are :class:`ConnectionError`) so that
generic retry code keeps working.
"""

from __future__ import annotations


class GeartrainError(Exception):
    """Root of every exception raised by geartrain."""


class ProtocolError(GeartrainError):
    """A peer sent bytes that do not follow the Gearman protocol."""


class ConnectionLost(GeartrainError, ConnectionError):
    """The connection to a job server broke while an answer was outstanding.

    For a foreground job this means its fate is unknown: it may still run, or
    may have run already. geartrain never resubmits such a job by itself.
    """


class NoServerAvailable(ConnectionLost):
    """None of the configured job servers accepted a connection."""


class GeartrainTimeout(GeartrainError, TimeoutError):
    """An operation did not finish within its timeout."""


class ServerError(GeartrainError):
    """The job server answered with an ERROR packet.

    Attributes:
        code: the error code, e.g. ``"QUEUE_ERROR"``.
        text: the human-readable explanation sent with it.
    """

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}" if text else code)
        self.code = code
        self.text = text


class AdminError(ServerError):
    """An administrative command was answered with ``ERR``."""


class JobError(GeartrainError):
    """A job ended without a result.

    Attributes:
        handle: the job handle the server assigned.
    """

    def __init__(self, handle: bytes, message: str) -> None:
        super().__init__(message)
        self.handle = handle


class JobFailed(JobError):
    """The worker reported WORK_FAIL (or the server dropped or cancelled the job)."""

    def __init__(self, handle: bytes) -> None:
        super().__init__(handle, f"job {handle.decode(errors='replace')} failed")


class JobException(JobError):
    """The worker reported WORK_EXCEPTION.

    Attributes:
        data: the exception payload the worker sent.
    """

    def __init__(self, handle: bytes, data: bytes) -> None:
        text = data.decode(errors="replace")
        super().__init__(handle, f"job {handle.decode(errors='replace')} raised: {text}")
        self.data = data


class WorkFail(GeartrainError):
    """Raise inside a worker function to end the job with WORK_FAIL.

    Any other exception ends the job with WORK_EXCEPTION carrying its text.
    """


class WorkerAborted(BaseException):
    """A second termination signal asked a worker to stop without finishing its jobs.

    The blocking worker raises it from the signal handler, in the middle of the
    job function. Like ``KeyboardInterrupt`` it is not an ``Exception``, so that
    an ``except Exception`` in job code (or in logging) cannot swallow it.
    """
