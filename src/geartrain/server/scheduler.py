"""The job table: submission, coalescing, queues, assignment, results and retries.

Theory of operation
-------------------
Every job lives in ``Scheduler.jobs`` (by handle) and, when it has a coalescing
key, in its function's ``uniques``. A job moves through the states of
:class:`~geartrain.server.jobs.JobState`::

    STORING --durable--> QUEUED / SCHEDULED --due--> QUEUED --grab--> RUNNING --result--> ENDED
       |                    ^           ^                     |   |
       +--store error--> ENDED   +------|---worker lost / timeout-+   |  (retries permitting)
                                        +---failed, retry policy------+  (attempts permitting)

A background job whose function has a retry policy (``server/retry.py``) and whose
attempt ends in an outcome the policy covers goes back to SCHEDULED, due after the
policy's backoff delay, keeping its handle, unique and priority: GET_STATUS shows it
known and not running until it runs again. Its attempt count (``retries``) and new
run-at time are written to the persistent queue, so a restart resumes the backoff.

Priority is global across the functions a worker can do and functions of equal
priority take turns (gearmand 2.0's rule, PROTOCOL.md §6.4): a grab looks for a
HIGH job in each of the worker's functions starting at the worker's rotation
index, then NORMAL, then LOW, and moves the index past the function it served.
Inside one priority, jobs are FIFO.

A background job bound for the persistent queue takes its place in its queue at
once, in state STORING, while it is written; its JOB_CREATED waits for the write. A
grab whose best job is still STORING gets nothing (the worker is woken when the
write settles) rather than a job behind it, so jobs run in the same priority and
FIFO order whatever the backend, and no job runs before it is durable. A refused
write ends its jobs, whose queue entries are then skipped.

Sleeping workers (PRE_SLEEP) sit in each of their functions' ``sleepers``; a job
becoming runnable NOOPs them (all, or ``worker_wakeup`` of them) and takes them
out everywhere, so each sleeping worker is woken at most once until it grabs.

The scheduler does no socket I/O: it talks to connections through
:class:`~geartrain.server.jobs.Peer` ``send`` methods and to time through the two
callables it is given, so tests drive it with fakes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from itertools import islice
from math import ceil

from geartrain.protocol.codec import Payload, as_bytes
from geartrain.protocol.constants import MAX_UNIQUE_SIZE, ErrorCode
from geartrain.protocol.numbers import parse_c_int
from geartrain.protocol.spool import Spooled

from . import replies
from .budget import MemoryBudget
from .dead import Attempt, DeadLimits, DeadQueue, encode_attempts, exception_text
from .epoch import CallLater, EpochQueue
from .jobs import NO_CLIENTS, Function, Job, JobState, Peer
from .persistence.base import DeadJob, QueueError, QueueStore, StoredJob
from .replies import send_with_data
from .retry import Outcome, RetryPolicies, RetryPolicy
from .writes import WriteGroup

logger = logging.getLogger(__name__)

_new_record = tuple.__new__

# Enum members as plain module names: a class-attribute lookup on an Enum costs
# ~60 ns in Python 3.11, a module global ~6 ns, and these are read per packet.
STORING, SCHEDULED, QUEUED, RUNNING, ENDED = (
    JobState.STORING,
    JobState.SCHEDULED,
    JobState.QUEUED,
    JobState.RUNNING,
    JobState.ENDED,
)
_WORK_COMPLETE = replies.WORK_COMPLETE

#: CAN_DO_TIMEOUT values are milliseconds with a floor of one second (gearmand 1.1.19+).
_MIN_TIMEOUT_MS = 1000

Error = tuple[bytes, bytes]  # (code, text) of an ERROR packet


class Scheduler:
    """All job state of one server.

    Args:
        handle_prefix: job handles are ``<prefix>:<n>``.
        job_retries: attempts before a job whose workers keep failing is dropped
            with WORK_FAIL; 0 = unlimited (gearmand 1.1's meaning).
        worker_wakeup: NOOPs sent per newly runnable job; 0 = every sleeper.
        store: the persistent queue for background jobs, or None.
        call_later: ``loop.call_later``-compatible timer factory.
        clock: wall clock in Unix seconds (for epoch jobs).
        retry: retry policies of failed background jobs, by function name pattern.
        randomness: numbers in [0, 1) for the jitter of retry delays.
        dead_letter: keep background jobs that fail with no retry policy as dead jobs
            (jobs that exhaust a policy are always kept).
        dead_limits: the bounds of the dead-letter queue.
    """

    def __init__(
        self,
        *,
        handle_prefix: bytes = b"H:localhost",
        job_retries: int = 0,
        worker_wakeup: int = 0,
        store: QueueStore | None = None,
        call_later: CallLater | None = None,
        clock: Callable[[], float] = time.time,
        retry: RetryPolicies | None = None,
        randomness: Callable[[], float] = random.random,
        dead_letter: bool = False,
        dead_limits: DeadLimits | None = None,
    ) -> None:
        self.handle_prefix = handle_prefix
        self.job_retries = job_retries
        self.worker_wakeup = worker_wakeup
        self.store = store
        self._call_later = call_later
        self._clock = clock
        self.functions: dict[bytes, Function] = {}
        self.jobs: dict[bytes, Job] = {}
        self._counter = 0
        self._next_store_id = 1
        self._epoch = EpochQueue(self._epoch_due, clock, call_later)
        self._group: WriteGroup | None = None
        #: ``time.monotonic_ns()`` as of the read being handled, set by the connection once
        #: per read (not per job) and by the timers here: jobs take it as their ``since_ns``
        #: for the wait and run time histograms.
        self.now_ns = time.monotonic_ns()
        self.retry = retry if retry else None
        self._randomness = randomness
        # With --dead-letter, functions without a policy get this one: one attempt,
        # then the failed job is kept as a dead job instead of vanishing.
        self._dead_policy = (
            RetryPolicy("*", 1, outcomes=Outcome.FAIL | Outcome.EXCEPTION) if dead_letter else None
        )
        self.dead = DeadQueue(dead_limits, store)
        # How the attempts of jobs that failed and are being retried ended (only jobs
        # whose function has a policy), by handle, for the dead-letter record. Entries of
        # jobs that later succeeded are pruned here, on the failure path, so that a job
        # that ends costs nothing extra (see _note_attempt).
        self._attempts: dict[bytes, list[Attempt]] = {}
        self._prune_attempts_at = 64
        #: In-memory payload bytes of the jobs in ``jobs``, for the memory budget, and the
        #: totals at which the budget wants to hear of a new job (above ``job_room``) or of
        #: a forgotten one (below ``job_room_low``): two plain int comparisons a job.
        self.job_bytes = 0
        self.job_room = 0
        self.job_room_low = -1
        self.memory = MemoryBudget(0)
        self.memory.set_rooms(self)

    def use_memory_budget(self, memory: MemoryBudget) -> None:
        """Count and enforce ``memory`` from now on (set before jobs are made)."""
        self.memory = memory
        memory.set_rooms(self)

    def use_timers(self, call_later: CallLater) -> None:
        """Set the timer factory once an event loop runs (``loop.call_later``)."""
        self._call_later = call_later
        self._epoch.call_later = call_later

    def _next_handle(self) -> bytes:
        # <prefix>:<n>, n from 1 at every start, as gearmand numbers them (§4.7).
        self._counter += 1
        return b"%s:%d" % (self.handle_prefix, self._counter)

    # -- functions ---------------------------------------------------------------

    def function(self, name: bytes) -> Function:
        """The function record for ``name``, created on first sight."""
        f = self.functions.get(name)
        if f is None:
            f = self.functions[name] = Function(name)
            if self.retry is not None:
                f.retry = self.retry.resolve(name)
            if f.retry is None:
                f.retry = self._dead_policy
        return f

    # -- submission --------------------------------------------------------------

    def submit(
        self,
        peer: Peer | None,
        name: bytes,
        unique: bytes,
        data: Payload,
        priority: int,
        background: bool,
        when: float = 0,
        reducer: bytes = b"",
    ) -> Job | Error:
        """Submit or coalesce a job; returns the job or an ERROR (code, text).

        A returned job in state STORING is not acknowledged yet: the caller must
        wait for ``job.write`` before sending JOB_CREATED.
        """
        if len(unique) > MAX_UNIQUE_SIZE:
            return ErrorCode.ARGUMENT_TOO_LARGE, b"Unique value too large"
        f = self.functions.get(name) or self.function(name)
        key = coalescing_key(unique, data)
        if key is not None:
            existing = f.uniques.get(key)
            if existing is not None:
                f.coalesced[priority] += 1
                return _coalesced(peer, existing, background)
        limit = f.max_queue[priority]
        if limit and f.total >= limit:
            return ErrorCode.QUEUE_ERROR, b"Job queue is full"
        # Every queue stores whole seconds: rounded up, so that a job replayed after a
        # restart never runs early. ``due`` keeps the exact time for the timer.
        epoch = ceil(when) if when else 0
        store = self.store
        if background and store is not None and store.limited:
            refused = self._refusal(self._record(name, unique, data, priority, epoch, reducer))
            if refused is not None:
                return refused
        # The memory budget is asked only past its room (budget.py): one sum and one
        # compare a job. Spooled payloads live in files and do not count.
        size = 0 if type(data) is Spooled else len(data)
        job_bytes = self.job_bytes + size
        if job_bytes > self.job_room and (
            (refused := self.memory.job_over(self, peer, size, background)) is not None
        ):
            return refused
        self.job_bytes = job_bytes
        job = Job(self._next_handle(), f, unique, data, priority, background)
        job.since_ns = self.now_ns
        f.submitted[priority] += 1
        if when:
            job.when = epoch
            job.due = when
        job.reducer = reducer
        if key is not None:
            job.key = key
            f.uniques[key] = job
        self.jobs[job.handle] = job
        if peer is not None and not background:
            _attach(peer, job)
        if background and store is not None:
            self._persist(job)
        else:
            self._release(job)
        return job

    def _record(
        self, name: bytes, unique: bytes, data: Payload, priority: int, when: int, reducer: bytes
    ) -> StoredJob:
        """The stored form of a new background job, under the id it would get next."""
        stored = data if data.__class__ is bytes else _stored_data(data)
        return StoredJob(self._next_store_id, name, unique, stored, priority, when, reducer)

    def _refusal(self, record: StoredJob) -> Error | None:
        """The store's refusal of a job, checked before it joins a write group: a job
        the backend cannot take would fail the write of every job submitted with it."""
        assert self.store is not None
        refused = self.store.refusal(record)
        if refused is None:
            return None
        return ErrorCode.QUEUE_ERROR, refused.encode(errors="replace")

    def _persist(self, job: Job) -> None:
        """Hand a background job to the store; it becomes runnable once durable.

        Jobs submitted in one loop turn form a write group: they share one future,
        which the connections wait on for their JOB_CREATED replies, so a group
        commit of a thousand jobs costs a couple of callbacks rather than thousands.
        """
        job.state = STORING
        f = job.function
        f.storing += 1
        store_id = job.store_id = self._next_store_id
        self._next_store_id = store_id + 1
        group = self._group
        if group is None:
            group = self._group = WriteGroup()
            asyncio.get_running_loop().call_soon(self._close_group)
        group.jobs.append(job)
        if not job.when:  # epoch jobs wait in the epoch queue, not in line
            f.queues[job.priority].append(job)
        data = job.data
        # The record is built here rather than by _record: this runs once per stored
        # job, and tuple.__new__ skips the NamedTuple's Python-level constructor.
        group.records.append(
            _new_record(
                StoredJob,
                (
                    store_id,
                    f.name,
                    job.unique,
                    data if data.__class__ is bytes else _stored_data(data),
                    job.priority,
                    job.when,
                    job.reducer,
                    0,  # retries: a job is stored when first submitted
                ),
            )
        )
        job.write = group

    def _close_group(self) -> None:
        group = self._group
        self._group = None
        if group is None or self.store is None:
            return
        records, group.records = group.records, []  # the store has them now
        self.store.add_then(records, partial(self._settle_group, group))

    def _settle_group(self, group: WriteGroup, error: QueueError | None) -> None:
        # Settled: the jobs no longer need their group, and the group must not keep
        # finished jobs alive (a job and its group referencing each other would leave
        # every finished job of a group to the cyclic collector).
        jobs, group.jobs = group.jobs, []
        if error is None:
            self._release_stored(jobs)
        else:
            logger.warning("persistent queue refused %d jobs: %s", len(jobs), error)
            for job in jobs:
                job.write = None
                if job.state is STORING:  # else cancelled while being written
                    job.store_id = 0
                    self._unlink(job)
        # The connections holding JOB_CREATED for these jobs send them now, or as many
        # ERROR QUEUE_ERROR replies with this reason.
        group.settle(
            None if error is None else str(error).encode(errors="replace") or b"QUEUE_ERROR"
        )

    def _release_stored(self, jobs: list[Job]) -> None:
        """Release the jobs of a committed write group, as ``_release`` each."""
        store = self.store
        assert store is not None
        for job in jobs:
            job.write = None
            f = job.function
            if job.state is not STORING:  # cancelled while being written
                store.remove(job.store_id)
                continue
            f.storing -= 1
            if job.when:
                self._release(job)
                continue
            # Runnable where it already stands in its queue. Inline: this runs once for
            # every stored job.
            job.state = QUEUED
            f.queued[job.priority] += 1
            if f.sleepers:
                self._wake(f)

    def _release(self, job: Job) -> None:
        """Make an acknowledged job runnable now, or schedule it for its epoch."""
        if job.when and job.due > self._clock():
            self._schedule(job)
        else:
            self._enqueue(job)

    def _enqueue(self, job: Job) -> None:
        f = job.function
        job.state = QUEUED
        f.queues[job.priority].append(job)
        f.queued[job.priority] += 1
        if f.sleepers:
            self._wake(f)

    # -- epoch jobs -------------------------------------------------------------

    def _schedule(self, job: Job) -> None:
        job.state = SCHEDULED
        job.function.scheduled += 1
        self._epoch.add(job)

    def _epoch_due(self, job: Job) -> None:
        if job.state is SCHEDULED:  # not cancelled or abandoned meanwhile
            job.function.scheduled -= 1
            job.since_ns = self.now_ns = time.monotonic_ns()  # it waits from when it is due
            self._enqueue(job)

    # -- workers -----------------------------------------------------------------

    def can_do(self, peer: Peer, name: bytes, timeout_ms: int = 0) -> None:
        f = self.function(name)
        if f not in peer.abilities:
            peer.ability_list.append(f)
            f.workers[peer] = None
        peer.abilities[f] = timeout_ms
        if peer.sleeping and not peer.noop_sent:
            if self._select(peer) >= 0:
                self._noop(peer)
            else:
                f.sleepers[peer] = None

    def cant_do(self, peer: Peer, name: bytes) -> None:
        f = self.functions.get(name)
        if f is None or f not in peer.abilities:
            return
        del peer.abilities[f]
        peer.ability_list.remove(f)
        f.workers.pop(peer, None)
        f.sleepers.pop(peer, None)
        for job in [j for j in peer.assigned if j.function is f]:
            self._lost(job, "worker dropped the function", Outcome.LOST)

    def reset_abilities(self, peer: Peer) -> None:
        for f in list(peer.ability_list):
            self.cant_do(peer, f.name)

    def pre_sleep(self, peer: Peer) -> None:
        if self._select(peer) >= 0:
            peer.send(replies.NOOP)
            return
        peer.sleeping = True
        if not peer.noop_sent:
            for f in peer.ability_list:
                f.sleepers[peer] = None

    def _wake(self, f: Function) -> None:
        limit = self.worker_wakeup
        woken = list(f.sleepers) if not limit else list(islice(f.sleepers, limit))
        for peer in woken:
            self._noop(peer)

    def _noop(self, peer: Peer) -> None:
        peer.noop_sent = True
        for f in peer.ability_list:
            f.sleepers.pop(peer, None)
        peer.send(replies.NOOP)

    def grab(self, peer: Peer) -> Job | None:
        """Assign the best runnable job to ``peer``, or None (NO_JOB)."""
        if peer.sleeping or peer.noop_sent:
            peer.sleeping = peer.noop_sent = False
            for f in peer.ability_list:
                f.sleepers.pop(peer, None)
        selected = self._select(peer)
        if selected < 0:
            return None
        index, priority = divmod(selected, 3)
        peer.rotation = (index + 1) % len(peer.ability_list)
        return self._start_next(peer, peer.ability_list[index], priority)

    def _select(self, peer: Peer) -> int:
        """Where the job ``peer`` should get next is, as ``3 * function index + priority``.

        -1 when there is none, and also when that job is still being written to the
        persistent queue: the worker waits for it rather than take one that comes after.
        (One int rather than a tuple: this runs for every grab.)
        """
        functions = peer.ability_list
        count = len(functions)
        start = peer.rotation
        for priority in (0, 1, 2):
            for i in range(count):
                index = (start + i) % count
                f = functions[index]
                if f.storing and _being_written(f.queues[priority]):
                    return -1  # the next job is being written: wait for it
                if f.queued[priority]:
                    return 3 * index + priority
        return -1

    def _start_next(self, peer: Peer, f: Function, priority: int) -> Job:
        """Take the first live job of ``f``'s ``priority`` queue and run it on ``peer``."""
        queue = f.queues[priority]
        job = queue.popleft()
        while job.state is not QUEUED:  # lazily dropped (cancelled/abandoned)
            job = queue.popleft()
        f.queued[priority] -= 1
        f.running += 1
        job.state = RUNNING
        job.worker = peer
        now = self.now_ns
        waited = now - job.since_ns
        waited_histogram = f.waited
        waited_histogram.counts[waited.bit_length()] += 1  # observe(waited), inlined
        waited_histogram.sum_ns += waited
        job.since_ns = now
        peer.assigned[job] = None
        timeout = peer.abilities.get(f, 0)
        if timeout > 0 and self._call_later is not None:
            job.timer = self._call_later(
                max(timeout, _MIN_TIMEOUT_MS) / 1000.0, self._timed_out, job, peer
            )
        return job

    def _timed_out(self, job: Job, peer: Peer) -> None:
        job.timer = None
        if job.worker is peer and job.state is RUNNING:
            logger.info("job %r timed out on its worker", job.handle)
            job.function.timed_out[job.priority] += 1
            self.now_ns = time.monotonic_ns()
            self._lost(job, "timeout", Outcome.TIMEOUT)

    def requeue(self, job: Job, reason: str) -> None:
        """Put a running job back in its queue (counted against ``job_retries``)."""
        logger.info("job %r requeued: %s", job.handle, reason)
        self._requeue(job, reason)

    def _requeue(self, job: Job, reason: str) -> None:
        f = job.function
        f.running -= 1
        f.requeued[job.priority] += 1
        _unbind(job)
        job.retries += 1
        if self.job_retries and job.retries >= self.job_retries:
            logger.warning("dropped job %r after %d attempts (%s)", job.handle, job.retries, reason)
            if job.background and job.function.retry is not None:
                self._bury(job)
                return
            self._forward_fail(job)
            f.failed[job.priority] += 1
            job.state = ENDED
            self._forget(job)
            return
        job.numerator = job.denominator = 0
        job.since_ns = self.now_ns
        if job.store_id and self.store is not None:
            self.store.update_retries(job.store_id, job.retries)
        self._enqueue(job)

    # -- retry policies ---------------------------------------------------------------

    def _lost(self, job: Job, reason: str, outcome: Outcome) -> None:
        """A running job lost its worker (or timed out): retried after a delay if its
        policy covers ``outcome``, else requeued at once as gearmand does."""
        policy = job.function.retry
        if policy is None or not _retried(job, policy):
            self._requeue(job, reason)
            return
        self._note_attempt(job, outcome, reason)
        if outcome in policy.outcomes:
            logger.info("job %r: %s", job.handle, reason)
            self._retry_or_end(job, policy, outcome)
        else:
            self._requeue(job, reason)

    def _note_attempt(self, job: Job, outcome: Outcome, text: str) -> None:
        worker = job.worker
        who = "-" if worker is None else f"{worker.ip} {worker.client_id.decode(errors='replace')}"
        attempt = Attempt(self._clock(), who, (outcome.name or "").lower(), text)
        attempts = self._attempts.get(job.handle)
        if attempts is not None:
            attempts.append(attempt)
            return
        if len(self._attempts) >= self._prune_attempts_at:
            # Forget the jobs that ended since (handles are never reused while the
            # server runs); amortized O(1), and at most about twice the live entries.
            jobs = self.jobs
            self._attempts = {h: a for h, a in self._attempts.items() if h in jobs}
            self._prune_attempts_at = 2 * len(self._attempts) + 64
        self._attempts[job.handle] = [attempt]

    def _failed(self, job: Job, policy: RetryPolicy, outcome: Outcome, text: str) -> None:
        """The worker reported a failure it is done with (WORK_FAIL, WORK_EXCEPTION)."""
        worker = job.worker
        if worker is not None:
            worker.ended.append(job.handle)  # a WORK_FAIL after WORK_EXCEPTION is ignored
        self._note_attempt(job, outcome, text)
        self._retry_or_end(job, policy, outcome)

    def _retry_or_end(self, job: Job, policy: RetryPolicy, outcome: Outcome) -> None:
        """Count the attempt; schedule the next one after the backoff, or end the job.

        Waiting clients (foreground submitters coalesced onto a background job) stay
        attached: they get the outcome of the last attempt.
        """
        job.function.running -= 1
        _unbind(job)
        job.retries += 1
        job.numerator = job.denominator = 0
        if job.retries >= policy.attempts:
            logger.warning(
                "job %r of %r failed (%s) after %d attempts",
                job.handle,
                job.function.name,
                outcome.name,
                job.retries,
            )
            self._bury(job)
            return
        delay = policy.delay(job.retries, self._randomness())
        job.due = self._clock() + delay
        # Whole seconds in the store, rounded up as for epoch jobs: never early.
        job.when = ceil(job.due)
        logger.info(
            "job %r failed (%s), attempt %d of %d; retried in %.3g s",
            job.handle,
            outcome.name,
            job.retries,
            policy.attempts,
            delay,
        )
        job.function.retried[job.priority] += 1
        if job.store_id and self.store is not None:
            self.store.reschedule(job.store_id, job.when, job.retries)
        self._schedule(job)

    def _bury(self, job: Job) -> None:
        """End a background job that failed for good, keeping it as a dead job."""
        attempts = self._attempts.pop(job.handle, [])
        job.function.dead_lettered[job.priority] += 1
        dead_id = self._next_store_id
        self._next_store_id = dead_id + 1
        now = self._clock()
        record = DeadJob(
            dead_id,
            job.handle,
            job.function.name,
            job.unique,
            as_bytes(job.data),
            job.priority,
            job.reducer,
            now,
            encode_attempts(job.retries, attempts),
        )
        self._forward_fail(job)
        job.state = ENDED
        self._forget(job)
        self.dead.add(record, now)

    def expire_dead(self) -> DeadQueue:
        """The dead-letter queue, without the jobs its age bound has expired since the
        last death (the bounds are otherwise applied when a job dies)."""
        self.dead.trim(self._clock())
        return self.dead

    def restore_dead(self, store: QueueStore | None, records: list[DeadJob]) -> None:
        """Take back the stored dead jobs at start-up (after ``restore``)."""
        self.dead.store = store
        self.dead.restore(records, self._clock())
        for record in records:
            self._next_store_id = max(self._next_store_id, record.id + 1)

    def drop_peer(self, peer: Peer) -> None:
        """Forget a closed connection: requeue its jobs, abandon what it waited for."""
        for f in peer.ability_list:
            f.workers.pop(peer, None)
            f.sleepers.pop(peer, None)
        peer.abilities.clear()
        peer.ability_list.clear()
        for job in list(peer.assigned):
            self._lost(job, "worker disconnected", Outcome.LOST)
        for job in list(peer.waiting):
            job.clients.remove(peer)  # type: ignore[union-attr]
            if not job.clients and not job.background and job.state in (QUEUED, SCHEDULED):
                self._unlink(job)  # nobody wants the result: do not run it
        peer.waiting.clear()

    # -- results -----------------------------------------------------------------

    def owned(self, peer: Peer, handle: bytes) -> Job | None:
        job = self.jobs.get(handle)
        if job is None or job.worker is not peer:
            return None
        return job

    def work_status(self, job: Job, numerator: bytes, denominator: bytes) -> None:
        job.numerator = parse_c_int(numerator) & 0xFFFFFFFF
        job.denominator = parse_c_int(denominator) & 0xFFFFFFFF
        if job.clients:
            job.streamed = True
            packet = replies.work_status(job.handle, numerator, denominator)
            for client in job.clients:
                client.send(packet)

    def work_data(self, job: Job, ptype: int, data: Payload) -> None:
        """Forward WORK_DATA or WORK_WARNING to every waiting client."""
        if job.clients:
            job.streamed = True
            self._forward(job, ptype, data)

    def work_complete(self, job: Job, data: Payload) -> None:
        if job.clients:
            self._forward(job, _WORK_COMPLETE, data)
        job.function.completed[job.priority] += 1
        self._finish(job)

    def work_fail(self, job: Job) -> None:
        policy = job.function.retry
        if policy is not None and Outcome.FAIL in policy.outcomes and _retried(job, policy):
            self._failed(job, policy, Outcome.FAIL, "")
            return
        self._forward_fail(job)
        job.function.failed[job.priority] += 1
        self._finish(job)

    def work_exception(self, job: Job, data: Payload) -> None:
        policy = job.function.retry
        if policy is not None and Outcome.EXCEPTION in policy.outcomes and _retried(job, policy):
            self._failed(job, policy, Outcome.EXCEPTION, exception_text(as_bytes(data)))
            return
        if job.clients:
            plain: list[Peer] = []
            packet = b""
            for client in job.clients:
                if client.exceptions:
                    packet = packet or replies.work_exception(job.handle, data)
                    client.send(packet)
                else:
                    plain.append(client)
            if plain:
                fail = replies.work_fail(job.handle)
                for client in plain:
                    client.send(fail)
        job.function.exceptions[job.priority] += 1
        self._finish(job)

    def _forward(self, job: Job, ptype: int, data: Payload) -> None:
        send_with_data(job.clients, ptype, (job.handle,), data)

    def _forward_fail(self, job: Job) -> None:
        if job.clients:
            packet = replies.work_fail(job.handle)
            for client in job.clients:
                client.send(packet)

    def _finish(self, job: Job) -> None:
        worker = job.worker
        if worker is not None:
            worker.ended.append(job.handle)
        ran = self.now_ns - job.since_ns
        ran_histogram = job.function.ran
        ran_histogram.counts[ran.bit_length()] += 1  # observe(ran), inlined
        ran_histogram.sum_ns += ran
        self._unlink(job)

    def cancel(self, handle: bytes) -> bool:
        """Admin ``cancel job``: waiting clients get WORK_FAIL and the job is gone."""
        job = self.jobs.get(handle)
        if job is None:
            return False
        self._forward_fail(job)
        self._unlink(job)
        return True

    def _unlink(self, job: Job) -> None:
        """Take a job out of every index and count, whatever its state."""
        f = job.function
        state = job.state
        if state is QUEUED:
            f.queued[job.priority] -= 1  # the deque entry is skipped when reached
        elif state is RUNNING:
            f.running -= 1
        elif state is SCHEDULED:
            f.scheduled -= 1
        elif state is STORING:
            f.storing -= 1
            if not job.when:  # its queue entry is skipped when reached
                job.state = ENDED
                if f.sleepers:  # workers waiting for it may run what stood behind it
                    self._wake(f)
        job.state = ENDED
        _unbind(job)
        self._forget(job)

    def _forget(self, job: Job) -> None:
        data = job.data
        if self.jobs.pop(job.handle, None) is job and type(data) is not Spooled:
            job_bytes = self.job_bytes = self.job_bytes - len(data)
            if job_bytes < self.job_room_low:
                self.memory.relieved(self)
        if job.key is not None and job.function.uniques.get(job.key) is job:
            del job.function.uniques[job.key]
        for client in job.clients:
            client.waiting.pop(job, None)
        job.clients = NO_CLIENTS
        # A job still being written (STORING) is removed once its write settles.
        if job.store_id and job.write is None and self.store is not None:
            self.store.remove(job.store_id)
            job.store_id = 0

    # -- status ------------------------------------------------------------------

    def status_by_unique(self, unique: bytes) -> Job | None:
        """The first job with this unique in any function (GET_STATUS_UNIQUE)."""
        for f in self.functions.values():
            job = f.uniques.get(unique)
            if job is not None:
                return job
        return None

    def iter_jobs(self) -> Iterator[Job]:
        return iter(list(self.jobs.values()))

    # -- persistence replay -------------------------------------------------------

    def restore(self, records: list[StoredJob]) -> int:
        """Re-create stored background jobs at startup, in the order given."""
        self.now_ns = time.monotonic_ns()
        for record in records:
            f = self.function(record.function)
            job = Job(
                self._next_handle(),
                f,
                record.unique,
                record.data,
                record.priority,
                True,
            )
            job.when = record.when
            job.due = float(record.when)  # mypyc keeps a float attribute unboxed: no int in it
            job.reducer = record.reducer
            job.retries = record.retries
            job.store_id = record.id
            job.since_ns = self.now_ns
            if record.data.__class__ is not Spooled:
                self.job_bytes += len(record.data)
            key = coalescing_key(record.unique, record.data)
            if key is not None and key not in f.uniques:
                job.key = key
                f.uniques[key] = job
            self.jobs[job.handle] = job
            self._release(job)
            self._next_store_id = max(self._next_store_id, record.id + 1)
        self.memory.check(self)  # the replay may leave it over
        return len(records)


def coalescing_key(unique: bytes, data: Payload) -> object:
    """What makes two submissions of one function the same job (PROTOCOL.md §4.4).

    The unique itself; for ``-``, the payload; nothing (never coalesce) for an empty
    unique or ``-`` with an empty payload.
    """
    if not unique:
        return None
    if unique != b"-":
        return unique
    if isinstance(data, Spooled):
        # A spooled payload is compared by size and content hash, not held in memory.
        return (b"-", len(data), data.digest())
    return (b"-", bytes(data)) if data else None


def _stored_data(data: Payload) -> bytes | Spooled:
    """The payload as a stored record carries it: a spooled one stays in its file
    (the store writes it in chunks), anything else is bytes."""
    return data if isinstance(data, Spooled) else bytes(data)


def _being_written(queue: deque[Job]) -> bool:
    """Whether the first live job of ``queue`` is still being written to the store."""
    while queue:
        state = queue[0].state
        if state is not ENDED:
            return state is STORING
        queue.popleft()  # lazily dropped (cancelled, abandoned, refused)
    return False


def _retried(job: Job, policy: RetryPolicy) -> bool:
    """Whether ``policy`` (if it covers the outcome) retries a failure of ``job``.

    Background jobs always; foreground jobs only with ``foreground=yes``, while nothing of
    the job reached its clients and another attempt remains, so that a client never sees
    a result twice and always gets the last attempt's own failure.
    """
    if job.background:
        return True
    return policy.foreground and not job.streamed and job.retries + 1 < policy.attempts


def _unbind(job: Job) -> None:
    """Take a job off its worker, if it has one, and stop its timeout."""
    if job.worker is not None:
        job.worker.assigned.pop(job, None)
        job.worker = None
    if job.timer is not None:
        job.timer.cancel()
        job.timer = None


def _coalesced(peer: Peer | None, job: Job, background: bool) -> Job:
    """A submission joins ``job``: a foreground submitter waits for it too."""
    if peer is not None and not background:
        _attach(peer, job)
    return job


def _attach(peer: Peer, job: Job) -> None:
    # One connection submitting the same key twice is attached once: gearmand
    # attaches it twice and sends every result twice (PROTOCOL.md §5).
    if job not in peer.waiting:
        peer.waiting[job] = None
        if job.clients:
            job.clients.append(peer)
        else:
            job.clients = [peer]
