"""Group commit, failure handling and reconnection shared by every queue backend.

Theory of operation
-------------------
``add``, ``remove`` and ``update_retries`` only queue an operation (adds in ``_adds``,
removed ids in ``_removes``, the latest retry count per job in ``_retries``) and wake one
writer task; they never touch the backend themselves. The writer takes everything that
is pending (up to ``max_batch`` jobs / ``max_batch_bytes`` of payload, and up to
``max_batch`` removes and retry counts), turns it into one :class:`Batch` and hands it
to the backend's ``_write`` hook, which applies it as ONE transaction (SQL) or ONE
pipeline (Redis). While that write is in flight, new operations pile up and go out
together in the next batch:
that is group commit, and it is what makes 2,000 concurrent adds cost a handful of
fsyncs or round trips instead of 2,000.

``reschedule`` (a failed job put back for a later attempt) queues the job's new run-at
time with its retry count in ``_reschedules``; it is written like a retry update, after
them, and carries the newer count when both are pending for one job.

A batch is applied as deletes, then inserts, then retry updates, then reschedules. Ids
are never reused, so the only ordering that matters is an add before the remove or
update of the same id, and the server removes, requeues or reschedules only jobs whose
add has settled: that is why the queues need no common order. A job added and removed
within one batch is simply not written (its add still resolves: the server is done with
it), which makes deletes-first safe. Deleting first also lets a batch free space before
it needs some, which matters on a full disk.

Failures:

* The adds of a failed batch settle with :class:`QueueError`; removes and retry updates
  go back to the front of their queues and are retried (a lost remove would only mean a
  finished job runs again; a lost add would break the contract, so adds are never
  retried behind the server's back after it was told they failed).
* If the failure looks like a lost connection (the backend's ``_is_connection_error``,
  or the write timing out), the writer reconnects once at once and retries the batch:
  a connection the server killed while we were idle then costs nothing. Inserts are
  upserts by id, so re-applying a batch whose COMMIT reply was lost is harmless.
* If that reconnect fails too, the store goes *down*: pending adds fail, new adds fail
  fast, and the writer reconnects with jittered exponential backoff until it succeeds
  (or the store is closed), then resumes with the removes it kept.
* Any other failure (disk full, a locked file, a constraint) fails that batch's adds
  and leaves the connection up; the next batch waits a backoff delay so that kept
  removes that keep failing cannot spin the loop.

Large payloads (a :class:`~geartrain.protocol.spool.Spooled` job's data) are stored in
chunks of ``chunk_bytes``, in transactions of their own written *before* the batch that
holds the job's row: each chunk batch reads at most ``max_batch_bytes`` of the spool
file, so memory stays bounded whatever the job's size. The row goes with an empty
``data`` column, in the next batch; the add settles when that batch commits. Every
backend commits in order, so once the row is durable its chunks are too. Adds that
arrive meanwhile (other than large ones) are committed between two chunk transactions,
so a large job delays other submissions by one chunk's write, not by its whole size. If
a chunk batch or the row's batch fails, the add fails and the job's id is queued as a
remove, which deletes any chunks already written. Chunks whose row never came (the
server died between the two) are found and deleted by ``load``, which reads every other
chunked payload back into a new spool file, one chunk at a time. The store remembers
which ids have chunks (``_chunked``), so that a remove deletes chunks only where there
are some.

Nothing here knows about SQL or Redis; backends implement the ``_`` hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import random
import tempfile
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from geartrain.protocol.spool import Spooled, SpoolWriter

from ..counters import BATCH_OPERATIONS, COMMIT_SECONDS, Histogram
from .base import DeadJob, QueueError, QueueInUse, StoredJob, row_size

logger = logging.getLogger(__name__)

#: Operations per batch. Big enough that a burst of submissions is one transaction,
#: small enough that one transaction stays well under a second on a slow disk.
DEFAULT_MAX_BATCH = 5000
#: Payload bytes per batch; keeps MySQL statements below the 16 MiB max_allowed_packet
#: default of MariaDB 10.x and Redis pipelines from building huge buffers.
DEFAULT_MAX_BATCH_BYTES = 4 * 1024 * 1024
#: Size of one stored chunk of a spooled payload: one chunk per batch by default, well
#: below every backend's cap on one value (and MariaDB's max_allowed_packet, as hex).
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
#: A write (or connect) that takes longer than this is treated as a lost connection,
#: so that a silent network partition cannot leave submitters waiting forever.
DEFAULT_TIMEOUT = 30.0
#: Reconnect backoff: first delay and ceiling (seconds), before jitter.
DEFAULT_BACKOFF_INITIAL = 0.05
DEFAULT_BACKOFF_MAX = 5.0
#: How long close() keeps trying to flush pending removes before giving up on them.
DEFAULT_CLOSE_TIMEOUT = 10.0
#: How long open() keeps asking for a queue that another connection holds. A server
#: restarted at once after a crash may find its old connection's claim still there for
#: the moment the database takes to notice that connection is gone.
CLAIM_GRACE = 5.0
#: Seconds removes and retry updates may wait to share a commit when no add is queued.
LAZY_WRITE_DELAY = 0.05


_job_id = operator.attrgetter("id")


class StoreOptions(TypedDict, total=False):
    """Tuning knobs every backend accepts as keyword arguments (defaults above)."""

    max_batch: int
    max_batch_bytes: int
    timeout: float
    backoff_initial: float
    backoff_max: float
    close_timeout: float
    chunk_bytes: int


@dataclass(slots=True)
class Batch:
    """The writes of one transaction.

    Backends apply removes (and the chunks of ``chunk_removes``), then chunks, then
    adds, then retries, then reschedules. The adds' data is bytes here: a chunked job's
    row has b"".
    """

    adds: list[StoredJob] = field(default_factory=list)
    retries: list[tuple[int, int]] = field(default_factory=list)  # (id, retries)
    #: (id, when, retries): a failed job's next run-at time and its attempt count.
    reschedules: list[tuple[int, int, int]] = field(default_factory=list)
    #: Dead jobs deleted (purged, requeued or dropped by a bound), then dead jobs added.
    dead_removes: list[int] = field(default_factory=list)
    dead_adds: list[DeadJob] = field(default_factory=list)
    removes: list[int] = field(default_factory=list)
    #: Ids whose chunks are deleted (removed jobs that had some, and orphans).
    chunk_removes: list[int] = field(default_factory=list)
    #: (job id, sequence number from 0, bytes): upserts by (id, sequence number).
    chunks: list[tuple[int, int, bytes]] = field(default_factory=list)


Settled = Callable[[QueueError | None], None]


@dataclass(slots=True)
class _Add:
    """One ``add_then`` (or ``add``, ``add_many``): stored together or not at all."""

    jobs: list[StoredJob]
    settled: Settled | None  # None once called: every add settles exactly once
    size: int = 0
    spooled: bool = False  # some job's data is Spooled (set with size)

    def settle(self, error: QueueError | None) -> None:
        settled, self.settled = self.settled, None
        if settled is None:
            return
        try:
            settled(error)
        except Exception:  # the caller's bug must not stop the writer
            logger.exception("error in a queue write's completion callback")


_function = operator.itemgetter(1)
_unique = operator.itemgetter(2)
_data = operator.itemgetter(3)
_reducer = operator.itemgetter(6)


def _add_size(jobs: list[StoredJob]) -> int:
    """Payload bytes of ``jobs`` plus a fixed allowance per row (column passes run in C)."""
    return 64 * len(jobs) + sum(
        sum(map(len, map(column, jobs))) for column in (_function, _unique, _data, _reducer)
    )


@dataclass(slots=True)
class _Taken:
    """What one batch took from the queues: the adds, the removed ids, the retry counts."""

    adds: list[_Add] = field(default_factory=list)
    removes: list[int] = field(default_factory=list)
    retries: dict[int, int] = field(default_factory=dict)
    reschedules: dict[int, tuple[int, int]] = field(default_factory=dict)
    dead_adds: list[DeadJob] = field(default_factory=list)
    dead_removes: list[int] = field(default_factory=list)


def backoff_delay(attempt: int, initial: float, ceiling: float) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random.

    The random half keeps many servers that lost the same database from reconnecting
    in lockstep; the fixed half keeps the delay from collapsing to zero.
    """
    base = min(ceiling, initial * 2.0 ** min(attempt, 30))
    return base / 2 + random.uniform(0, base / 2)


