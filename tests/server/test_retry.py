"""Retry policies: parsing, delays, and the scheduler retrying failed background jobs
(fake clock, fake peers, no sockets)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest

from geartrain.protocol.constants import PacketType as P
from geartrain.server.jobs import Job, JobState
from geartrain.server.persistence.memory import MemoryBacking, MemoryStore
from geartrain.server.retry import (
    Backoff,
    Outcome,
    PolicyError,
    RetryPolicies,
    RetryPolicy,
    parse_policies,
    parse_policy,
    policy_text,
)
from geartrain.server.scheduler import Scheduler

from .fakes import FakeClock, FakePeer, make_scheduler
from .test_scheduler import state_of, submit

# -- parsing -------------------------------------------------------------------------


def test_a_full_policy_parses_into_its_fields() -> None:
    policy = parse_policy("report.*=5,backoff=fixed,min=2.5,max=30,on=fail,lost,timeout")
    assert policy == RetryPolicy(
        "report.*", 5, Backoff.FIXED, 2.5, 30.0, Outcome.FAIL | Outcome.LOST | Outcome.TIMEOUT
    )


def test_defaults_are_exponential_from_5_s_to_an_hour_on_fail_and_exception() -> None:
    policy = parse_policy("*=3")
    assert (policy.backoff, policy.min_delay, policy.max_delay) == (
        Backoff.EXPONENTIAL,
        5.0,
        3600.0,
    )
    assert policy.outcomes == Outcome.FAIL | Outcome.EXCEPTION


def test_outcomes_may_be_joined_with_plus_and_spec_round_trips() -> None:
    policy = parse_policy("f=4,on=exception+timeout,min=1")
    assert policy.outcomes == Outcome.EXCEPTION | Outcome.TIMEOUT
    assert parse_policy(policy.spec()) == policy


def test_a_min_above_the_default_max_raises_the_default_max() -> None:
    assert parse_policy("f=2,min=7200").max_delay == 7200.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no-equals", "expected GLOB=ATTEMPTS"),
        ("=3", "expected GLOB=ATTEMPTS"),
        ("f=zero", "ATTEMPTS must be a number"),
        ("f=0", "ATTEMPTS must be between 1"),
        ("f=3,backoff=linear", "backoff must be fixed or exponential"),
        ("f=3,min=-1", "min and max must be between 0"),
        ("f=3,min=10,max=5", "max (5) is below min (10)"),
        ("f=3,min=nan", "min must be a number"),
        ("f=3,on=crash", "unknown outcome 'crash'"),
        ("f=3,color=red", "unknown option 'color=red'"),
        ("f=3,min=1,min=2", "min= given twice"),
        ("f=3,fail", "unknown option 'fail'"),
    ],
)
def test_malformed_policies_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    assert message in str(caught.value)
    assert repr(text) in str(caught.value)


def test_config_file_entries_become_option_strings() -> None:
    assert policy_text("a.*", 3) == "a.*=3"
    assert policy_text("b", "4,backoff=fixed,min=1") == "b=4,backoff=fixed,min=1"
    table = {"attempts": 5, "min": 1, "max": 60, "on": ["fail", "lost"]}
    assert policy_text("c", table) == "c=5,min=1,max=60,on=fail+lost"
    with pytest.raises(PolicyError, match="needs attempts"):
        policy_text("d", {"backoff": "fixed"})
    with pytest.raises(PolicyError, match="expected attempts or a table"):
        policy_text("e", True)


def test_the_first_matching_glob_wins_and_others_get_none() -> None:
    policies = parse_policies(["img.resize=2", "img.*=7", "mail.[ab]=3"])
    assert [
        p.attempts if p else None
        for p in map(policies.resolve, [b"img.resize", b"img.crop", b"mail.a", b"mail.c"])
    ] == [2, 7, 3, None]
    assert not RetryPolicies()


# -- delays --------------------------------------------------------------------------


def test_fixed_backoff_waits_min_every_time() -> None:
    policy = parse_policy("f=9,backoff=fixed,min=3")
    assert [policy.delay(n, 0.9) for n in range(1, 6)] == [3.0] * 5


def test_exponential_backoff_doubles_up_to_max() -> None:
    policy = parse_policy("f=20,min=2,max=60")
    highest = [policy.delay(n, 1.0) for n in range(1, 9)]
    assert highest == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_exponential_jitter_stays_in_the_upper_half_and_above_min() -> None:
    policy = parse_policy("f=20,min=2,max=60")
    rng = random.Random(14)
    for retry in range(1, 12):
        base = min(60.0, 2.0 * 2 ** (retry - 1))
        delays = [policy.delay(retry, rng.random()) for _ in range(200)]
        assert all(max(2.0, base / 2) <= d <= base for d in delays), retry
        if base >= 4:  # past the first retry, the delays really are spread out
            assert max(delays) - min(delays) > base / 4


# -- the scheduler -------------------------------------------------------------------


class Randomness:
    """A fixed number where the scheduler asks for a random one."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


