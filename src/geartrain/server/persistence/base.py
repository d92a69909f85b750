"""The one narrow interface between the job server and a persistent queue.

Contract (what every backend guarantees, and what the contract tests check):

* ``add`` returns an awaitable that resolves once the record is durable. The server
  sends JOB_CREATED only after it resolves; if it raises :class:`QueueError` the
  submitter gets ``ERROR QUEUE_ERROR <reason>`` and no job exists. Backends batch
  concurrent adds into one transaction (group commit), so ``add`` must not do one
  round trip per call when many are outstanding.
* ``add_many`` is ``add`` for a list of jobs that share one outcome and one
  awaitable; ``add_then`` is ``add_many`` with a callback instead of an awaitable,
  called where the write completes: the server hands over everything submitted in one
  loop turn at once that way.
* ``remove``, ``update_retries`` and ``reschedule`` are fire-and-forget from the server's point of
  view: they are queued and applied in later batches. They are only ever called for a
  job whose add has settled successfully (the server removes or requeues only jobs it
  has acknowledged), so they need no ordering against adds still being written.
  A failure there never loses a job (at worst a finished job is replayed and runs
  again: delivery is at least once).
* ``load`` returns every stored record, in original priority-then-FIFO order
  (``priority`` ascending, then ``id`` ascending); it is called once, before the
  server accepts connections.
* A record's ``data`` is bytes or a :class:`~geartrain.protocol.spool.Spooled` payload
  (a large job received into a spool file). A backend stores a spooled payload in
  chunks of a bounded size, read from the file one at a time, each chunk write its own
  bounded transaction; the job's row (with an empty ``data`` column) is written only
  once all its chunks are, and the add resolves when that row commits. ``remove``
  deletes the chunks with the row; chunks whose row was never written (the server died
  in between) are deleted by ``load``. ``load`` returns a chunked payload as a new
  Spooled payload in :attr:`QueueStore.spool_directory`, built a chunk at a time, so
  queued large jobs are never held in memory, not even at start-up.
* Records are keyed by ``id``, an integer the server assigns (monotonic across
  restarts: the server continues from the largest id it loaded). Never by unique:
  empty and ``-`` uniques must not collide.
* ``ping`` is one cheap round trip to the backend (``SELECT 1``, ``PING``), raising
  :class:`QueueError` when it is not open, is down or does not answer; readiness probes
  call it, so it must never wait long behind a write.
* Dead jobs (background jobs that failed for good, see ``server/dead.py``) live in a
  table or key of their own beside the jobs: ``add_dead`` and ``remove_dead`` are
  fire-and-forget like ``remove`` and go out in the same batches, so a job that dies is
  removed from the jobs and added to the dead in one transaction when both are pending;
  ``load_dead`` returns them all, oldest first, once at start-up.
* A backend that loses its connection reconnects by itself with backoff; while it
  is down, ``add`` fails fast with :class:`QueueError`, and queued removes are kept
  and retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NamedTuple, Protocol

from geartrain.errors import GeartrainError
from geartrain.protocol.spool import Spooled


class QueueError(GeartrainError):
    """The persistent queue could not store a job; ``str(err)`` is the reason."""


class QueueInUse(QueueError):
    """Another live server holds this queue: two servers replaying and running one
    queue's jobs would run each of them twice."""


class StoredJob(NamedTuple):
    """A background job as the persistent queue keeps it.

    A tuple, in the column order of the SQL backends, so a batch of them is bound
    to one multi-row INSERT without a Python-level conversion per row.
    """

    id: int
    function: bytes
    unique: bytes
    data: bytes | Spooled  # Spooled: stored in chunks, never whole in memory
    priority: int  # 0 high, 1 normal, 2 low (geartrain.protocol.Priority)
    when: int = 0  # Unix seconds for SUBMIT_JOB_EPOCH jobs, 0 = run now
    reducer: bytes = b""
    retries: int = 0


class DeadJob(NamedTuple):
    """A background job that failed for good, as the dead-letter queue keeps it.

    ``attempts`` is the JSON text of its attempts' outcomes (see ``server/dead.py``);
    backends store it as given. ``id`` shares the sequence of job ids.
    """

    id: int
    handle: bytes  # the handle it had when it died (handles restart at every start)
    function: bytes
    unique: bytes
    data: bytes
    priority: int
    reducer: bytes
    died: float  # Unix seconds
    attempts: bytes


def row_size(job: StoredJob) -> int:
    """The bytes of ``job`` that go in its row: function, unique, reducer and the data
    when it is bytes (a spooled payload is stored in chunks of a size the backend
    takes, so it never makes a row too large)."""
    size = len(job.function) + len(job.unique) + len(job.reducer)
    if job.data.__class__ is not Spooled:
        size += len(job.data)
    return size


class QueueStore(Protocol):
    """What the server needs from a persistent queue backend."""

    #: Whether :meth:`refusal` can refuse anything. False lets the server skip asking
    #: for every job; an attribute, not a property, as it is read for every job.
    limited: bool

    #: Where ``load`` puts the chunked payloads it reads back (the server's spool
    #: directory, set before ``load``); None means the system's temporary directory.
    spool_directory: Path | None

    async def open(self) -> None:
        """Connect and create tables/keys if needed. Raises QueueError if unusable."""

    async def load(self) -> list[StoredJob]:
        """Every stored job, in (priority, id) order."""

    def refusal(self, job: StoredJob) -> str | None:
        """Why the backend cannot store ``job`` (too large a row, an id out of its
        range), or None if it can.

        The one check of a job against the backend's limits. The server asks before a
        background job joins a write group and refuses it alone with ERROR QUEUE_ERROR
        (a job the backend cannot take would otherwise fail the write of every job
        submitted with it); the add methods ask again for callers that come straight
        to the store, and fail such an add with that reason.
        """

    def add(self, job: StoredJob) -> Awaitable[None]:
        """Store ``job``; the awaitable resolves when it is durable (raises QueueError)."""

    def add_many(self, jobs: list[StoredJob]) -> Awaitable[None]:
        """Store ``jobs`` together: resolves when all are durable, or raises for all."""

    def add_then(self, jobs: list[StoredJob], settled: Callable[[QueueError | None], None]) -> None:
        """Store ``jobs`` together, then call ``settled`` with None or the QueueError.

        Called exactly once, on the event loop, never from inside ``add_then``.
        """

    def remove(self, job_id: int) -> None:
        """Forget a finished job (applied asynchronously, in order)."""

    def update_retries(self, job_id: int, retries: int) -> None:
        """Record that a job was requeued ``retries`` times (asynchronous)."""

    async def ping(self) -> None:
        """Check cheaply that the backend is reachable (for readiness probes).

        Raises:
            QueueError: the store is not open, is down, or did not answer.
        """

    def reschedule(self, job_id: int, when: int, retries: int) -> None:
        """Record a failed job's next run-at time (Unix seconds) and its retry count, so
        that a restart resumes its backoff (asynchronous, like ``update_retries``)."""

    def add_dead(self, job: DeadJob) -> None:
        """Keep a dead job (asynchronous, like ``remove``)."""

    def remove_dead(self, dead_id: int) -> None:
        """Forget a dead job, purged or requeued (asynchronous)."""

    async def load_dead(self) -> list[DeadJob]:
        """Every dead job, in id order (oldest first)."""

    async def close(self) -> None:
        """Flush pending writes and disconnect."""
