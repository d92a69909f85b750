"""Scheduler rules, driven with fake peers and a fake clock (no sockets)."""

from __future__ import annotations

from geartrain.protocol.codec import as_bytes
from geartrain.protocol.constants import PacketType as P
from geartrain.protocol.constants import Priority
from geartrain.server.jobs import Job, JobState
from geartrain.server.scheduler import Scheduler

from .fakes import FakePeer, make_scheduler

HIGH, NORMAL, LOW = Priority.HIGH, Priority.NORMAL, Priority.LOW


def submit(
    s: Scheduler,
    peer: FakePeer | None,
    name: bytes,
    unique: bytes = b"",
    data: bytes = b"x",
    priority: int = NORMAL,
    background: bool = False,
    when: int = 0,
) -> Job:
    result = s.submit(peer, name, unique, data, priority, background, when=when)
    assert isinstance(result, Job), result
    return result


def state_of(job: Job) -> JobState:
    """The job's state, read through a call: a timer can change it between two asserts,
    which the type checker cannot see when it narrows ``job.state`` itself."""
    return job.state


def grab_all(s: Scheduler, worker: FakePeer) -> list[bytes]:
    """Grab until NO_JOB; returns the payloads in order (completing each)."""
    order: list[bytes] = []
    for _ in range(100):
        job = s.grab(worker)
        if job is None:
            return order
        order.append(as_bytes(job.data))
        s.work_complete(job, b"")
    raise AssertionError("grab loop did not end")


class TestPriority:
    def test_fifo_within_a_priority_and_high_before_normal_before_low(self) -> None:
        s, _ = make_scheduler()
        for data, prio in [
            (b"l1", LOW),
            (b"n1", NORMAL),
            (b"h1", HIGH),
            (b"l2", LOW),
            (b"h2", HIGH),
            (b"n2", NORMAL),
        ]:
            submit(s, None, b"f", data=data, priority=prio, background=True)
        worker = FakePeer()
        s.can_do(worker, b"f")
        assert grab_all(s, worker) == [b"h1", b"h2", b"n1", b"n2", b"l1", b"l2"]

    def test_priority_is_global_across_functions(self) -> None:
        # gearmand 1.1 would serve b's low job before a's high one (issue #173).
        s, _ = make_scheduler()
        worker = FakePeer()
        s.can_do(worker, b"a")
        s.can_do(worker, b"b")
        submit(s, None, b"b", data=b"b-low", priority=LOW, background=True)
        submit(s, None, b"a", data=b"a-high", priority=HIGH, background=True)
        submit(s, None, b"b", data=b"b-high", priority=HIGH, background=True)
        assert grab_all(s, worker) == [b"a-high", b"b-high", b"b-low"]

    def test_functions_of_equal_priority_take_turns(self) -> None:
        s, _ = make_scheduler()
        worker = FakePeer()
        for name in (b"a", b"b", b"c"):
            s.can_do(worker, name)
        for i in range(3):
            for name in (b"a", b"b", b"c"):
                submit(s, None, name, data=name + b"%d" % i, background=True)
        assert grab_all(s, worker) == [
            b"a0",
            b"b0",
            b"c0",
            b"a1",
            b"b1",
            b"c1",
            b"a2",
            b"b2",
            b"c2",
        ]

    def test_grab_without_registrations_is_no_job(self) -> None:
        s, _ = make_scheduler()
        submit(s, None, b"f", background=True)
        assert s.grab(FakePeer()) is None


class TestCoalescing:
    def test_same_unique_gives_the_same_job_and_attaches_foreground_clients(self) -> None:
        s, _ = make_scheduler()
        c1, c2, worker = FakePeer("c1"), FakePeer("c2"), FakePeer("w")
        first = submit(s, c1, b"f", b"u", data=b"first")
        second = submit(s, c2, b"f", b"u", data=b"second", priority=HIGH)
        assert second is first and first.data == b"first" and first.priority == NORMAL
        s.can_do(worker, b"f")
        job = s.grab(worker)
        assert job is first
        s.work_complete(job, b"done")
        for client in (c1, c2):
            assert client.take() == [(P.WORK_COMPLETE, (first.handle,), b"done")]

    def test_same_connection_twice_is_attached_once(self) -> None:
        s, _ = make_scheduler()
        client, worker = FakePeer(), FakePeer()
        job = submit(s, client, b"f", b"u")
        assert submit(s, client, b"f", b"u") is job
        assert job.clients == [client]
        s.can_do(worker, b"f")
        s.work_complete(s.grab(worker) or job, b"r")
        assert len(client.take()) == 1

    def test_background_then_foreground_attaches_to_the_background_job(self) -> None:
        s, _ = make_scheduler()
        client = FakePeer()
        bg = submit(s, None, b"f", b"u", background=True)
        assert submit(s, client, b"f", b"u") is bg
        assert bg.clients == [client] and bg.background

    def test_empty_unique_never_coalesces_and_dash_coalesces_on_payload(self) -> None:
        s, _ = make_scheduler()
        assert submit(s, None, b"f", b"", b"p") is not submit(s, None, b"f", b"", b"p")
        dash = submit(s, None, b"f", b"-", b"p")
        assert submit(s, None, b"f", b"-", b"p") is dash
        assert submit(s, None, b"f", b"-", b"q") is not dash
        assert submit(s, None, b"f", b"-", b"") is not submit(s, None, b"f", b"-", b"")

    def test_other_function_same_unique_is_independent(self) -> None:
        s, _ = make_scheduler()
        assert submit(s, None, b"f", b"u") is not submit(s, None, b"g", b"u")

    def test_64_byte_unique_is_honoured_whole_and_65_is_refused(self) -> None:
        s, _ = make_scheduler()
        u64 = b"u" * 63 + b"1"
        job = submit(s, None, b"f", u64)
        assert job.unique == u64
        assert submit(s, None, b"f", b"u" * 63 + b"2") is not job
        assert s.status_by_unique(u64) is job
        assert s.submit(None, b"f", b"u" * 65, b"", NORMAL, False) == (
            b"ARGUMENT_TOO_LARGE",
            b"Unique value too large",
        )

    def test_finished_job_frees_its_unique(self) -> None:
        s, _ = make_scheduler()
        worker = FakePeer()
        s.can_do(worker, b"f")
        job = submit(s, None, b"f", b"u", background=True)
        s.work_complete(s.grab(worker) or job, b"")
        assert submit(s, None, b"f", b"u", background=True) is not job


