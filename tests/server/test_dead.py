"""The dead-letter queue: jobs that failed for good are kept, bounded, listed, shown,
requeued and purged; jobs are found by handle or unique."""

from __future__ import annotations

import asyncio

from geartrain.protocol.constants import PacketType as P
from geartrain.server.dead import DeadLimits, DeadQueue, decode_attempts, requeue_dead, weight
from geartrain.server.jobs import JobState
from geartrain.server.persistence.base import DeadJob
from geartrain.server.persistence.memory import MemoryBacking, MemoryStore
from geartrain.server.retry import parse_policies
from geartrain.server.scheduler import Scheduler

from .conftest import Connect, RawClient, running_server
from .fakes import FakeClock, FakePeer, make_scheduler
from .test_scheduler import submit


def dying(*specs: str, **options: object) -> tuple[Scheduler, FakeClock]:
    return make_scheduler(retry=parse_policies(specs), randomness=lambda: 0.0, **options)


def fail_until_dead(s: Scheduler, clock: FakeClock, worker: FakePeer, name: bytes) -> None:
    """Run the only job of ``name`` and fail it until it is gone (bounded)."""
    for attempt in range(20):
        job = s.grab(worker)
        assert job is not None, attempt
        if attempt % 2:
            s.work_exception(job, b"Traceback:\n\tValueError: bad\r\n")
        else:
            s.work_fail(job)
        if job.state is JobState.ENDED:
            return
        clock.advance(job.due - clock.now)
    raise AssertionError("the job never died")


def test_a_job_that_exhausts_its_attempts_is_kept_with_every_outcome() -> None:
    s, clock = dying("f=3,min=1")
    worker = FakePeer("w")
    worker.ip, worker.client_id = "10.0.0.7", b"resizer-1"
    s.can_do(worker, b"f")
    job = submit(s, None, b"f", unique=b"u", data=b"payload", priority=0, background=True)
    # Two delays of the exponential backoff at its lowest jitter: max(min, base / 2).
    died_at = clock.now + 1 + 1
    fail_until_dead(s, clock, worker, b"f")

    assert s.jobs == {} and len(s.dead) == 1
    [dead] = s.dead.jobs.values()
    assert (dead.handle, dead.function, dead.unique, dead.data, dead.priority) == (
        job.handle,
        b"f",
        b"u",
        b"payload",
        0,
    )
    assert dead.died == died_at
    count, attempts = decode_attempts(dead.attempts)
    assert count == 3
    assert [(a.outcome, a.worker) for a in attempts] == [
        ("fail", "10.0.0.7 resizer-1"),
        ("exception", "10.0.0.7 resizer-1"),
        ("fail", "10.0.0.7 resizer-1"),
    ]
    assert attempts[1].text == "Traceback:\n\tValueError: bad\r\n"
    assert [a.time for a in attempts] == [died_at - 2, died_at - 1, died_at]


def test_dead_letter_keeps_failed_jobs_without_a_policy_but_not_foreground_ones() -> None:
    s, _ = make_scheduler(dead_letter=True)
    worker, client = FakePeer("w"), FakePeer("c")
    s.can_do(worker, b"g")
    submit(s, None, b"g", background=True, data=b"bg")
    job = s.grab(worker)
    assert job is not None
    s.work_fail(job)
    fg = submit(s, client, b"g", data=b"fg")
    assert s.grab(worker) is fg
    s.work_fail(fg)
    assert [d.data for d in s.dead.jobs.values()] == [b"bg"]


def test_without_dead_letter_or_policy_a_failed_job_is_gone() -> None:
    s, _ = make_scheduler()
    worker = FakePeer("w")
    s.can_do(worker, b"g")
    submit(s, None, b"g", background=True)
    job = s.grab(worker)
    assert job is not None
    s.work_fail(job)
    assert len(s.dead) == 0 and s.jobs == {}


def test_a_job_dropped_by_job_retries_is_dead_lettered_with_its_losses() -> None:
    s, _ = make_scheduler(dead_letter=True, job_retries=2)
    submit(s, None, b"g", background=True)
    for _ in range(2):
        worker = FakePeer("w")
        s.can_do(worker, b"g")
        assert s.grab(worker) is not None
        s.drop_peer(worker)
    [dead] = s.dead.jobs.values()
    count, attempts = decode_attempts(dead.attempts)
    assert count == 2 and [a.text for a in attempts] == ["worker disconnected"] * 2


def record(dead_id: int, died: float, size: int = 10) -> DeadJob:
    return DeadJob(dead_id, b"H:x:%d" % dead_id, b"f", b"", b"x" * size, 1, b"", died, b"{}")


