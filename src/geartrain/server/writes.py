"""Write groups: background jobs acknowledged together once the store has them.

Every background job is durable before its JOB_CREATED is sent. Jobs submitted in
one loop turn form a group that shares one future; connections hold their replies
on that future, so a group commit of a thousand jobs costs a couple of callbacks,
not thousands.
"""

from __future__ import annotations

import asyncio

from .jobs import Job
from .persistence.base import StoredJob


class WriteGroup:
    """Background jobs handed to the store in one loop turn, in one ``add_many``."""

    __slots__ = ("done", "jobs", "records")

    def __init__(self, done: asyncio.Future[bytes | None]) -> None:
        # Resolved once the write has settled and the jobs with it: to None, or to
        # the reason the store refused them.
        self.done = done
        self.jobs: list[Job] = []
        self.records: list[StoredJob] = []


def write_error(written: asyncio.Future[None]) -> str | None:
    """Why a write failed, or None if it succeeded."""
    if written.cancelled():
        return "persistent queue write cancelled"
    exc = written.exception()
    return None if exc is None else str(exc)


_new_record = tuple.__new__


def record_of(job: Job) -> StoredJob:
    """The row the persistent queue keeps for a background job."""
    # tuple.__new__ straight away: a NamedTuple's own __new__ is a Python function,
    # and this runs once per stored job.
    return _new_record(
        StoredJob,
        (
            job.store_id,
            job.function.name,
            job.unique,
            bytes(job.data),
            job.priority,
            job.when,
            job.reducer,
            job.retries,
        ),
    )


def acknowledged(job: Job) -> bool:
    """A stored job whose write has settled (one still in flight is removed on ack)."""
    return job.pending is None or job.pending.done()
