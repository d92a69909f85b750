"""Binary protocol behaviour over real sockets, bad input included."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from geartrain.protocol.codec import as_bytes, encode_request
from geartrain.protocol.constants import PacketType as P
from geartrain.server.app import Server
from geartrain.server.persistence.base import DeadJob, QueueError, StoredJob, row_size

from .conftest import Connect, RawClient, running_server


async def test_reverse_round_trip_with_status_data_and_unique(
    server: Server, connect: Connect
) -> None:
    client, worker = await connect(), await connect()
    worker.send(P.CAN_DO, b"reverse")
    worker.send(P.PRE_SLEEP)
    client.send(P.SUBMIT_JOB, b"reverse", b"job-7", data=b"Hello World!")
    (ptype, (handle,), _) = (await client.packets(1))[0]
    assert ptype == P.JOB_CREATED and handle.startswith(b"H:test:")
    assert await worker.packets(1) == [(P.NOOP, (), b"")]
    worker.send(P.GRAB_JOB_UNIQ)
    assert await worker.packets(1) == [
        (P.JOB_ASSIGN_UNIQ, (handle, b"reverse", b"job-7"), b"Hello World!")
    ]
    worker.send(P.WORK_STATUS, handle, b"1", b"2")
    worker.send(P.WORK_DATA, handle, data=b"part")
    worker.send(P.WORK_WARNING, handle, data=b"careful")
    client.send(P.GET_STATUS, handle)
    assert await client.packets(4) == [
        (P.WORK_STATUS, (handle, b"1", b"2"), b""),
        (P.WORK_DATA, (handle,), b"part"),
        (P.WORK_WARNING, (handle,), b"careful"),
        (P.STATUS_RES, (handle, b"1", b"1", b"1", b"2"), b""),
    ]
    worker.send(P.WORK_COMPLETE, handle, data=b"!dlroW olleH")
    assert await client.packets(1) == [(P.WORK_COMPLETE, (handle,), b"!dlroW olleH")]
    client.send(P.GET_STATUS, handle)
    assert await client.packets(1) == [(P.STATUS_RES, (handle, b"0", b"0", b"0", b"0"), b"")]


async def test_grab_job_forms_and_empty_payload(server: Server, connect: Connect) -> None:
    client, worker = await connect(), await connect()
    worker.send(P.CAN_DO, b"f")
    client.send(P.SUBMIT_JOB_BG, b"f", b"u1", data=b"")
    client.send(P.SUBMIT_REDUCE_JOB_BACKGROUND, b"f", b"u2", b"red", b"", data=b"m")
    client.send(P.SUBMIT_JOB_BG, b"f", b"u3", data=b"d")
    h1, h2, h3 = [p[1][0] for p in await client.packets(3)]
    worker.send(P.GRAB_JOB)
    worker.send(P.GRAB_JOB_ALL)
    worker.send(P.GRAB_JOB_ALL)
    worker.send(P.GRAB_JOB)
    assert await worker.packets(4) == [
        (P.JOB_ASSIGN, (h1, b"f"), b""),
        (P.JOB_ASSIGN_ALL, (h2, b"f", b"u2", b"red"), b"m"),
        (P.JOB_ASSIGN_UNIQ, (h3, b"f", b"u3"), b"d"),
        (P.NO_JOB, (), b""),
    ]


async def test_work_fail_is_forwarded_as_the_bare_handle(server: Server, connect: Connect) -> None:
    client, worker = await connect(), await connect()
    worker.send(P.CAN_DO, b"f")
    client.send(P.SUBMIT_JOB, b"f", b"", data=b"x")
    (_, (handle,), _) = (await client.packets(1))[0]
    worker.send(P.GRAB_JOB)
    await worker.packet()
    worker.send_raw(encode_request(P.WORK_FAIL, handle + b"\0"))
    raw = await client.reader.readexactly(12 + len(handle))
    assert raw == b"\0RES" + struct.pack(">II", P.WORK_FAIL, len(handle)) + handle


async def test_exception_then_fail_from_one_worker_gets_no_error(
    server: Server, connect: Connect
) -> None:
    # Perl's Gearman::Worker sends WORK_EXCEPTION and then WORK_FAIL for the same
    # job; an ERROR for the second would kill it on its next GRAB_JOB.
    client, worker = await connect(), await connect()
    client.send(P.OPTION_REQ, b"exceptions")
    assert await client.packets(1) == [(P.OPTION_RES, (b"exceptions",), b"")]
    worker.send(P.CAN_DO, b"f")
    client.send(P.SUBMIT_JOB, b"f", b"", data=b"x")
    (_, (handle,), _) = (await client.packets(1))[0]
    worker.send(P.GRAB_JOB)
    await worker.packet()
    worker.send(P.WORK_EXCEPTION, handle, data=b"died")
    worker.send(P.WORK_FAIL, handle)
    worker.send(P.GRAB_JOB)
    assert await worker.packets(1) == [(P.NO_JOB, (), b"")]
    assert await client.packets(1) == [(P.WORK_EXCEPTION, (handle,), b"died")]


async def test_results_for_jobs_the_connection_does_not_own(
    server: Server, connect: Connect
) -> None:
    worker = await connect()
    worker.send(P.WORK_COMPLETE, b"H:nope:1", data=b"x")
    worker.send(P.WORK_DATA, b"H:nope:1", data=b"x")
    worker.send(P.WORK_EXCEPTION, b"H:nope:1", data=b"x")
    worker.send(P.WORK_STATUS, b"H:nope:1", b"1", b"2")
    assert await worker.packets(4) == [
        (P.ERROR, (b"JOB_NOT_FOUND", b"Job given in work result not found"), b""),
        (P.ERROR, (b"JOB_NOT_FOUND", b"Job does not exist on server"), b""),
        (
            P.ERROR,
            (b"JOB_NOT_FOUND", b"An exception was received for a job that does not exist"),
            b"",
        ),
        (P.ERROR, (b"JOB_NOT_FOUND", b"Job given in work result not found"), b""),
    ]


async def test_status_unique_echo_and_options(server: Server, connect: Connect) -> None:
    c1, c2 = await connect(), await connect()
    c1.send(P.SUBMIT_JOB, b"f", b"shared", data=b"x")
    c2.send(P.SUBMIT_JOB, b"f", b"shared", data=b"y")
    ((_, (handle,), _),) = await c1.packets(1)
    assert await c2.packets(1) == [(P.JOB_CREATED, (handle,), b"")]
    c1.send(P.GET_STATUS_UNIQUE, b"shared")
    c1.send(P.GET_STATUS_UNIQUE, b"missing")
    c1.send(P.ECHO_REQ, data=b"a\0b")
    c1.send(P.OPTION_REQ, b"EXCEPTIONS\0")
    c1.send(P.OPTION_REQ, b"nonsense")
    assert await c1.packets(5) == [
        (P.STATUS_RES_UNIQUE, (b"shared", b"1", b"0", b"0", b"0", b"2"), b""),
        (P.STATUS_RES_UNIQUE, (b"missing", b"0", b"0", b"0", b"0", b"0"), b""),
        (P.ECHO_RES, (), b"a\0b"),
        (P.OPTION_RES, (b"EXCEPTIONS\0",), b""),
        (P.ERROR, (b"UNKNOWN_OPTION", b"Server does not recognize given option"), b""),
    ]


async def test_unexpected_types_get_invalid_command(server: Server, connect: Connect) -> None:
    conn = await connect()
    for ptype in (P.UNUSED, P.NOOP, P.JOB_CREATED, P.ALL_YOURS, P.STATUS_RES, P.JOB_ASSIGN_ALL):
        conn.send_raw(encode_request(ptype))
    conn.send(P.SUBMIT_JOB_SCHED, b"f", b"u", b"1", b"2", b"3", b"4", b"5", data=b"x")
    conn.send(P.ECHO_REQ, data=b"still here")
    packets = await conn.packets(8)
    assert packets[:7] == [(P.ERROR, (b"INVALID_COMMAND", b"Command not expected"), b"")] * 7
    assert packets[7] == (P.ECHO_RES, (), b"still here")


class TestBadInput:
    async def test_missing_nuls_is_an_error_and_the_stream_stays_framed(
        self, server: Server, connect: Connect
    ) -> None:
        conn = await connect()
        conn.send_raw(b"\0REQ" + struct.pack(">II", P.CAN_DO_TIMEOUT, 3) + b"abc")
        conn.send(P.ECHO_REQ, data=b"next")
        assert (await conn.packet()).args[0] == b"INVALID_PACKET"
        assert await conn.packets(1) == [(P.ECHO_RES, (), b"next")]

    async def test_response_magic_is_refused_but_the_connection_stays(
        self, server: Server, connect: Connect
    ) -> None:
        conn = await connect()
        conn.send_raw(b"\0RES" + struct.pack(">II", P.ECHO_REQ, 2) + b"hi")
        conn.send(P.ECHO_REQ, data=b"next")
        assert await conn.packets(2) == [
            (P.ERROR, (b"INVALID_MAGIC", b"Request magic expected"), b""),
            (P.ECHO_RES, (), b"next"),
        ]

    async def test_a_bare_handle_work_complete_delivers_an_empty_result(
        self, server: Server, connect: Connect
    ) -> None:
        # Perl's Gearman::Worker sends this for a result of "" or "0".
        client, worker = await connect(), await connect()
        worker.send(P.CAN_DO, b"f")
        client.send(P.SUBMIT_JOB, b"f", b"", data=b"x")
        handle = (await client.packet()).args[0]
        worker.send(P.GRAB_JOB)
        assert (await worker.packet()).args[0] == handle
        worker.send_raw(b"\0REQ" + struct.pack(">II", P.WORK_COMPLETE, len(handle)) + handle)
        assert await client.packets(1) == [(P.WORK_COMPLETE, (handle,), b"")]
        worker.send(P.GRAB_JOB)
        assert await worker.packets(1) == [(P.NO_JOB, (), b"")]  # no ERROR, nothing left

    async def test_an_unreadable_result_runs_the_job_again(
        self, server: Server, connect: Connect
    ) -> None:
        # The worker believes it ended the job; left assigned, the job would never end.
        client, worker, other = await connect(), await connect(), await connect()
        worker.send(P.CAN_DO, b"f")
        client.send(P.SUBMIT_JOB, b"f", b"", data=b"x")
        handle = (await client.packet()).args[0]
        worker.send(P.GRAB_JOB)
        assert (await worker.packet()).args[0] == handle
        body = handle + b"\0result"
        worker.send_raw(b"\0RES" + struct.pack(">II", P.WORK_COMPLETE, len(body)) + body)
        assert await worker.packets(1) == [
            (P.ERROR, (b"INVALID_MAGIC", b"Request magic expected"), b"")
        ]
        other.send(P.CAN_DO, b"f")
        other.send(P.GRAB_JOB)
        assert await other.packets(1) == [(P.JOB_ASSIGN, (handle, b"f"), b"x")]
        other.send(P.WORK_COMPLETE, handle, data=b"second try")
        assert await client.packets(1) == [(P.WORK_COMPLETE, (handle,), b"second try")]

    async def test_fatal_input_gets_an_error_then_a_close(self, connect: Connect) -> None:
        async with running_server(max_packet_size=4096) as small:
            for raw, code in [
                (b"\0XYZ" + bytes(8), b"INVALID_MAGIC"),
                (b"\0REQ" + struct.pack(">II", 0, 0), b"INVALID_COMMAND"),
                (b"\0REQ" + struct.pack(">II", 43, 0), b"INVALID_COMMAND"),
                (b"\0REQ" + struct.pack(">II", P.ECHO_REQ, 4097), b"ARGUMENT_TOO_LARGE"),
                (b"x" * 9000, b"ARGUMENT_TOO_LARGE"),
            ]:
                conn: RawClient = await connect(small)
                conn.send_raw(raw)
                assert (await conn.packet()).args[0] == code
                assert await conn.closed()
            other = await connect(small)
            other.send(P.ECHO_REQ, data=b"alive")
            assert await other.packets(1) == [(P.ECHO_RES, (), b"alive")]

    async def test_garbage_never_hurts_other_connections(
        self, server: Server, connect: Connect
    ) -> None:
        bystander = await connect()
        bystander.send(P.CAN_DO, b"f")
        for seed in range(20):
            junk = bytes((seed * 7919 + i * 104729) % 256 for i in range(2000))
            conn = await connect()
            conn.send_raw(junk)
            conn.writer.write_eof()
        bystander.send(P.ECHO_REQ, data=b"ok")
        assert await bystander.packets(1) == [(P.ECHO_RES, (), b"ok")]

    async def test_half_closed_socket_still_gets_its_replies(self, server: Server) -> None:
        host, port = server.addresses[0]
        loop = asyncio.get_running_loop()
        sock = socket.create_connection((host, port))
        sock.setblocking(False)
        await loop.sock_sendall(sock, encode_request(P.ECHO_REQ, data=b"bye") + b"version\n")
        sock.shutdown(socket.SHUT_WR)
        received = b""
        async with asyncio.timeout(5):
            while chunk := await loop.sock_recv(sock, 4096):
                received += chunk
        sock.close()
        assert received.startswith(b"\0RES\0\0\0\x11\0\0\0\x03bye")
        assert received.endswith(b"\n") and b"OK " in received


async def test_large_payload_passes_through(server: Server, connect: Connect) -> None:
    client, worker = await connect(), await connect()
    payload = bytes(range(256)) * (32 * 4096)  # 32 MiB
    worker.send(P.CAN_DO, b"big")
    client.send(P.SUBMIT_JOB, b"big", b"", data=payload)
    ((_, (handle,), _),) = await client.packets(1, wait=30)
    worker.send(P.GRAB_JOB)
    assign = await worker.packet(wait=30)
    assert assign.args == (handle, b"big") and as_bytes(assign.data) == payload
    worker.send(P.WORK_COMPLETE, handle, data=payload)
    done = await client.packet(wait=30)
    assert done.type == P.WORK_COMPLETE and as_bytes(done.data) == payload


class SlowStore:
    """A store whose writes take a while, or fail on demand."""

    def __init__(self) -> None:
        self.rows: dict[int, StoredJob] = {}
        self.dead: dict[int, DeadJob] = {}
        self.fail = False
        self.delay = 0.05
        self.tasks: set[asyncio.Future[None]] = set()
        self.limited = False
        self.max_job_bytes = 0  # when limited
        self.spool_directory: Path | None = None

    def limit(self, max_job_bytes: int) -> None:
        self.limited, self.max_job_bytes = True, max_job_bytes

    def refusal(self, job: StoredJob) -> str | None:
        size = row_size(job)
        if size <= self.max_job_bytes:
            return None
        return f"Job of {size} bytes is over this store's {self.max_job_bytes}"

    async def open(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def load(self) -> list[StoredJob]:
        return sorted(self.rows.values(), key=lambda r: (r.priority, r.id))

    def add(self, job: StoredJob) -> Awaitable[None]:
        async def write() -> None:
            await asyncio.sleep(self.delay)
            if self.fail:
                raise QueueError("disk on fire")
            self.rows[job.id] = job

        return write()

    def add_many(self, jobs: list[StoredJob]) -> Awaitable[None]:
        async def write() -> None:
            await asyncio.sleep(self.delay)
            if self.fail:
                raise QueueError("disk on fire")
            for job in jobs:
                self.rows[job.id] = job

        return write()

    def add_then(self, jobs: list[StoredJob], settled: Callable[[QueueError | None], None]) -> None:
        async def write() -> None:
            try:
                await self.add_many(jobs)
            except QueueError as exc:
                settled(exc)
            else:
                settled(None)

        task = asyncio.ensure_future(write())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def remove(self, job_id: int) -> None:
        self.rows.pop(job_id, None)

    def update_retries(self, job_id: int, retries: int) -> None:
        self.rows[job_id] = self.rows[job_id]._replace(retries=retries)

    def reschedule(self, job_id: int, when: int, retries: int) -> None:
        self.rows[job_id] = self.rows[job_id]._replace(when=when, retries=retries)

    def add_dead(self, job: DeadJob) -> None:
        self.dead[job.id] = job

    def remove_dead(self, dead_id: int) -> None:
        self.dead.pop(dead_id, None)

    async def load_dead(self) -> list[DeadJob]:
        return list(self.dead.values())

    async def close(self) -> None:
        pass


async def test_replies_keep_request_order_behind_a_persistent_write(connect: Connect) -> None:
    store = SlowStore()
    async with running_server(store=store) as srv:
        conn = await connect(srv)
        conn.send(P.SUBMIT_JOB_BG, b"f", b"bg", data=b"1")
        conn.send(P.ECHO_REQ, data=b"e")
        conn.send(P.SUBMIT_JOB, b"f", b"fg", data=b"2")
        packets = await conn.packets(3)
        assert [p[0] for p in packets] == [P.JOB_CREATED, P.ECHO_RES, P.JOB_CREATED]
        assert [r.unique for r in store.rows.values()] == [b"bg"]


async def test_background_job_is_acknowledged_only_once_durable(connect: Connect) -> None:
    store = SlowStore()
    store.delay = 0.3
    async with running_server(store=store) as srv:
        conn, admin = await connect(srv), await connect(srv)
        conn.send(P.SUBMIT_JOB_BG, b"f", b"u", data=b"1")
        await asyncio.sleep(0.1)
        assert not store.rows and not conn.pending
        ((ptype, (handle,), _),) = await conn.packets(1)
        assert ptype == P.JOB_CREATED and len(store.rows) == 1
        worker = await connect(srv)
        worker.send(P.CAN_DO, b"f")
        worker.send(P.GRAB_JOB)
        assert (await worker.packet()).args[0] == handle
        worker.send(P.WORK_COMPLETE, handle, data=b"")
        worker.send(P.ECHO_REQ, data=b"sync")
        await worker.packet()
        assert not store.rows
        assert await admin.admin(b"status") == b"f\t0\t0\t1\n.\n"


async def test_store_failure_gives_queue_error_and_no_job(connect: Connect) -> None:
    store = SlowStore()
    store.fail = True
    async with running_server(store=store) as srv:
        conn, admin = await connect(srv), await connect(srv)
        conn.send(P.SUBMIT_JOB_BG, b"f", b"u", data=b"1")
        conn.send(P.SUBMIT_JOB_BG, b"f", b"u", data=b"1")
        conn.send(P.SUBMIT_JOB, b"f", b"", data=b"fg")
        packets = await conn.packets(3)
        assert packets[:2] == [(P.ERROR, (b"QUEUE_ERROR", b"disk on fire"), b"")] * 2
        assert packets[2][0] == P.JOB_CREATED
        assert await admin.admin(b"status") == b"f\t1\t0\t0\n.\n"
        assert await admin.admin(b"show unique jobs") == b"\n.\n"


async def test_a_job_too_large_for_the_store_is_refused_alone(connect: Connect) -> None:
    # Checked before the job joins a write group, so the jobs submitted with it in the
    # same loop turn are stored as usual; foreground jobs are not stored, so not limited.
    store = SlowStore()
    store.limit(50)
    async with running_server(store=store) as srv:
        conn = await connect(srv)
        conn.send(P.SUBMIT_JOB_BG, b"f", b"small", data=b"x" * 10)
        conn.send(P.SUBMIT_JOB_BG, b"f", b"big", data=b"x" * 100)
        conn.send(P.SUBMIT_JOB_BG, b"f", b"edge", data=b"x" * (50 - len(b"f") - len(b"edge")))
        conn.send(P.SUBMIT_JOB, b"f", b"fg", data=b"x" * 100)
        packets = await conn.packets(4)
        assert [p[0] for p in packets] == [P.JOB_CREATED, P.ERROR, P.JOB_CREATED, P.JOB_CREATED]
        assert packets[1][1] == (
            b"QUEUE_ERROR",
            b"Job of 104 bytes is over this store's 50",
        )
        assert sorted(r.unique for r in store.rows.values()) == [b"edge", b"small"]


async def test_stored_jobs_are_replayed_in_priority_then_fifo_order(connect: Connect) -> None:
    store = SlowStore()
    store.delay = 0
    for i, (prio, unique) in enumerate([(2, b"low"), (1, b"n1"), (0, b"high"), (1, b"n2")], 1):
        store.rows[i] = StoredJob(i, b"f", unique, unique, prio)
    async with running_server(store=store) as srv:
        worker = await connect(srv)
        worker.send(P.CAN_DO, b"f")
        for _ in range(4):
            worker.send(P.GRAB_JOB_UNIQ)
        uniques = [p[1][2] for p in await worker.packets(4)]
        assert uniques == [b"high", b"n1", b"n2", b"low"]
        client = await connect(srv)
        client.send(P.SUBMIT_JOB_BG, b"f", b"fresh", data=b"x")
        await client.packet()
        assert max(store.rows) == 5  # ids continue after the replayed ones


async def test_coalescing_still_works_after_a_replay(connect: Connect) -> None:
    store = SlowStore()
    store.delay = 0
    store.rows[7] = StoredJob(7, b"f", b"same", b"old payload", 1)
    store.rows[8] = StoredJob(8, b"f", b"", b"anonymous", 1)
    async with running_server(store=store) as srv:
        client = await connect(srv)
        client.send(P.SUBMIT_JOB, b"f", b"same", data=b"new payload")
        client.send(P.GET_STATUS_UNIQUE, b"same")
        (_, (handle,), _), status = await client.packets(2)
        assert status == (P.STATUS_RES_UNIQUE, (b"same", b"1", b"0", b"0", b"0", b"1"), b"")
        assert as_bytes(srv.scheduler.jobs[handle].data) == b"old payload"
        assert len(store.rows) == 2  # coalesced: nothing new stored
        worker = await connect(srv)
        worker.send(P.CAN_DO, b"f")
        worker.send(P.GRAB_JOB)
        assert (await worker.packet()).args[0] == handle
        worker.send(P.WORK_COMPLETE, handle, data=b"done")
        assert await client.packets(1) == [(P.WORK_COMPLETE, (handle,), b"done")]


async def test_epoch_job_wakes_a_sleeping_worker_when_due(server: Server, connect: Connect) -> None:
    client, worker = await connect(), await connect()
    worker.send(P.CAN_DO, b"later")
    worker.send(P.PRE_SLEEP)
    when = int(time.time()) + 2
    client.send(P.SUBMIT_JOB_EPOCH, b"later", b"e1", b"%d" % when, data=b"x")
    ((_, (handle,), _),) = await client.packets(1)
    worker.send(P.GRAB_JOB)
    assert await worker.packets(1) == [(P.NO_JOB, (), b"")]
    worker.send(P.PRE_SLEEP)
    assert await worker.packets(1, wait=5) == [(P.NOOP, (), b"")]
    assert time.time() >= when
    worker.send(P.GRAB_JOB)
    assert await worker.packets(1) == [(P.JOB_ASSIGN, (handle, b"later"), b"x")]


async def test_epoch_that_no_clock_reaches_is_refused(server: Server, connect: Connect) -> None:
    client = await connect()
    client.send(P.SUBMIT_JOB_EPOCH, b"f", b"", b"9" * 30, data=b"x")
    client.send(P.SUBMIT_JOB_EPOCH, b"f", b"", b"soon", data=b"y")  # strtoll: 0, runs now
    refused, created = await client.packets(2)
    assert refused[:2] == (P.ERROR, (b"INVALID_PACKET", b"Epoch time is not a valid number"))
    assert created[0] == P.JOB_CREATED
    assert server.scheduler.jobs[created[1][0]].state.name == "QUEUED"


async def test_can_do_timeout_requeues_and_the_late_result_is_refused(connect: Connect) -> None:
    async with running_server(job_retries=2) as srv:
        client, slow, fast = await connect(srv), await connect(srv), await connect(srv)
        slow.send(P.CAN_DO_TIMEOUT, b"f", b"10")  # ms, raised to the 1 s floor
        client.send(P.SUBMIT_JOB, b"f", b"", data=b"x")
        ((_, (handle,), _),) = await client.packets(1)
        slow.send(P.GRAB_JOB)
        await slow.packet()
        started = time.monotonic()
        fast.send(P.CAN_DO, b"f")
        fast.send(P.PRE_SLEEP)
        assert await fast.packets(1, wait=5) == [(P.NOOP, (), b"")]
        assert time.monotonic() - started >= 0.9
        fast.send(P.GRAB_JOB)
        assert (await fast.packet()).args[0] == handle
        slow.send(P.WORK_COMPLETE, handle, data=b"too late")
        assert (await slow.packet()).args[0] == b"JOB_NOT_FOUND"
        fast.send(P.WORK_COMPLETE, handle, data=b"ok")
        assert await client.packets(1) == [(P.WORK_COMPLETE, (handle,), b"ok")]


async def test_a_client_that_stops_reading_is_dropped_not_buffered_forever(
    connect: Connect,
) -> None:
    async with running_server(max_packet_size=256 * 1024) as srv:
        host, port = srv.addresses[0]
        lazy = socket.socket()
        lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        lazy.connect((host, port))
        lazy.setblocking(False)
        loop = asyncio.get_running_loop()
        jobs = 40
        await loop.sock_sendall(
            lazy,
            b"".join(
                encode_request(P.SUBMIT_JOB, b"big", b"", data=b"%d" % i) for i in range(jobs)
            ),
        )
        worker = await connect(srv)
        worker.send(P.CAN_DO, b"big")
        result = b"r" * (200 * 1024)
        dropped = False
        for _ in range(jobs):
            worker.send(P.GRAB_JOB)
            assign = await worker.packet()
            if assign.type == P.NO_JOB:
                break
            worker.send(P.WORK_COMPLETE, assign.args[0], data=result)
            worker.send(P.ECHO_REQ, data=b"sync")
            while (await worker.packet()).type != P.ECHO_RES:
                pass
            dropped = len(srv.connections) == 1  # only the worker is left
            if dropped:
                break
        assert dropped, "the server kept buffering for a client that does not read"
        worker.send(P.ECHO_REQ, data=b"still fine")
        assert await worker.packets(1) == [(P.ECHO_RES, (), b"still fine")]
        lazy.close()
