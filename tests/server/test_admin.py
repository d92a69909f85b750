"""Every admin command over a real socket, with gearmand 1.1.20's exact reply bytes."""

from __future__ import annotations

import os

from geartrain import __version__
from geartrain.protocol.constants import PacketType as P
from geartrain.server.app import Server

from .conftest import Connect

INCOMPLETE = b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+%s\r\n"


async def test_status_lists_every_function_with_total_running_workers(
    server: Server, connect: Connect
) -> None:
    admin, worker, client = await connect(), await connect(), await connect()
    assert await admin.admin(b"status") == b".\n"
    worker.send(P.CAN_DO, b"rev")
    client.send(P.SUBMIT_JOB_BG, b"rev", b"", data=b"a")
    client.send(P.SUBMIT_JOB_BG, b"rev", b"", data=b"b")
    client.send(P.SUBMIT_JOB_BG, b"other", b"", data=b"c")
    await client.packets(3)
    worker.send(P.GRAB_JOB)
    assert (await worker.packet()).type == P.JOB_ASSIGN
    assert await admin.admin(b"status") == b"rev\t2\t1\t1\nother\t1\t0\t0\n.\n"
    assert await admin.admin(b"STATUS") == b"rev\t2\t1\t1\nother\t1\t0\t0\n.\n"


async def test_prioritystatus_counts_queued_jobs_per_priority(
    server: Server, connect: Connect
) -> None:
    admin, client = await connect(), await connect()
    for ptype in (P.SUBMIT_JOB_HIGH_BG, P.SUBMIT_JOB_BG, P.SUBMIT_JOB_BG, P.SUBMIT_JOB_LOW_BG):
        client.send(ptype, b"pa", b"", data=b"x")
    await client.packets(4)
    assert await admin.admin(b"prioritystatus") == b"pa\t1\t2\t1\t0\n.\n"


async def test_workers_lists_every_connection(server: Server, connect: Connect) -> None:
    admin, worker = await connect(), await connect()
    worker.send(P.SET_CLIENT_ID, b"my worker")
    worker.send(P.CAN_DO, b"pa")
    worker.send(P.CAN_DO, b"pb")
    worker.send(P.ECHO_REQ, data=b"sync")
    await worker.packet()
    lines = (await admin.admin(b"workers")).split(b"\n")
    assert lines[-2:] == [b".", b""]
    by_id = {line.split(b" ", 2)[2]: line for line in lines[:-2]}
    assert by_id[b"- :"].split(b" ")[1] == b"127.0.0.1"
    assert by_id[b"my worker : pb pa"].split(b" ")[0].isdigit()


async def test_show_jobs_and_unique_jobs(server: Server, connect: Connect) -> None:
    admin, client = await connect(), await connect()
    client.send(P.SUBMIT_JOB_BG, b"f", b"u1", data=b"x")
    client.send(P.SUBMIT_JOB, b"f", b"", data=b"y")
    handles = [p[1][0] for p in await client.packets(2)]
    assert await admin.admin(b"show jobs") == (
        b"%s\t0\t0\t1\n%s\t0\t0\t0\n.\n" % (handles[0], handles[1])
    )
    assert await admin.admin(b"show unique jobs") == b"u1\n\n.\n"
    assert await admin.admin(b"show") == b"ERR UNKNOWN_COMMAND Unknown+server+commandshow\r\n"
    assert await admin.admin(b"show x") == b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n"
    assert await admin.admin(b"show unique") == b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n"


async def test_cancel_job_forms(server: Server, connect: Connect) -> None:
    admin, client = await connect(), await connect()
    client.send(P.SUBMIT_JOB, b"f", b"", data=b"y")
    (_, (handle,), _) = (await client.packets(1))[0]
    assert await admin.admin(b"cancel job " + handle) == b"OK\r\n"
    assert await client.packets(1) == [(P.WORK_FAIL, (handle,), b"")]
    assert await admin.admin(b"cancel job " + handle) == b"ERR UNKNOWN_JOB\r\n"
    assert await admin.admin(b"cancel job") == (
        b"ERR UNKNOWN_COMMAND Unknown+server+commandcancel\r\n"
    )
    assert await admin.admin(b"cancel x y") == b"ERR UNKNOWN_ERROR\r\n"
    assert await admin.admin(b"status") == b"f\t0\t0\t0\n.\n"