def test_the_bounds_drop_the_oldest_first_and_count_them() -> None:
    queue = DeadQueue(DeadLimits(max_jobs=3, max_age=100, max_bytes=0))
    for n in range(5):
        queue.add(record(n, died=1000 + n), now=1000 + n)
    assert list(queue.jobs) == [2, 3, 4] and queue.dropped == 2
    queue.trim(now=1103.5)  # 2 and 3 are more than 100 s old now, 4 is not
    assert list(queue.jobs) == [4] and queue.dropped == 4

    by_bytes = DeadQueue(DeadLimits(max_jobs=0, max_age=0, max_bytes=3 * weight(record(0, 0))))
    for n in range(10):
        by_bytes.add(record(n, died=n), now=n)
    assert list(by_bytes.jobs) == [7, 8, 9] and by_bytes.bytes == 3 * weight(record(0, 0))


def test_a_poison_function_stays_within_the_bounds() -> None:
    s, _ = make_scheduler(dead_letter=True, dead_limits=DeadLimits(max_jobs=100))
    worker = FakePeer("w")
    s.can_do(worker, b"poison")
    for n in range(2000):
        submit(s, None, b"poison", background=True, data=b"%d" % n)
    for _ in range(2000):
        job = s.grab(worker)
        assert job is not None
        s.work_fail(job)
    assert s.grab(worker) is None
    assert len(s.dead) == 100 and s.dead.dropped == 1900
    assert next(iter(s.dead.jobs.values())).data == b"1900"


def test_requeue_submits_it_again_and_purge_forgets_it() -> None:
    s, _ = make_scheduler(dead_letter=True)
    worker = FakePeer("w")
    s.can_do(worker, b"g")
    for data in (b"a", b"b"):
        submit(s, None, b"g", unique=data, background=True, data=data)
        job = s.grab(worker)
        assert job is not None
        s.work_fail(job)
    first, second = s.dead.jobs.values()
    again = requeue_dead(s, first)
    assert not isinstance(again, tuple)
    assert (again.unique, again.data, again.state) == (b"a", b"a", JobState.QUEUED)
    assert again.handle != first.handle
    assert s.dead.forget(second.id) is second
    assert len(s.dead) == 0 and s.dead.bytes == 0


# -- over the wire -----------------------------------------------------------------------


async def fail_job(worker: RawClient, name: bytes) -> bytes:
    """Grab one job of ``name`` (waiting for it to be due) and send WORK_FAIL."""
    async with asyncio.timeout(10):
        while True:
            worker.send(P.GRAB_JOB)
            packet = await worker.packet()
            if packet.type == P.JOB_ASSIGN:
                worker.send(P.WORK_FAIL, packet.args[0])
                worker.send(P.ECHO_REQ, data=b"handled")  # the reply follows the failure
                assert (await worker.packet()).type == P.ECHO_RES
                return packet.args[0]
            assert packet.type == P.NO_JOB
            worker.send(P.PRE_SLEEP)
            assert (await worker.packet()).type == P.NOOP


async def test_admin_finds_jobs_lists_shows_requeues_and_purges_dead_ones(
    connect: Connect,
) -> None:
    async with running_server(retry=["flaky=2,min=0.05,backoff=fixed"]) as srv:
        admin, client, worker = await connect(srv), await connect(srv), await connect(srv)
        worker.send(P.SET_CLIENT_ID, b"w-1")
        worker.send(P.CAN_DO, b"flaky")
        client.send(P.SUBMIT_JOB_BG, b"flaky", b"order-7", data=b"payload")
        [(_, (handle,), _)] = await client.packets(1)

        found = await admin.admin(b"job " + handle)
        assert b"state\tqueued\n" in found and b"unique\torder-7\n" in found
        assert await fail_job(worker, b"flaky") == handle
        found = await admin.admin(b"job unique flaky order-7")
        assert b"state\tretrying\n" in found and b"attempts\t1\n" in found
        client.send(P.GET_STATUS, handle)
        assert (await client.packet()).args == (handle, b"1", b"0", b"0", b"0")

        assert await fail_job(worker, b"flaky") == handle
        listed = await admin.admin(b"dead list")
        [line] = listed.split(b"\n")[:-2]
        dead_id, dead_handle, function, unique, attempts, _, last = line.split(b"\t")
        assert (dead_handle, function, unique, attempts, last) == (
            handle,
            b"flaky",
            b"order-7",
            b"2",
            b"fail",
        )
        assert await admin.admin(b"dead list other") == b".\n"
        shown = await admin.admin(b"dead show " + dead_id)
        assert shown.count(b"\tfail\t\n") == 2 and b"127.0.0.1 w-1" in shown
        assert shown == await admin.admin(b"dead show " + handle)
        assert b"state\tdead\n" in await admin.admin(b"job " + handle)
        assert await admin.admin(b"dead show 999") == b"ERR UNKNOWN_JOB\r\n"
        assert b"jobs\t1\n" in await admin.admin(b"dead stats")

        assert await admin.admin(b"dead requeue " + dead_id) == b"OK 1\n"
        assert await admin.admin(b"dead list") == b".\n"
        worker.send(P.GRAB_JOB)
        assigned = await worker.packet()
        assert assigned.type == P.JOB_ASSIGN and assigned.data == b"payload"
        worker.send(P.WORK_COMPLETE, assigned.args[0])
        assert await admin.admin(b"dead purge --all") == b"OK 0\n"
        assert (await admin.admin(b"dead frobnicate")).startswith(b"ERR INVALID_ARGUMENTS")
        assert await admin.admin(b"show jobs") == b".\n"


