"""The memory budget's rules against a real scheduler and recording peers, no sockets."""

from __future__ import annotations

from geartrain.protocol.codec import Payload, as_bytes
from geartrain.server.budget import MemoryBudget
from geartrain.server.jobs import Job, Peer
from geartrain.server.scheduler import Scheduler

KIB = 1024


class Recorder(Peer):
    """A peer that keeps what it is sent and how the budget treats it."""

    def __init__(self, scheduler: Scheduler, name: str) -> None:
        super().__init__()
        self.scheduler = scheduler
        self.fd = len(name)
        self.ip = name
        self.output = 0
        self.paused = False
        self.sent: list[bytes] = []

    def send(self, packet: bytes) -> None:
        self.sent.append(packet)

    def send_parts(self, head: bytes, data: Payload) -> None:
        self.sent.append(head + as_bytes(data))

    def held_bytes(self, enough: int) -> int:
        return self.output + sum(len(job.data) for job in self.waiting)

    def pause_for_memory(self) -> None:
        self.paused = True

    def resume_for_memory(self) -> None:
        self.paused = False


def budgeted(limit: int, connections: int) -> tuple[Scheduler, MemoryBudget]:
    scheduler = Scheduler()
    memory = MemoryBudget(limit)
    memory.use_loop(lambda *args: None, lambda: connections)
    scheduler.use_memory_budget(memory)
    return scheduler, memory


def submit(scheduler: Scheduler, peer: Peer, size: int, background: bool) -> Job:
    job = scheduler.submit(peer, b"f", b"", b"d" * size, 1, background)
    assert isinstance(job, Job)
    return job


def test_job_payloads_are_counted_when_made_and_when_forgotten() -> None:
    scheduler, memory = budgeted(100 * KIB, 2)
    client = Recorder(scheduler, "client")
    job = submit(scheduler, client, 3 * KIB, background=False)
    submit(scheduler, client, 2 * KIB, background=True)
    assert memory.held(scheduler) == scheduler.job_bytes == 5 * KIB
    scheduler.cancel(job.handle)
    assert scheduler.job_bytes == 2 * KIB


def test_over_the_high_mark_a_holder_is_paused_a_small_client_and_a_worker_are_not() -> None:
    scheduler, memory = budgeted(100 * KIB, 3)  # share: 10 KiB / 3 connections
    hostile, healthy, worker = (Recorder(scheduler, name) for name in ("h", "ok", "w"))
    scheduler.can_do(worker, b"g")
    for _ in range(9):
        submit(scheduler, hostile, 10 * KIB, background=False)
    assert not memory.over  # 90 KiB: exactly the high-water mark
    submit(scheduler, hostile, 10 * KIB, background=False)
    assert memory.over
    submit(scheduler, healthy, 1 * KIB, background=False)
    submit(scheduler, worker, 20 * KIB, background=False)  # a worker that submits
    for peer in (hostile, healthy, worker):
        memory.consider(peer, peer)
    assert (hostile.paused, healthy.paused, worker.paused) == (True, False, False)
    assert list(memory.paused) == [hostile]


def test_background_submitters_are_charged_while_over_and_resume_under_the_low_mark() -> None:
    scheduler, memory = budgeted(100 * KIB, 2)
    flooder = Recorder(scheduler, "flood")
    jobs = [submit(scheduler, flooder, 10 * KIB, background=True) for _ in range(10)]
    assert memory.over and memory.charges[flooder] >= 10 * KIB
    memory.consider(flooder, flooder)
    assert flooder.paused
    for job in jobs[:2]:  # 80 KiB: still above 70 %
        scheduler.cancel(job.handle)
    assert flooder.paused and memory.over
    for job in jobs[2:4]:  # 60 KiB: under it
        scheduler.cancel(job.handle)
    assert not flooder.paused and not memory.over and not memory.charges


def test_a_job_larger_than_the_budget_is_refused_and_not_counted() -> None:
    scheduler, memory = budgeted(64 * KIB, 1)
    client = Recorder(scheduler, "client")
    refused = scheduler.submit(client, b"f", b"", b"x" * (65 * KIB), 1, True)
    assert isinstance(refused, tuple)
    assert refused[0] == b"QUEUE_ERROR" and b"memory budget of 65536 bytes" in refused[1]
    assert scheduler.job_bytes == 0 and not scheduler.jobs and not memory.over


def test_without_a_budget_everything_is_counted_and_nothing_enforced() -> None:
    scheduler, memory = budgeted(0, 1)
    client = Recorder(scheduler, "client")
    submit(scheduler, client, 200 * KIB, background=True)
    assert scheduler.job_bytes == 200 * KIB
    assert not memory.over
    memory.consider(client, client)
    assert not client.paused