def retrying(*specs: str, randomness: float = 1.0) -> tuple[Scheduler, FakeClock]:
    return make_scheduler(retry=parse_policies(specs), randomness=Randomness(randomness))


def run_once(s: Scheduler, worker: FakePeer, expect: Job) -> Job:
    job = s.grab(worker)
    assert job is expect
    return job


def delays_until_dead(s: Scheduler, clock: FakeClock, job: Job, worker: FakePeer) -> list[float]:
    """Fail ``job`` each time it runs; the delays between attempts, until it ends."""
    delays: list[float] = []
    for _ in range(50):
        run_once(s, worker, job)
        s.work_fail(job)
        if state_of(job) is JobState.ENDED:
            return delays
        assert state_of(job) is JobState.SCHEDULED
        delays.append(job.due - clock.now)
        clock.advance(job.due - clock.now)
        assert state_of(job) is JobState.QUEUED
    raise AssertionError("the job was retried forever")


def test_a_failed_background_job_follows_the_backoff_then_ends() -> None:
    s, clock = retrying("resize=5,min=10,max=25")
    worker = FakePeer("w")
    s.can_do(worker, b"resize")
    job = submit(s, None, b"resize", unique=b"u1", background=True)

    assert delays_until_dead(s, clock, job, worker) == [10.0, 20.0, 25.0, 25.0]
    assert job.retries == 5
    assert s.jobs == {} and s.function(b"resize").uniques == {}


def test_a_retrying_job_keeps_its_handle_unique_and_priority_and_is_known() -> None:
    s, clock = retrying("f=3,min=5")
    worker = FakePeer("w")
    s.can_do(worker, b"f")
    job = submit(s, None, b"f", unique=b"same", priority=0, background=True)
    run_once(s, worker, job)
    s.work_status(job, b"1", b"2")
    s.work_fail(job)

    assert s.jobs[job.handle] is job and job.priority == 0
    assert s.status_by_unique(b"same") is job
    # Coalescing still finds it: a new submission of the same unique joins the retry.
    assert submit(s, None, b"f", unique=b"same", background=True) is job
    s.function(b"f")  # resolving again does not reset anything
    assert (job.state, job.numerator, job.denominator) == (JobState.SCHEDULED, 0, 0)
    assert s.function(b"f").total == 1 and s.function(b"f").scheduled == 1
    assert s.grab(worker) is None
    clock.advance(5)
    assert s.grab(worker) is job


def test_get_status_says_known_and_not_running_while_a_job_waits_to_retry() -> None:
    from geartrain.protocol.codec import Packet
    from geartrain.server import dispatch

    s, _ = retrying("f=3")
    worker, asker = FakePeer("w", s), FakePeer("asker", s)
    s.can_do(worker, b"f")
    job = submit(s, None, b"f", background=True)
    run_once(s, worker, job)
    s.work_fail(job)
    dispatch.get_status(asker, Packet(P.GET_STATUS, (job.handle,)))
    assert asker.take() == [(P.STATUS_RES, (job.handle, b"1", b"0", b"0", b"0"), b"")]


def test_exception_is_retried_and_a_later_duplicate_fail_is_ignored() -> None:
    s, clock = retrying("f=3,min=1")
    worker = FakePeer("w", s)
    s.can_do(worker, b"f")
    job = submit(s, None, b"f", background=True)
    run_once(s, worker, job)
    s.work_exception(job, b"boom")
    assert job.state is JobState.SCHEDULED and job.retries == 1
    # Perl's Gearman::Worker follows WORK_EXCEPTION with WORK_FAIL for the same handle.
    assert s.owned(worker, job.handle) is None and job.handle in worker.ended
    clock.advance(1)
    assert s.grab(worker) is job


def test_outcomes_outside_the_filter_behave_as_without_a_policy() -> None:
    s, _ = retrying("f=5,on=fail")
    worker = FakePeer("w")
    s.can_do(worker, b"f")
    failed = submit(s, None, b"f", background=True, data=b"1")
    run_once(s, worker, failed)
    s.work_exception(failed, b"not retried")
    assert failed.state is JobState.ENDED

    lost = submit(s, None, b"f", background=True, data=b"2")
    run_once(s, worker, lost)
    s.drop_peer(worker)
    assert lost.state is JobState.QUEUED and lost.retries == 1  # requeued at once