async def test_dead_jobs_outlive_a_restart(connect: Connect) -> None:
    backing = MemoryBacking()
    async with running_server(MemoryStore(backing), dead_letter=True) as srv:
        client, worker = await connect(srv), await connect(srv)
        worker.send(P.CAN_DO, b"g")
        client.send(P.SUBMIT_JOB_BG, b"g", b"kept", data=b"data")
        await client.packets(1)
        await fail_job(worker, b"g")
    assert [d.unique for d in backing.dead.values()] == [b"kept"]
    async with running_server(MemoryStore(backing)) as srv:
        admin = await connect(srv)
        [line] = (await admin.admin(b"dead list")).split(b"\n")[:-2]
        assert line.split(b"\t")[3] == b"kept"
        assert await admin.admin(b"dead purge " + line.split(b"\t")[0]) == b"OK 1\n"
    assert backing.dead == {}


def test_dead_jobs_past_the_age_bound_are_gone_when_listed() -> None:
    s, clock = make_scheduler(dead_letter=True, dead_limits=DeadLimits(max_age=60))
    worker = FakePeer("w")
    s.can_do(worker, b"g")
    submit(s, None, b"g", background=True)
    job = s.grab(worker)
    assert job is not None
    s.work_fail(job)
    clock.advance(60)
    assert len(s.expire_dead()) == 1  # exactly 60 s old: kept
    clock.advance(1)
    assert len(s.expire_dead()) == 0 and s.dead.dropped == 1


def test_attempt_records_of_jobs_that_later_succeed_do_not_pile_up() -> None:
    s, clock = dying("f=3,min=1,backoff=fixed")
    worker = FakePeer("w")
    s.can_do(worker, b"f")
    for n in range(1000):
        job = submit(s, None, b"f", background=True, data=b"%d" % n)
        assert s.grab(worker) is job
        s.work_fail(job)
        clock.advance(1)
        assert s.grab(worker) is job
        s.work_complete(job, b"")  # succeeded on its second attempt
    assert s.jobs == {} and len(s.dead) == 0
    assert len(s._attempts) <= 64  # only entries not yet pruned, none of a live job


async def test_a_requeue_the_store_refuses_leaves_the_job_dead() -> None:
    backing = MemoryBacking()
    store = MemoryStore(backing, backoff_initial=0.001, backoff_max=0.01)
    await store.open()
    clock = FakeClock()
    s = Scheduler(store=store, call_later=clock.call_later, clock=clock, dead_letter=True)
    record = DeadJob(7, b"H:x:1", b"g", b"u", b"data", 1, b"", clock.now, b"{}")
    s.restore_dead(store, [record])
    backing.fail_writes = ValueError("disk full")  # refused, the store stays up

    async def requeued() -> bool:
        job = requeue_dead(s, record)
        assert not isinstance(job, tuple) and job.write is not None
        assert len(s.dead) == 0  # hidden while it is written
        write, done = job.write, asyncio.Event()
        write.when_settled(done.set)
        async with asyncio.timeout(5):
            await done.wait()
        return write.refused is None

    assert not await requeued()
    assert list(s.dead.jobs) == [7] and s.jobs == {}
    backing.fail_writes = None
    assert await requeued()
    assert len(s.dead) == 0 and [j.data for j in s.jobs.values()] == [b"data"]
    await store.close()
    assert backing.dead == {} and [j.unique for j in backing.jobs.values()] == [b"u"]
