"""Gearman worker library: a blocking :class:`Worker` and an asyncio :class:`AsyncWorker`.

Both share the sans-I/O :mod:`geartrain.worker.core`. See ``docs/client.md``.
"""

from geartrain.errors import WorkerAborted, WorkFail

from .aio import AsyncWorker
from .job import Job
from .protocol import Assignment, WorkerProtocol, WorkerState
from .sync import Worker

__all__ = [
    "Assignment",
    "AsyncWorker",
    "Job",
    "WorkFail",
    "Worker",
    "WorkerAborted",
    "WorkerProtocol",
    "WorkerState",
]
