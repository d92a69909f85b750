"""Gearman administrative protocol client: :class:`AdminClient` and :class:`AsyncAdminClient`."""

from geartrain.errors import AdminError

from .aio import AsyncAdminClient
from .core import (
    AdminProtocol,
    AdminReply,
    FunctionStatus,
    JobInfo,
    PriorityStatus,
    Shape,
    WorkerInfo,
)
from .sync import AdminClient

__all__ = [
    "AdminClient",
    "AdminError",
    "AdminProtocol",
    "AdminReply",
    "AsyncAdminClient",
    "FunctionStatus",
    "JobInfo",
    "PriorityStatus",
    "Shape",
    "WorkerInfo",
]