class TestWorkerLoss:
    def test_disconnect_requeues_at_the_tail_and_counts_a_retry(self) -> None:
        s, _ = make_scheduler()
        client, w1, w2 = FakePeer(), FakePeer(), FakePeer()
        first = submit(s, client, b"f", data=b"first")
        submit(s, None, b"f", data=b"second", background=True)
        s.can_do(w1, b"f")
        assert s.grab(w1) is first
        s.work_status(first, b"1", b"2")
        s.drop_peer(w1)
        assert first.retries == 1 and first.state is JobState.QUEUED
        assert (first.numerator, first.denominator) == (0, 0)
        s.can_do(w2, b"f")
        assert [as_bytes(j.data) for j in (s.grab(w2), s.grab(w2)) if j] == [b"second", b"first"]
        assert client.take() == [(P.WORK_STATUS, (first.handle, b"1", b"2"), b"")]

    def test_job_retries_bounds_attempts_then_fails_the_clients(self) -> None:
        s, _ = make_scheduler(job_retries=2)
        client = FakePeer()
        job = submit(s, client, b"f")
        for attempt in range(2):
            worker = FakePeer(f"w{attempt}")
            s.can_do(worker, b"f")
            assert s.grab(worker) is job
            s.drop_peer(worker)
        assert client.take() == [(P.WORK_FAIL, (job.handle,), b"")]
        assert job.handle not in s.jobs and s.functions[b"f"].total == 0

    def test_cant_do_requeues_the_running_jobs_of_that_function(self) -> None:
        s, _ = make_scheduler()
        worker = FakePeer()
        s.can_do(worker, b"f")
        job = submit(s, None, b"f", background=True)
        assert s.grab(worker) is job
        s.cant_do(worker, b"f")
        assert job.state is JobState.QUEUED and job.retries == 1
        assert s.owned(worker, job.handle) is None

    def test_timeout_requeues_with_a_one_second_floor(self) -> None:
        s, clock = make_scheduler()
        worker = FakePeer()
        s.can_do(worker, b"f", timeout_ms=10)
        job = submit(s, None, b"f", background=True)
        assert s.grab(worker) is job
        clock.advance(0.9)
        assert state_of(job) is JobState.RUNNING
        clock.advance(0.2)
        assert state_of(job) is JobState.QUEUED and job.retries == 1
        assert s.owned(worker, job.handle) is None

    def test_one_timer_per_job_cancelled_when_it_ends(self) -> None:
        s, clock = make_scheduler()
        worker = FakePeer()
        s.can_do(worker, b"f", timeout_ms=5000)
        jobs = [submit(s, None, b"f", background=True) for _ in range(3)]
        grabbed = [s.grab(worker) for _ in jobs]
        assert grabbed == jobs and len(clock.armed) == 3
        s.work_complete(jobs[0], b"")
        assert len(clock.armed) == 2
        clock.advance(6)
        assert all(j.state is JobState.QUEUED for j in jobs[1:])
        assert jobs[0].state is JobState.ENDED