def test_a_lost_worker_is_retried_after_a_delay_when_the_policy_says_so() -> None:
    s, clock = retrying("f=2,on=lost,min=4,backoff=fixed")
    worker = FakePeer("w")
    s.can_do(worker, b"f")
    job = submit(s, None, b"f", background=True)
    run_once(s, worker, job)
    s.drop_peer(worker)
    assert job.state is JobState.SCHEDULED and job.due == clock.now + 4

    again = FakePeer("w2")
    s.can_do(again, b"f")
    clock.advance(4)
    run_once(s, again, job)
    s.cant_do(again, b"f")  # dropping the function is losing the worker too
    assert state_of(job) is JobState.ENDED and s.jobs == {}


def test_an_expired_can_do_timeout_is_retried_when_the_policy_says_so() -> None:
    s, clock = retrying("f=3,on=timeout,min=30,backoff=fixed")
    worker = FakePeer("w")
    s.can_do(worker, b"f", timeout_ms=2000)
    job = submit(s, None, b"f", background=True)
    run_once(s, worker, job)
    clock.advance(2)
    assert state_of(job) is JobState.SCHEDULED and job.retries == 1
    assert job.due == clock.now + 30 and job.worker is None


def test_job_retries_does_not_bound_outcomes_the_policy_covers() -> None:
    s, clock = retrying("f=4,on=lost,min=1,backoff=fixed")
    s.job_retries = 2
    job = submit(s, None, b"f", background=True)
    for _ in range(3):
        worker = FakePeer("w")
        s.can_do(worker, b"f")
        run_once(s, worker, job)
        s.drop_peer(worker)
        assert state_of(job) is JobState.SCHEDULED
        clock.advance(1)
    assert job.retries == 3


def test_foreground_jobs_are_not_retried() -> None:
    s, _ = retrying("f=5")
    worker, client = FakePeer("w"), FakePeer("c")
    s.can_do(worker, b"f")
    job = submit(s, client, b"f")
    run_once(s, worker, job)
    s.work_fail(job)
    assert job.state is JobState.ENDED
    assert client.take() == [(P.WORK_FAIL, (job.handle,), b"")]


def test_a_client_coalesced_onto_a_retried_job_gets_its_final_result() -> None:
    s, clock = retrying("f=3,min=1")
    worker, client = FakePeer("w"), FakePeer("c")
    s.can_do(worker, b"f")
    job = submit(s, None, b"f", unique=b"k", background=True)
    assert submit(s, client, b"f", unique=b"k") is job
    run_once(s, worker, job)
    s.work_fail(job)
    assert client.take() == []
    clock.advance(1)
    run_once(s, worker, job)
    s.work_complete(job, b"done")
    assert client.take() == [(P.WORK_COMPLETE, (job.handle,), b"done")]


def test_functions_without_a_matching_policy_end_failed_jobs_as_before() -> None:
    s, _ = retrying("other=5")
    worker = FakePeer("w")
    s.can_do(worker, b"f")
    job = submit(s, None, b"f", background=True)
    assert s.function(b"f").retry is None
    run_once(s, worker, job)
    s.work_fail(job)
    assert job.state is JobState.ENDED and s.jobs == {}


def test_a_cancelled_retrying_job_never_runs_again() -> None:
    s, clock = retrying("f=3,min=1")
    worker = FakePeer("w")
    s.can_do(worker, b"f")
    job = submit(s, None, b"f", background=True)
    run_once(s, worker, job)
    s.work_fail(job)
    assert s.cancel(job.handle)
    clock.advance(10)
    assert s.grab(worker) is None and s.function(b"f").total == 0


# -- with a persistent queue ------------------------------------------------------------


async def settled(job: Job) -> None:
    """Wait (bounded) for a stored job's write to settle."""
    assert job.write is not None
    done = asyncio.Event()
    job.write.when_settled(done.set)
    async with asyncio.timeout(5):
        await done.wait()
    assert job.state is JobState.QUEUED


@pytest.fixture
def backing() -> Iterator[MemoryBacking]:
    yield MemoryBacking()


async def open_scheduler(
    backing: MemoryBacking, clock: FakeClock, spec: str
) -> tuple[Scheduler, MemoryStore]:
    store = MemoryStore(backing)
    await store.open()
    s = Scheduler(
        handle_prefix=b"H:test",
        store=store,
        call_later=clock.call_later,
        clock=clock,
        retry=parse_policies([spec]),
        randomness=Randomness(1.0),
    )
    s.restore(await store.load())
    return s, store


