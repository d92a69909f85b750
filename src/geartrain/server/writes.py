"""Write groups: background jobs acknowledged together once the store has them.

Every background job is durable before its JOB_CREATED is sent. Jobs submitted in
one loop turn form a group that shares one future; connections hold their replies
on that future, so a group commit of a thousand jobs costs a couple of callbacks,
not thousands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .jobs import Job
from .persistence.base import StoredJob


class WriteGroup:
    """Background jobs handed to the store in one loop turn."""

    __slots__ = ("done", "jobs", "writes")

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done  # resolved once every write of the group has settled
        self.jobs: list[Job] = []
        self.writes: list[asyncio.Future[None]] = []

    def wait(self, settle: Callable[[WriteGroup], None]) -> None:
        """Call ``settle(self)`` once every write has succeeded or failed."""

        # Stores commit in order, so the last open write usually settles last and
        # one callback on it is enough; if not, look again.
        def check(_: object = None) -> None:
            still_open = [w for w in self.writes if not w.done()]
            if still_open:
                still_open[-1].add_done_callback(check)
            else:
                settle(self)

        check()


def write_error(written: asyncio.Future[None]) -> str | None:
    """Why a write failed, or None if it succeeded."""
    if written.cancelled():
        return "persistent queue write cancelled"
    exc = written.exception()
    return None if exc is None else str(exc)


def record_of(job: Job) -> StoredJob:
    """The row the persistent queue keeps for a background job."""
    return StoredJob(
        job.store_id,
        job.function.name,
        job.unique,
        bytes(job.data),
        job.priority,
        job.when,
        job.reducer,
        job.retries,
    )


def acknowledged(job: Job) -> bool:
    """A stored job whose write has settled (one still in flight is removed on ack)."""
    return job.pending is None or job.pending.done()