class TestSleepAndWake:
    def test_sleeping_workers_get_one_noop_until_they_grab(self) -> None:
        s, _ = make_scheduler()
        workers = [FakePeer(f"w{i}") for i in range(3)]
        for w in workers:
            s.can_do(w, b"f")
            s.pre_sleep(w)
        submit(s, None, b"f", background=True)
        submit(s, None, b"f", background=True)
        assert [w.take() for w in workers] == [[(P.NOOP, (), b"")]] * 3

    def test_worker_wakeup_limits_and_rotates(self) -> None:
        s, _ = make_scheduler(worker_wakeup=1)
        a, b = FakePeer("a"), FakePeer("b")
        for w in (a, b):
            s.can_do(w, b"f")
            s.pre_sleep(w)
        submit(s, None, b"f", background=True)
        assert (len(a.take()), len(b.take())) == (1, 0)
        job = s.grab(a)
        assert job is not None
        s.work_complete(job, b"")
        s.pre_sleep(a)
        submit(s, None, b"f", background=True)
        assert (len(a.take()), len(b.take())) == (0, 1)

    def test_pre_sleep_with_work_waiting_noops_at_once(self) -> None:
        s, _ = make_scheduler()
        worker = FakePeer()
        s.can_do(worker, b"f")
        submit(s, None, b"f", background=True)
        s.pre_sleep(worker)
        s.pre_sleep(worker)
        assert worker.take() == [(P.NOOP, (), b"")] * 2

    def test_worker_that_never_slept_gets_no_noop(self) -> None:
        s, _ = make_scheduler()
        worker = FakePeer()
        s.can_do(worker, b"f")
        submit(s, None, b"f", background=True)
        assert worker.take() == []


class TestEpoch:
    def test_epoch_job_waits_for_its_time_then_wakes_sleepers(self) -> None:
        s, clock = make_scheduler()
        worker = FakePeer()
        s.can_do(worker, b"f")
        job = submit(s, None, b"f", background=True, when=int(clock.now) + 30)
        assert job.state is JobState.SCHEDULED and s.functions[b"f"].total == 1
        s.pre_sleep(worker)
        assert s.grab(worker) is None
        s.pre_sleep(worker)
        clock.advance(29)
        assert worker.take() == []
        clock.advance(2)
        assert worker.take() == [(P.NOOP, (), b"")]
        assert s.grab(worker) is job

    def test_epoch_in_the_past_runs_now_and_does_not_block_other_jobs(self) -> None:
        s, clock = make_scheduler()
        worker = FakePeer()
        s.can_do(worker, b"f")
        submit(s, None, b"f", data=b"later", background=True, when=int(clock.now) + 3600)
        submit(s, None, b"f", data=b"past", background=True, when=5)
        submit(s, None, b"f", data=b"plain", background=True)
        assert grab_all(s, worker) == [b"past", b"plain"]


class TestResultsAndAbandon:
    def test_exception_goes_as_fail_to_clients_without_the_option(self) -> None:
        s, _ = make_scheduler()
        plain, wants = FakePeer("plain"), FakePeer("wants")
        wants.exceptions = True
        job = submit(s, plain, b"f", b"u")
        submit(s, wants, b"f", b"u")
        worker = FakePeer()
        s.can_do(worker, b"f")
        s.work_exception(s.grab(worker) or job, b"boom")
        assert plain.take() == [(P.WORK_FAIL, (job.handle,), b"")]
        assert wants.take() == [(P.WORK_EXCEPTION, (job.handle,), b"boom")]

    def test_foreground_client_gone_before_grab_leaves_no_orphan(self) -> None:
        s, _ = make_scheduler()
        client, worker = FakePeer(), FakePeer()
        job = submit(s, client, b"f", b"u")
        kept = submit(s, None, b"f", b"bg", background=True)
        s.drop_peer(client)
        assert job.handle not in s.jobs and s.functions[b"f"].total == 1
        s.can_do(worker, b"f")
        assert s.grab(worker) is kept

    def test_running_job_whose_client_left_runs_to_completion(self) -> None:
        s, _ = make_scheduler()
        client, worker = FakePeer(), FakePeer()
        job = submit(s, client, b"f")
        s.can_do(worker, b"f")
        assert s.grab(worker) is job
        s.drop_peer(client)
        assert s.owned(worker, job.handle) is job
        s.work_complete(job, b"r")
        assert s.functions[b"f"].total == 0

    def test_cancel_fails_waiting_clients_and_removes_the_job(self) -> None:
        s, _ = make_scheduler()
        client, worker = FakePeer(), FakePeer()
        job = submit(s, client, b"f", b"u")
        assert s.cancel(job.handle)
        assert client.take() == [(P.WORK_FAIL, (job.handle,), b"")]
        assert not s.cancel(job.handle)
        s.can_do(worker, b"f")
        assert s.grab(worker) is None and s.functions[b"f"].total == 0

    def test_maxqueue_counts_queued_and_running_jobs(self) -> None:
        s, _ = make_scheduler()
        s.function(b"f").max_queue = [2, 2, 2]
        worker = FakePeer()
        s.can_do(worker, b"f")
        submit(s, None, b"f", background=True)
        s.grab(worker)
        submit(s, None, b"f", background=True)
        assert s.submit(None, b"f", b"", b"x", NORMAL, True) == (
            b"QUEUE_ERROR",
            b"Job queue is full",
        )
        assert isinstance(s.submit(None, b"g", b"", b"x", NORMAL, True), Job)

    def test_status_counts(self) -> None:
        s, _ = make_scheduler()
        worker = FakePeer()
        s.can_do(worker, b"f")
        submit(s, None, b"f", background=True)
        submit(s, None, b"f", background=True)
        s.grab(worker)
        f = s.functions[b"f"]
        assert (f.total, f.running, len(f.workers), f.queued) == (2, 1, 1, [0, 1, 0])