async def test_a_restart_in_the_middle_of_a_backoff_resumes_it(backing: MemoryBacking) -> None:
    clock = FakeClock(now=1_000_000.5)
    s, store = await open_scheduler(backing, clock, "f=3,min=60")
    worker = FakePeer("w")
    s.can_do(worker, b"f")
    job = submit(s, None, b"f", unique=b"keep", data=b"payload", priority=2, background=True)
    await settled(job)
    run_once(s, worker, job)
    s.work_fail(job)
    await store.close()  # flushes the reschedule, as the writer would within 50 ms

    [record] = backing.jobs.values()
    assert (record.retries, record.when) == (1, 1_000_061)  # due 60.5 s on, rounded up

    clock.advance(30)  # the server was down for half the delay
    s, store = await open_scheduler(backing, clock, "f=3,min=60")
    [job] = s.jobs.values()
    assert (job.unique, job.data, job.priority, job.retries) == (b"keep", b"payload", 2, 1)
    assert job.state is JobState.SCHEDULED
    worker = FakePeer("w")
    s.can_do(worker, b"f")
    clock.advance(30)
    assert s.grab(worker) is None  # never early
    clock.advance(0.5)
    run_once(s, worker, job)
    s.work_fail(job)
    assert job.due - clock.now == 120.0  # the second delay: the backoff went on
    clock.advance(120)
    run_once(s, worker, job)
    s.work_fail(job)  # third attempt: the last
    assert s.jobs == {}
    await store.close()
    assert backing.jobs == {}


async def test_jobs_that_succeed_leave_no_trace_of_the_policy(backing: MemoryBacking) -> None:
    clock = FakeClock()
    s, store = await open_scheduler(backing, clock, "*=3")
    worker = FakePeer("w")
    s.can_do(worker, b"f")
    job = submit(s, None, b"f", background=True)
    await settled(job)
    run_once(s, worker, job)
    s.work_complete(job, b"")
    assert store.outstanding == 1  # the remove, and nothing else
    await store.close()
    assert backing.jobs == {}


# -- foreground jobs ---------------------------------------------------------------------


def test_foreground_yes_parses_round_trips_and_defaults_to_no() -> None:
    assert not parse_policy("f=3").foreground
    policy = parse_policy("f=3,min=1,foreground=yes")
    assert policy.foreground and parse_policy(policy.spec()) == policy
    assert policy_text("f", {"attempts": 3, "foreground": True}) == "f=3,foreground=yes"
    with pytest.raises(PolicyError, match="foreground must be yes or no"):
        parse_policy("f=3,foreground=maybe")


def test_a_foreground_job_is_not_retried_without_foreground_yes() -> None:
    s, _ = retrying("f=3,min=5")
    client, worker = FakePeer("c"), FakePeer("w")
    s.can_do(worker, b"f")
    job = submit(s, client, b"f")
    run_once(s, worker, job)
    s.work_fail(job)
    assert [p.type for p in client.received] == [P.WORK_FAIL]
    assert state_of(job) is JobState.ENDED


def test_a_foreground_job_is_retried_unseen_and_its_client_gets_the_result() -> None:
    s, clock = retrying("f=3,backoff=fixed,min=5,foreground=yes")
    client, worker = FakePeer("c"), FakePeer("w")
    s.can_do(worker, b"f")
    job = submit(s, client, b"f")
    run_once(s, worker, job)
    s.work_fail(job)
    assert state_of(job) is JobState.SCHEDULED and client.received == []
    clock.advance(5)
    run_once(s, worker, job)
    s.work_complete(job, b"done")
    assert [(p.type, p.data) for p in client.received] == [(P.WORK_COMPLETE, b"done")]
    assert job.retries == 1 and s.jobs == {}


def test_a_foreground_jobs_last_attempt_fails_to_its_client_and_is_not_dead() -> None:
    s, clock = retrying("f=2,backoff=fixed,min=5,foreground=yes")
    client, worker = FakePeer("c"), FakePeer("w")
    s.can_do(worker, b"f")
    job = submit(s, client, b"f")
    run_once(s, worker, job)
    s.work_exception(job, b"first")
    clock.advance(5)
    run_once(s, worker, job)
    s.work_exception(job, b"second")
    # The client (no exceptions option) gets the last attempt's failure, once.
    assert [p.type for p in client.received] == [P.WORK_FAIL]
    assert state_of(job) is JobState.ENDED and len(s.dead) == 0


def test_a_foreground_job_that_streamed_fails_at_once() -> None:
    s, _ = retrying("f=3,min=5,foreground=yes")
    client, worker = FakePeer("c"), FakePeer("w")
    s.can_do(worker, b"f")
    job = submit(s, client, b"f")
    run_once(s, worker, job)
    s.work_data(job, P.WORK_DATA, b"part")
    s.work_fail(job)
    assert [p.type for p in client.received] == [P.WORK_DATA, P.WORK_FAIL]
    assert state_of(job) is JobState.ENDED
