"""The dead-letter queue: background jobs that failed for good, kept for operators.

A background job dies when it exhausts its retry policy's attempts, or, with
``--dead-letter``, when it fails with no policy (WORK_FAIL, WORK_EXCEPTION, or dropped
by ``--job-retries``). Its payload, function, unique, priority and reducer are kept with
the outcome of every attempt (time, worker, outcome, WORK_EXCEPTION text), in memory and
in the persistent queue (``QueueStore.add_dead``), until an operator requeues or purges
it (admin ``dead ...`` commands).

Bounds. A poison function must not fill the disk: the queue keeps at most
``max_jobs`` jobs and ``max_bytes`` bytes, none older than ``max_age`` seconds; the
oldest go first, and every job dropped that way is counted (``dropped``, shown by
``dead list``). Attempts kept per job are bounded too (the first and the latest ones).

Identity. A dead job keeps the handle it had when it died, but handles restart at 1
at every server start, so a handle may name several dead jobs over time: each also
has an id, from the sequence of job ids, that never repeats. Commands take either.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .persistence.base import DeadJob, QueueStore

if TYPE_CHECKING:
    from .jobs import Job
    from .scheduler import Error, Scheduler

logger = logging.getLogger(__name__)

#: Dead jobs kept at most: a poison function's whole backlog stays inspectable.
DEFAULT_MAX_JOBS = 10_000
#: Oldest dead job kept (seconds): a week of weekend outages.
DEFAULT_MAX_AGE = 7 * 86400.0
#: Bytes of dead jobs kept at most (payloads and attempt records).
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: WORK_EXCEPTION text kept per attempt: a stack trace, not a core dump.
MAX_TEXT = 1024
#: Attempts kept per dead job: the first ones and the latest ones, a job retried a
#: thousand times keeps a readable history.
MAX_ATTEMPTS_KEPT = 20


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one attempt of a job ended."""

    time: float  # Unix seconds
    worker: str  # the worker's address and client id, "ip client-id"
    outcome: str  # fail, exception, lost or timeout
    text: str = ""  # the WORK_EXCEPTION text, or why the worker was lost


def encode_attempts(count: int, attempts: list[Attempt]) -> bytes:
    """The attempt count and outcomes as the JSON the stores keep (``DeadJob.attempts``).

    ``count`` may exceed the outcomes kept: attempts before a restart are counted (the
    queue stores the count) but their outcomes were in memory only, and a long history
    keeps its first and latest :data:`MAX_ATTEMPTS_KEPT` entries.
    """
    if len(attempts) > MAX_ATTEMPTS_KEPT:
        half = MAX_ATTEMPTS_KEPT // 2
        attempts = attempts[:half] + attempts[-half:]
    rows = [[a.time, a.worker, a.outcome, a.text] for a in attempts]
    return json.dumps({"count": count, "attempts": rows}, separators=(",", ":")).encode()


def decode_attempts(raw: bytes) -> tuple[int, list[Attempt]]:
    """Inverse of :func:`encode_attempts`; an unreadable record reads as none."""
    try:
        value = json.loads(raw)
        rows = value["attempts"]
        attempts = [Attempt(float(t), str(w), str(o), str(x)) for t, w, o, x in rows]
        return int(value["count"]), attempts
    except (ValueError, TypeError, KeyError):
        logger.warning("unreadable attempt records of a dead job: %r", raw[:80])
        return 0, []


def exception_text(data: bytes) -> str:
    """A WORK_EXCEPTION payload as kept: text, cut to :data:`MAX_TEXT` bytes."""
    return data[:MAX_TEXT].decode("utf-8", errors="replace")


@dataclass(slots=True)
class DeadLimits:
    """The bounds of the dead-letter queue (see the module docstring); 0 = no bound."""

    max_jobs: int = DEFAULT_MAX_JOBS
    max_age: float = DEFAULT_MAX_AGE
    max_bytes: int = DEFAULT_MAX_BYTES


def weight(dead: DeadJob) -> int:
    """The bytes a dead job counts against ``max_bytes``."""
    return (
        len(dead.data)
        + len(dead.attempts)
        + len(dead.function)
        + len(dead.unique)
        + len(dead.handle)
        + len(dead.reducer)
    )


class DeadQueue:
    """Dead jobs in memory, oldest first, mirrored to the persistent queue if any."""

    def __init__(
        self,
        limits: DeadLimits | None = None,
        store: QueueStore | None = None,
    ) -> None:
        self.limits = limits or DeadLimits()
        self.store = store
        self.jobs: dict[int, DeadJob] = {}  # by id, in order of death
        self.bytes = 0
        #: Dead jobs dropped by a bound since the server started.
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.jobs)

    def restore(self, records: list[DeadJob], now: float) -> None:
        """Take back the dead jobs a store kept (start-up), then apply the bounds."""
        for record in sorted(records, key=lambda dead: dead.died):
            self.jobs[record.id] = record
            self.bytes += weight(record)
        self.trim(now)

    def add(self, record: DeadJob, now: float) -> None:
        """Keep a job that just died, dropping the oldest beyond the bounds."""
        self.jobs[record.id] = record
        self.bytes += weight(record)
        if self.store is not None:
            self.store.add_dead(record)
        self.trim(now)

    def trim(self, now: float) -> None:
        """Drop the oldest dead jobs until every bound holds; count them."""
        limits = self.limits
        jobs = self.jobs
        while jobs:
            oldest = next(iter(jobs.values()))
            if not (
                (limits.max_jobs and len(jobs) > limits.max_jobs)
                or (limits.max_bytes and self.bytes > limits.max_bytes)
                or (limits.max_age and now - oldest.died > limits.max_age)
            ):
                return
            self.forget(oldest.id)
            self.dropped += 1
            logger.info(
                "dead job %d (%r) dropped by the dead-letter bounds", oldest.id, oldest.handle
            )

    def forget(self, dead_id: int) -> DeadJob | None:
        """Take a dead job out, here and in the store (purged, requeued or dropped)."""
        record = self.jobs.pop(dead_id, None)
        if record is not None:
            self.bytes -= weight(record)
            if self.store is not None:
                self.store.remove_dead(dead_id)
        return record

    def find(self, key: bytes) -> DeadJob | None:
        """The dead job with this id, or the latest that died with this handle."""
        if key.isdigit():
            found = self.jobs.get(int(key))
            if found is not None:
                return found
        for record in reversed(self.jobs.values()):
            if record.handle == key:
                return record
        return None

    def of_function(self, function: bytes | None) -> Iterator[DeadJob]:
        """Dead jobs, oldest first; of one function if given."""
        for record in list(self.jobs.values()):
            if function is None or record.function == function:
                yield record


def requeue_dead(scheduler: Scheduler, record: DeadJob) -> Job | Error:
    """Submit a dead job again (admin ``dead requeue``), as a new background job.

    It leaves the dead-letter queue once it is durable in the persistent queue; if the
    store refuses it, it stays dead. Returns the new (or coalesced) job, or the ERROR.
    """
    job = scheduler.submit(
        None,
        record.function,
        record.unique,
        record.data,
        record.priority,
        True,
        reducer=record.reducer,
    )
    if isinstance(job, tuple):
        return job
    dead = scheduler.dead
    write = job.write
    if write is None:
        dead.forget(record.id)
        return job
    dead.jobs.pop(record.id, None)  # hidden while it is being written

    def settled() -> None:
        dead.jobs[record.id] = record  # back, so that forget() counts it out
        if write.refused is None:
            dead.forget(record.id)

    write.when_settled(settled)
    return job
