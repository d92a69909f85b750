"""Gearman client library: a blocking :class:`Client` and an asyncio :class:`AsyncClient`.

Both share the sans-I/O :mod:`geartrain.client.core`. See ``docs/client.md``.
"""

from geartrain.protocol import Priority

from .aio import AsyncClient, AsyncTask
from .core import ClientProtocol, JobStatus, Task, TaskState, Update, UpdateKind
from .servers import Address, parse_address, parse_servers, server_order
from .sync import Client, SyncTask

__all__ = [
    "Address",
    "AsyncClient",
    "AsyncTask",
    "Client",
    "ClientProtocol",
    "JobStatus",
    "Priority",
    "SyncTask",
    "Task",
    "TaskState",
    "Update",
    "UpdateKind",
    "parse_address",
    "parse_servers",
    "server_order",
]