async def test_create_and_drop_function(server: Server, connect: Connect) -> None:
    admin, worker = await connect(), await connect()
    assert await admin.admin(b"create function abcdef") == b"OK\r\n"
    assert await admin.admin(b"status") == b"abcdef\t0\t0\t0\n.\n"
    assert await admin.admin(b"create function") == INCOMPLETE % b"create"
    assert await admin.admin(b"create") == INCOMPLETE % b"create"
    assert await admin.admin(b"drop function nope") == b"ERR function not found\r\n"
    assert await admin.admin(b"drop function") == INCOMPLETE % b"drop"
    worker.send(P.CAN_DO, b"abcdef")
    worker.send(P.ECHO_REQ, data=b"sync")
    await worker.packet()
    assert await admin.admin(b"drop function abcdef") == (
        b"ERR there are still connected workers or executing clients\r\n"
    )
    worker.send(P.CANT_DO, b"abcdef")
    worker.send(P.ECHO_REQ, data=b"sync")
    await worker.packet()
    assert await admin.admin(b"drop function ABCDEF") == b"OK\r\n"
    assert await admin.admin(b"status") == b".\n"


async def test_drop_function_refuses_while_jobs_are_queued(
    server: Server, connect: Connect
) -> None:
    admin, client = await connect(), await connect()
    client.send(P.SUBMIT_JOB_BG, b"f", b"", data=b"x")
    await client.packet()
    assert await admin.admin(b"drop function f") == (
        b"ERR there are still connected workers or executing clients\r\n"
    )


async def test_maxqueue_forms(server: Server, connect: Connect) -> None:
    admin, client = await connect(), await connect()
    assert await admin.admin(b"maxqueue") == INCOMPLETE % b"maxqueue"
    assert await admin.admin(b"maxqueue unknown 5") == b"OK\r\n"
    assert b"unknown" not in await admin.admin(b"status")
    assert await admin.admin(b"create function f") == b"OK\r\n"
    assert await admin.admin(b"maxqueue f 1") == b"OK\r\n"
    assert server.scheduler.functions[b"f"].max_queue == [1, 1, 1]
    assert await admin.admin(b"maxqueue f 3 2") == b"OK\r\n"
    assert server.scheduler.functions[b"f"].max_queue == [3, 2, 0]
    assert await admin.admin(b"maxqueue f 1 1 -4") == b"OK\r\n"
    assert server.scheduler.functions[b"f"].max_queue == [1, 1, 0]
    client.send(P.SUBMIT_JOB_BG, b"f", b"", data=b"x")
    client.send(P.SUBMIT_JOB_BG, b"f", b"", data=b"y")
    created, refused = await client.packets(2)
    assert created[0] == P.JOB_CREATED
    assert refused == (P.ERROR, (b"QUEUE_ERROR", b"Job queue is full"), b"")
    assert await admin.admin(b"maxqueue f") == b"OK\r\n"
    assert server.scheduler.functions[b"f"].max_queue == [0, 0, 0]


async def test_value_replies_and_unknown_commands(server: Server, connect: Connect) -> None:
    admin = await connect()
    assert await admin.admin(b"version") == b"OK %s\n" % __version__.encode()
    assert await admin.admin(b"version extra args") == b"OK %s\n" % __version__.encode()
    assert await admin.admin(b"verbose") == b"OK NOTICE\n"
    assert await admin.admin(b"GetPid") == b"OK %d\n" % os.getpid()
    assert await admin.admin(b"foo bar") == b"ERR UNKNOWN_COMMAND Unknown+server+commandfoo\r\n"
    assert await admin.admin(b"") == b"ERR UNKNOWN_COMMAND Unknown+server+command\r\n"
    assert await admin.admin(b" status") == b"ERR UNKNOWN_COMMAND Unknown+server+command\r\n"
    assert await admin.admin(b"show\tjobs") == (
        b"ERR UNKNOWN_COMMAND Unknown+server+commandshow\tjobs\r\n"
    )
    assert await admin.admin(b"shutdown") == (
        b"ERR UNKNOWN_COMMAND Unknown+server+commandshutdown\r\n"
    )


async def test_admin_lines_and_binary_packets_interleave(server: Server, connect: Connect) -> None:
    conn = await connect()
    conn.send_raw(b"version\n")
    conn.send(P.ECHO_REQ, data=b"ping")
    conn.send_raw(b"status\n")
    # Bare \n line endings are fine; replies come in request order.
    reply = b""
    while b".\n" not in reply:
        reply += await conn.reader.read(4096)
    version = b"OK %s\n" % __version__.encode()
    assert reply.startswith(version)
    echo = reply[len(version) : len(version) + 16]
    assert echo == b"\0RES\0\0\0\x11\0\0\0\x04ping"
    assert reply[len(version) + 16 :] == b".\n"