def describe(exc: BaseException) -> str:
    """A one-line reason for QUEUE_ERROR replies and logs."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def make_batch(taken: _Taken) -> Batch:
    """The net effect of ``taken``: jobs removed in the same batch are never written."""
    removed = set(taken.removes)
    batch = Batch(removes=sorted(removed))
    for op in taken.adds:
        # Jobs finish while others are being submitted, so removes and adds share
        # most batches; checking for an overlap first keeps the per-job work in C.
        if removed and not removed.isdisjoint(map(_job_id, op.jobs)):
            batch.adds.extend(job for job in op.jobs if job.id not in removed)
        else:
            batch.adds.extend(op.jobs)
    batch.retries = [(job_id, n) for job_id, n in taken.retries.items() if job_id not in removed]
    if taken.reschedules:
        batch.reschedules = [
            (job_id, when, n)
            for job_id, (when, n) in taken.reschedules.items()
            if job_id not in removed
        ]
    if taken.dead_adds or taken.dead_removes:
        # A dead job purged before it was ever written is simply not written.
        gone = set(taken.dead_removes)
        batch.dead_adds = [dead for dead in taken.dead_adds if dead.id not in gone]
        batch.dead_removes = sorted(gone)
    return batch


class GroupCommitStore(ABC):
    """A :class:`~geartrain.server.persistence.base.QueueStore` built on five hooks.

    Attributes:
        commits: batches written successfully (one transaction or pipeline each).
        failed_batches: batches whose write raised.
        reconnects: successful reconnections after a lost connection.
        commit_seconds: how long each committed batch took, its chunks included.
        batch_operations: adds, removes and retry counts per committed batch.
    """

    #: Name used in error messages, e.g. "sqlite", "postgres".
    name = "store"
    #: Said after a too-large refusal: what the operator can do about it.
    size_advice = ""

    def __init__(
        self,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        timeout: float = DEFAULT_TIMEOUT,
        backoff_initial: float = DEFAULT_BACKOFF_INITIAL,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be positive: {chunk_bytes}")
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self.timeout = timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.close_timeout = close_timeout
        self.chunk_bytes = chunk_bytes
        self.limited = False  # see QueueStore.limited; kept by the two limits below
        self._max_job_bytes: int | None = None
        self._max_job_id: int | None = None
        self.spool_directory: Path | None = None  # see QueueStore.spool_directory
        self.commits = 0
        self.failed_batches = 0
        self.reconnects = 0
        self.commit_seconds = Histogram(COMMIT_SECONDS)
        self.batch_operations = Histogram(BATCH_OPERATIONS)
        # Three queues rather than one list of operations: a remove is one int appended
        # (one per finished job, so it must be cheap), and retry counts only ever need
        # the latest value per job. Ordering across them does not matter (see the
        # module docstring): a remove or retry update only ever follows a settled add.
        self._adds: deque[_Add] = deque()
        self._removes: list[int] = []
        self._retries: dict[int, int] = {}
        self._reschedules: dict[int, tuple[int, int]] = {}
        self._dead_adds: list[DeadJob] = []
        self._dead_removes: list[int] = []
        # Ids with stored chunks: found by load, added before chunks are written,
        # dropped once a remove of the id has committed.
        self._chunked: set[int] = set()
        # The batches being written right now: one, plus one more while adds go out
        # between the chunks of a large payload.
        self._in_flight: list[_Taken] = []
        self._wake = asyncio.Event()
        self._lazy_wake: asyncio.TimerHandle | None = None
        self._writer: asyncio.Task[None] | None = None
        self._io_lock = asyncio.Lock()
        self._down_reason: str | None = None
        self._failures = 0  # consecutive failed batches, drives the retry delay
        self._closing = False
        self._close_requested = asyncio.Event()

    # -- hooks -------------------------------------------------------------------------

    @abstractmethod
    async def _connect(self) -> None:
        """Open the connection (called again after it was lost)."""

    @abstractmethod
    async def _disconnect(self) -> None:
        """Drop the connection; must not raise and must work on a broken one."""

    @abstractmethod
    async def _create(self) -> None:
        """Create tables/keys if they do not exist."""

    @abstractmethod
    async def _load(self) -> list[StoredJob]:
        """Every record in id order, or already in (priority, id) order.

        The base then sorts by priority alone, stably, which yields (priority, id).
        """

    @abstractmethod
    async def _write(self, batch: Batch) -> None:
        """Apply ``batch`` atomically: deletes (rows, and chunks of ``chunk_removes``),
        chunks (upsert by id and sequence number), inserts (upsert by id), retries,
        reschedules (run-at time and retry count of existing rows), then dead jobs:
        deletes, then inserts (upsert by id)."""

    @abstractmethod
    async def _load_dead(self) -> list[DeadJob]:
        """Every dead job, in id order."""

    @abstractmethod
    async def _chunked_ids(self) -> set[int]:
        """The ids that have stored chunks (whether or not their row exists)."""

    @abstractmethod
    async def _read_chunk(self, job_id: int, seq: int) -> bytes | None:
        """Chunk ``seq`` of job ``job_id``, or None past its last chunk."""

    async def _try_claim(self) -> str | None:
        """Make this connection the queue's only user, or say who holds it.

        Called after every connect. The claim must end with the connection, so that a
        server that dies (kill -9 included) frees its queue for the next one at once.
        Returns None once held (again, after a reconnect), or a description of the
        holder. The default claims nothing: an in-process backend has no other user.
        """
        return None

    async def _release_claim(self) -> None:
        """Give the claim up before a clean disconnect (default: nothing to do)."""
        return None

    async def _give_up_claim(self) -> None:
        """Release the claim, if the backend still answers within two seconds."""
        try:
            async with asyncio.timeout(2.0):
                await self._release_claim()
        except Exception as exc:
            logger.debug("%s: releasing the queue failed: %s", self.name, describe(exc))

    async def _connect_claimed(self, grace: float = 0.0) -> None:
        """Connect, then claim the queue, asking again for up to ``grace`` seconds."""
        await self._connect()
        deadline = time.monotonic() + grace
        while (holder := await self._try_claim()) is not None:
            if time.monotonic() >= deadline:
                raise QueueInUse(
                    f"{self.name}: the queue is in use by another server ({holder}); "
                    "stop that server first, or give this one its own queue "
                    "(another table or key prefix)"
                )
            await asyncio.sleep(0.1)

    @abstractmethod
    async def _ping(self) -> None:
        """One cheap round trip on the connection (called under the I/O lock)."""

    def _chunk_size(self) -> int:
        """Bytes per stored chunk (a backend may lower it to what it can take)."""
        return self.chunk_bytes

    def _is_connection_error(self, exc: BaseException) -> bool:
        """True if ``exc`` means the connection is gone (default: OSError)."""
        return isinstance(exc, OSError | ConnectionError)

    # -- QueueStore --------------------------------------------------------------------

    @property
    def is_down(self) -> bool:
        """True while the backend is unreachable and adds fail fast."""
        return self._down_reason is not None

    @property
    def down_reason(self) -> str | None:
        """Why the backend is down (the last connection error), or None while it is up."""
        return self._down_reason

    @property
    def outstanding(self) -> int:
        """Operations accepted but not yet written (adds count once per call)."""
        return (
            len(self._adds)
            + len(self._removes)
            + len(self._retries)
            + len(self._reschedules)
            + len(self._dead_adds)
            + len(self._dead_removes)
        )

    @property
    def in_flight(self) -> int:
        """Operations in the batches being written now (each job of an add counts)."""
        return sum(
            sum(len(add.jobs) for add in taken.adds) + len(taken.removes) + len(taken.retries)
            for taken in self._in_flight
        )

    async def open(self) -> None:
        if self._writer is not None:
            raise RuntimeError(f"{self.name} queue store is already open")
        self._closing = False
        self._close_requested.clear()
        self._down_reason = None
        try:
            async with asyncio.timeout(self.timeout):
                await self._connect_claimed(grace=CLAIM_GRACE)
                await self._create()
        except QueueError:
            await self._give_up_claim()
            await self._disconnect()
            raise
        except Exception as exc:
            await self._give_up_claim()
            await self._disconnect()
            raise QueueError(f"{self.name}: cannot open queue: {describe(exc)}") from exc
        self._writer = asyncio.create_task(self._run(), name=f"geartrain-{self.name}-writer")

    async def load(self) -> list[StoredJob]:
        async with self._io_lock:
            try:
                if self._down_reason is not None:
                    await self._connect_claimed()
                    self._down_reason = None
                jobs = await self._load()
                await self._load_chunks(jobs)
            except QueueError:
                raise
            except Exception as exc:
                raise QueueError(f"{self.name}: cannot load queue: {describe(exc)}") from exc
        # _load returns id order; a stable sort on priority alone yields (priority, id)
        # and is nearly free on three distinct keys, so no backend needs an extra index.
        jobs.sort(key=lambda job: job.priority)
        return jobs

    async def _load_chunks(self, jobs: list[StoredJob]) -> None:
        """Give chunked jobs their payloads back, spooled; delete orphan chunks."""
        chunked = await self._chunked_ids()
        stored = {job.id for job in jobs} if chunked else set()
        orphans = sorted(chunked - stored)
        if orphans:
            # Chunks of a job whose row never committed: its add was never acknowledged.
            logger.warning("%s: deleting the chunks of %d unfinished jobs", self.name, len(orphans))
            await self._write(Batch(chunk_removes=orphans))
        for index, job in enumerate(jobs):
            if job.id in chunked:
                jobs[index] = job._replace(data=await self._read_payload(job.id))
        self._chunked = chunked & stored

    async def _read_payload(self, job_id: int) -> Spooled:
        """Job ``job_id``'s chunks, in order, into a new spool file."""
        directory = self.spool_directory or Path(tempfile.gettempdir())
        writer = SpoolWriter(directory)
        try:
            seq = 0
            while (chunk := await self._read_chunk(job_id, seq)) is not None:
                writer.write(chunk)
                seq += 1
        except BaseException:
            writer.abort()
            raise
        return writer.finish()

    @property
    def max_job_bytes(self) -> int | None:
        """The largest row the backend stores (see :func:`~.base.row_size`); None for
        no limit below the server's own."""
        return self._max_job_bytes

    @max_job_bytes.setter
    def max_job_bytes(self, value: int | None) -> None:
        self._max_job_bytes = value
        self.limited = value is not None or self._max_job_id is not None

    @property
    def max_job_id(self) -> int | None:
        """Job ids must stay below this; None for any id the server makes."""
        return self._max_job_id

    @max_job_id.setter
    def max_job_id(self, value: int | None) -> None:
        self._max_job_id = value
        self.limited = value is not None or self._max_job_bytes is not None

    def refusal(self, job: StoredJob) -> str | None:
        """See QueueStore.refusal: the row size against ``max_job_bytes``, the id
        against ``max_job_id``."""
        limit = self.max_job_bytes
        if limit is not None:
            size = row_size(job)
            if size > limit:
                return (
                    f"Job of {size} bytes is larger than the persistent queue takes ({limit})"
                    f"{self.size_advice}"
                )
        if self.max_job_id is not None and not 0 <= job.id < self.max_job_id:
            return (
                f"job id {job.id} is outside the {self.name} queue's range [0, {self.max_job_id})"
            )
        return None

    async def ping(self) -> None:
        if self._writer is None or self._closing:
            raise QueueError(f"{self.name}: queue is not open")
        if self._down_reason is not None:
            raise QueueError(f"{self.name} unavailable: {self._down_reason}")
        if self._io_lock.locked():
            # A write is in flight on the connection: it proves or disproves reachability
            # itself (a write that hangs times out and marks the store down), and a probe
            # must not queue behind a large batch.
            return
        try:
            async with self._io_lock, asyncio.timeout(self.timeout):
                await self._ping()
        except Exception as exc:
            raise QueueError(f"{self.name} unreachable: {describe(exc)}") from exc

    def add(self, job: StoredJob) -> Awaitable[None]:
        return self.add_many([job])

    def add_many(self, jobs: list[StoredJob]) -> Awaitable[None]:
        """Store ``jobs`` together: one future for all, resolved when all are durable."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def settled(error: QueueError | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        self.add_then(jobs, settled)
        return future

    def _refusal(self, jobs: list[StoredJob]) -> str | None:
        for job in jobs:
            refused = self.refusal(job)
            if refused is not None:
                return refused
        return None

    def add_then(self, jobs: list[StoredJob], settled: Settled) -> None:
        """Store ``jobs`` together, then call ``settled(None)``, or ``settled(error)``.

        What the server uses for the jobs submitted in one loop turn. ``settled`` runs
        on the event loop right where the write completes, not one loop turn later as
        a future's callbacks do: under load every such turn is milliseconds that the
        submitters spend waiting for their JOB_CREATED.
        """
        refused = self._refusal(jobs) if self.limited else None
        if refused is not None:
            error = QueueError(f"{self.name}: {refused}")
        elif self._writer is None or self._closing:
            error = QueueError(f"{self.name}: queue store is not open")
        elif self._down_reason is not None:
            error = QueueError(f"{self.name} unavailable: {self._down_reason}")
        else:
            self._adds.append(_Add(jobs, settled))
            self._wake.set()
            return
        asyncio.get_running_loop().call_soon(settled, error)  # never from inside the call

    def remove(self, job_id: int) -> None:
        self._removes.append(job_id)
        self._wake_later()

    def update_retries(self, job_id: int, retries: int) -> None:
        pending = self._reschedules.get(job_id)
        if pending is not None:  # written after the retry counts: it must carry this one
            self._reschedules[job_id] = (pending[0], retries)
        else:
            self._retries[job_id] = retries
        self._wake_later()

    def reschedule(self, job_id: int, when: int, retries: int) -> None:
        self._retries.pop(job_id, None)
        self._reschedules[job_id] = (when, retries)
        self._wake_later()

    def add_dead(self, job: DeadJob) -> None:
        self._dead_adds.append(job)
        self._wake_later()

    def remove_dead(self, dead_id: int) -> None:
        self._dead_removes.append(dead_id)
        self._wake_later()

    async def load_dead(self) -> list[DeadJob]:
        async with self._io_lock:
            try:
                return await self._load_dead()
            except Exception as exc:
                raise QueueError(f"{self.name}: cannot load dead jobs: {describe(exc)}") from exc

    def _wake_later(self) -> None:
        # Nobody waits for a remove or a retry count: let them gather for a moment
        # rather than pay one commit (one fsync, with SQLite FULL) for every few
        # finished jobs. An add arriving meanwhile takes them along at once. If the
        # server dies inside the delay, the finished job runs again after restart
        # (delivery is at least once).
        if self._lazy_wake is None and not self._wake.is_set():
            loop = asyncio.get_running_loop()
            self._lazy_wake = loop.call_later(LAZY_WRITE_DELAY, self._wake_lazy)

    async def _gather_lazy_writes(self) -> None:
        # Only removes and retry counts are queued: give more of them (or an add,
        # which ends the wait) a moment to join this commit.
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LAZY_WRITE_DELAY):
                await self._wake.wait()

    def _wake_lazy(self) -> None:
        self._lazy_wake = None
        self._wake.set()

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if self._lazy_wake is not None:
            self._lazy_wake.cancel()
            self._lazy_wake = None
        self._closing = True
        self._close_requested.set()
        self._wake.set()
        if writer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(writer), self.close_timeout)
            except TimeoutError:
                writer.cancel()
                logger.warning(
                    "%s: gave up flushing %d queued writes at close: %s",
                    self.name,
                    self.outstanding,
                    self._down_reason or "backend too slow",
                )
                await asyncio.gather(writer, return_exceptions=True)
        # Whatever the cancelled writer held: its outcome is unknown, so those adds
        # fail (at worst the job was stored anyway and runs once more after a restart).
        for taken in self._in_flight:
            self._put_back(taken)
        self._in_flight = []
        self._fail_waiting_adds(f"{self.name}: queue store closed")
        # Released before disconnecting, so that a server started right after this one
        # stops finds the queue free without waiting for the database to notice.
        await self._give_up_claim()
        await self._disconnect()

    # -- the writer --------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if self._closing and not self.outstanding:
                return
            if self._down_reason is not None:
                await self._reconnect_with_backoff()
                continue
            if not self.outstanding:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._failures:
                await self._sleep_unless_closing(self._retry_delay())
            elif not self._closing and not self._adds:
                await self._gather_lazy_writes()
            await self._commit_taken(self._take())

    async def _commit_taken(self, taken: _Taken) -> None:
        # Left in _in_flight if cancelled: close() then fails its adds.
        self._in_flight.append(taken)
        try:
            await self._commit(taken)
        except Exception as exc:  # a bug in a backend hook must not kill the writer
            logger.exception("%s: unexpected error in the queue writer", self.name)
            self._batch_failed(taken, exc, lost=False)
        self._in_flight.remove(taken)

    def _retry_delay(self) -> float:
        return backoff_delay(self._failures - 1, self.backoff_initial, self.backoff_max)

    async def _sleep_unless_closing(self, delay: float) -> None:
        # Only close() cuts a delay short: waking on every new remove would hammer a
        # backend that is down. A closing store still retries, just without waiting long.
        if self._closing:
            await asyncio.sleep(min(delay, 0.05))
            return
        try:
            async with asyncio.timeout(delay):
                await self._close_requested.wait()
        except TimeoutError:
            pass

    def _take(self, *, adds_only: bool = False) -> _Taken:
        """The next batch: up to ``max_batch`` jobs and ``max_batch_bytes`` of adds,
        and up to ``max_batch`` removes and as many retry counts.

        Removes and retry counts have budgets of their own (a few bytes each), so a
        stream of submissions never starves them, nor they the submissions. An
        add_many is never split (its jobs share one outcome), so a batch may exceed
        the limits by one such add. ``adds_only`` (between the chunks of a large
        payload) takes adds up to the first one with a spooled payload, and nothing else.
        """
        taken = _Taken()
        adds = self._adds
        size = count = 0
        while adds and count < self.max_batch:
            add = adds[0]
            if not add.size:
                add.size = _add_size(add.jobs)
                # The types of the payloads, collected in C, and only while any spooled
                # payload exists: this runs for every job.
                add.spooled = Spooled.open_count > 0 and Spooled in set(
                    map(type, map(_data, add.jobs))
                )
            if taken.adds and size + add.size > self.max_batch_bytes:
                break
            if adds_only and add.spooled:
                break
            taken.adds.append(adds.popleft())
            size += add.size
            count += len(add.jobs)
        if adds_only:
            return taken
        removes = self._removes
        if len(removes) <= self.max_batch:
            taken.removes, self._removes = removes, []
        else:
            taken.removes, self._removes = removes[: self.max_batch], removes[self.max_batch :]
        if len(self._retries) <= self.max_batch:
            taken.retries, self._retries = self._retries, {}
        else:
            for job_id in list(self._retries)[: self.max_batch]:
                taken.retries[job_id] = self._retries.pop(job_id)
        if self._reschedules:
            self._take_reschedules(taken)
        if self._dead_adds or self._dead_removes:
            # Few and small (bounded by the dead-letter queue's own limits): all at once.
            taken.dead_adds, self._dead_adds = self._dead_adds, []
            taken.dead_removes, self._dead_removes = self._dead_removes, []
        return taken

    def _take_reschedules(self, taken: _Taken) -> None:
        if len(self._reschedules) <= self.max_batch:
            taken.reschedules, self._reschedules = self._reschedules, {}
        else:
            for job_id in list(self._reschedules)[: self.max_batch]:
                taken.reschedules[job_id] = self._reschedules.pop(job_id)

    def _put_back(self, taken: _Taken) -> None:
        """Return what a batch took to the front of the queues (its adds included)."""
        self._adds.extendleft(reversed(taken.adds))
        self._removes[:0] = taken.removes
        # A count set while the batch was out is newer than the one it carried.
        self._retries = taken.retries | self._retries
        if taken.reschedules:
            reschedules = taken.reschedules | self._reschedules
            for job_id, (when, _) in taken.reschedules.items():
                newer = self._retries.pop(job_id, None)
                if newer is not None and job_id not in self._reschedules:
                    reschedules[job_id] = (when, newer)
            self._reschedules = reschedules
        self._dead_adds[:0] = taken.dead_adds
        self._dead_removes[:0] = taken.dead_removes

    async def _commit(self, taken: _Taken) -> None:
        started = time.perf_counter()
        batch = make_batch(taken)
        chunked = self._chunked
        if chunked:
            batch.chunk_removes = [job_id for job_id in batch.removes if job_id in chunked]
        failure = None
        if any(add.spooled for add in taken.adds):
            failure = await self._store_chunks(batch)
        if failure is None:
            failure = await self._write_retrying(batch)
        if failure is not None:
            self._batch_failed(taken, *failure)
            return
        if batch.chunk_removes:
            chunked.difference_update(batch.chunk_removes)
        elapsed = time.perf_counter() - started
        self.commits += 1
        self.commit_seconds.observe(elapsed)
        self.batch_operations.observe(len(batch.adds) + len(batch.removes) + len(batch.retries))
        self._failures = 0
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s: committed %d adds, %d removes, %d retry counts in %.1f ms",
                self.name,
                len(batch.adds),
                len(batch.removes),
                len(batch.retries),
                elapsed * 1e3,
            )
        for add in taken.adds:
            add.settle(None)

    async def _write_retrying(self, batch: Batch) -> tuple[Exception, bool] | None:
        """Write ``batch``, reconnecting once if the connection was lost.

        Returns None, or the error and whether it looks like a lost connection.
        """
        for attempt in (1, 2):
            try:
                async with self._io_lock, asyncio.timeout(self.timeout):
                    await self._write(batch)
            except Exception as exc:
                lost = self._lost_connection(exc)
                if lost and attempt == 1 and await self._reconnect_once(exc):
                    continue
                return exc, lost
            break
        return None

    async def _store_chunks(self, batch: Batch) -> tuple[Exception, bool] | None:
        """Write the chunks of the spooled payloads in ``batch``, each job's in turn.

        Their rows then carry an empty ``data``. Returns None or the first failure.
        """
        for index, job in enumerate(batch.adds):
            data = job.data
            if not isinstance(data, Spooled):  # bytes, by StoredJob's contract
                continue
            if data.size:
                self._chunked.add(job.id)  # from now on a remove deletes its chunks
                failure = await self._write_chunks(job.id, data)
                if failure is not None:
                    return failure
            batch.adds[index] = job._replace(data=b"")
        return None

    async def _write_chunks(self, job_id: int, data: Spooled) -> tuple[Exception, bool] | None:
        """``data`` as chunks, ``max_batch_bytes`` of them per transaction (at least one).

        Only one transaction's chunks are read from the spool file at a time.
        """
        size = self._chunk_size()
        per_batch = max(1, self.max_batch_bytes // size)
        offsets = range(0, data.size, size)
        for first in range(0, len(offsets), per_batch):
            chunks = [
                (job_id, seq, data.read(offset, size))
                for seq, offset in enumerate(offsets[first : first + per_batch], start=first)
            ]
            failure = await self._write_retrying(Batch(chunks=chunks))
            if failure is None and self._adds:
                failure = await self._commit_between_chunks()
            if failure is not None:
                return failure
        return None

    async def _commit_between_chunks(self) -> tuple[Exception, bool] | None:
        """Commit the small adds that arrived meanwhile, so that they wait for one chunk
        transaction, not for the whole payload (a GiB takes SQLite tens of seconds).

        Only adds: a retry count or a remove of an id must not overtake the one in the
        batch being written. Returns a failure if the store went down meanwhile.
        """
        taken = self._take(adds_only=True)
        if taken.adds:
            await self._commit_taken(taken)
        if self._down_reason is not None:
            return ConnectionResetError(f"{self.name} unavailable: {self._down_reason}"), True
        return None

    def _lost_connection(self, exc: BaseException) -> bool:
        if isinstance(exc, TimeoutError):
            return True
        try:
            return self._is_connection_error(exc)
        except Exception:
            logger.exception("%s: cannot classify %r", self.name, exc)
            return True  # reconnecting is the safe guess

    def _batch_failed(self, taken: _Taken, exc: BaseException, lost: bool) -> None:
        self.failed_batches += 1
        self._failures += 1
        reason = describe(exc)
        operations = sum(len(add.jobs) for add in taken.adds)
        operations += len(taken.removes) + len(taken.retries) + len(taken.reschedules)
        operations += len(taken.dead_adds) + len(taken.dead_removes)
        logger.warning("%s: write of %d operations failed: %s", self.name, operations, reason)
        error = QueueError(f"{self.name}: {reason}")
        for add in taken.adds:
            add.settle(error)
        # Removes and retry updates go back in front. A refused add is also undone:
        # when the connection died during COMMIT the rows may have been written
        # although we report failure, and a job its client was told is not queued
        # must never run after a restart.
        # A job whose chunks may have been written is undone in any case, so that the
        # remove deletes them.
        chunked = self._chunked
        undo = [job.id for add in taken.adds for job in add.jobs if lost or job.id in chunked]
        self._put_back(
            _Taken(
                removes=taken.removes + undo,
                retries=taken.retries,
                reschedules=taken.reschedules,
                dead_adds=taken.dead_adds,
                dead_removes=taken.dead_removes,
            )
        )
        if lost:
            self._down_reason = reason
            self._fail_waiting_adds(f"{self.name} unavailable: {reason}")

    def _fail_waiting_adds(self, reason: str) -> None:
        adds, self._adds = self._adds, deque()
        for add in adds:
            add.settle(QueueError(reason))

    async def _reconnect_once(self, exc: BaseException) -> bool:
        logger.info("%s: connection lost (%s), reconnecting", self.name, describe(exc))
        try:
            async with self._io_lock, asyncio.timeout(self.timeout):
                await self._disconnect()
                await self._connect_claimed()
        except Exception as err:
            logger.warning("%s: reconnect failed: %s", self.name, describe(err))
            return False
        self.reconnects += 1
        return True

    async def _reconnect_with_backoff(self) -> None:
        attempt = 0
        while self._down_reason is not None:
            if self._closing and not self.outstanding:
                return
            await self._sleep_unless_closing(
                backoff_delay(attempt, self.backoff_initial, self.backoff_max)
            )
            attempt += 1
            if self._down_reason is None:  # load() reconnected while we slept
                break
            try:
                async with self._io_lock, asyncio.timeout(self.timeout):
                    await self._disconnect()
                    await self._connect_claimed()
            except Exception as exc:
                self._down_reason = describe(exc)
                logger.debug("%s: reconnect attempt %d failed: %s", self.name, attempt, exc)
                continue
            logger.info("%s: reconnected after %d attempts", self.name, attempt)
            self.reconnects += 1
            self._down_reason = None
            self._failures = 0
