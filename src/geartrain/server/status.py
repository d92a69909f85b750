"""What the status page shows: a JSON-ready picture of the server, and its recent past.

The picture is built on demand from the scheduler's own counts (the same ones the admin
``status`` and ``workers`` commands read), so it costs nothing between requests. The one
thing kept over time is :class:`DepthHistory`: each function's total (queued + running)
sampled once a second, so a page opened now can draw the last few minutes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .admin_jobs import job_state
from .jobs import Function, Job, Peer

if TYPE_CHECKING:
    from .app import Server
    from .scheduler import Scheduler

JSON = dict[str, Any]

#: Seconds between two depth samples, and how many samples are kept per function.
SAMPLE_INTERVAL = 1.0
HISTORY_LENGTH = 300

_PRIORITY_NAMES = ("high", "normal", "low")


def text(value: bytes) -> str:
    """Bytes from the wire as text for a page: UTF-8, anything else escaped, not lost."""
    return value.decode("utf-8", errors="backslashreplace")


class DepthHistory:
    """Each function's total jobs, sampled every ``interval`` seconds, newest last.

    Args:
        scheduler: whose functions are sampled.
        length: samples kept per function (older ones are dropped).
        interval: seconds between samples, when started with :meth:`run`.
    """

    def __init__(
        self, scheduler: Scheduler, length: int = HISTORY_LENGTH, interval: float = SAMPLE_INTERVAL
    ) -> None:
        self.scheduler = scheduler
        self.length = length
        self.interval = interval
        self.times: deque[float] = deque(maxlen=length)
        self.depths: dict[bytes, deque[int]] = {}

    def sample(self, now: float | None = None) -> None:
        """Record every function's total now; a function seen for the first time gets
        zeros for the samples before it existed, so all series line up."""
        self.times.append(time.time() if now is None else now)
        functions = self.scheduler.functions
        for name in list(self.depths):
            if name not in functions:  # dropped with ``drop function``
                del self.depths[name]
        for name, f in functions.items():
            series = self.depths.get(name)
            if series is None:
                series = self.depths[name] = deque(maxlen=self.length)
                series.extend([0] * (len(self.times) - 1))
            series.append(f.total)

    async def run(self) -> None:
        """Sample every ``interval`` seconds until cancelled."""
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                self.sample()
                await asyncio.sleep(self.interval)

    def as_json(self) -> JSON:
        return {
            "interval": self.interval,
            "times": list(self.times),
            "functions": {text(name): list(series) for name, series in self.depths.items()},
        }


def snapshot(server: Server, history: DepthHistory | None = None) -> JSON:
    """The whole picture the status page draws, as JSON-ready values."""
    scheduler = server.scheduler
    picture: JSON = {
        "version": server.version_string,
        "time": time.time(),
        "listening": [f"{host}:{port}" for host, port in server.addresses],
        "connections": len(server.connections),
        "functions": [function_json(f) for f in scheduler.functions.values()],
        "workers": [worker_json(peer) for peer in _workers(server.connections)],
        "queue": queue_json(server),
        "memory": server.memory.snapshot(scheduler),
    }
    if history is not None:
        picture["history"] = history.as_json()
    return picture


def function_json(f: Function) -> JSON:
    """One function as the admin ``status`` and ``prioritystatus`` lines count it."""
    high, normal, low = f.queued
    return {
        "name": text(f.name),
        "total": f.total,
        "running": f.running,
        "waiting": f.total - f.running,
        "workers": len(f.workers),
        "queued": {"high": high, "normal": normal, "low": low},
        "scheduled": f.scheduled,
        "storing": f.storing,
        "max_queue": dict(zip(_PRIORITY_NAMES, f.max_queue, strict=True)),
        # Totals since the function was first seen; the page turns them into rates.
        "submitted_total": sum(f.submitted),
        "completed_total": sum(f.completed),
        "failed_total": sum(f.failed) + sum(f.exceptions),
    }


def worker_json(peer: Peer) -> JSON:
    """A connection that registered functions: where it is, what it can do, what it runs."""
    return {
        "fd": peer.fd,
        "address": peer.ip,
        "client_id": text(peer.client_id),
        "functions": [text(f.name) for f in peer.ability_list],
        "sleeping": peer.sleeping,
        "jobs": [text(job.handle) for job in peer.assigned],
    }


def _workers(connections: Iterable[Peer]) -> list[Peer]:
    return [peer for peer in connections if peer.ability_list]


def queue_json(server: Server) -> JSON:
    """The persistent queue's health: its kind, whether it is up, writes not yet done."""
    store = server.store
    if store is None:
        return {"backend": "none", "up": True, "reason": None, "outstanding": 0}
    # Every backend of this package says these; a store from elsewhere that does not
    # is shown as up, with nothing outstanding.
    down_reason = getattr(store, "down_reason", None)
    return {
        "backend": getattr(store, "name", type(store).__name__),
        "up": down_reason is None,
        "reason": down_reason,
        "outstanding": getattr(store, "outstanding", 0),
    }


def find_job(
    scheduler: Scheduler, handle: bytes = b"", function: bytes = b"", unique: bytes = b""
) -> Job | None:
    """A job in memory, by handle, or by function and unique (as GET_STATUS_UNIQUE)."""
    if handle:
        return scheduler.jobs.get(handle)
    f = scheduler.functions.get(function)
    if f is None or not unique:
        return None
    return f.uniques.get(unique)


def job_json(job: Job) -> JSON:
    """One job: where it stands, and on which worker it runs."""
    worker = job.worker
    return {
        "handle": text(job.handle),
        "function": text(job.function.name),
        "unique": text(job.unique),
        "state": job_state(job),
        "priority": _PRIORITY_NAMES[job.priority],
        "background": job.background,
        "when": job.when or None,
        "size": len(job.data),
        "progress": [job.numerator, job.denominator],
        "worker": None if worker is None else {"fd": worker.fd, "address": worker.ip},
        "waiting_clients": len(job.clients),
    }
