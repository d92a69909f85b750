"""Binary protocol behaviour that real clients depend on (PROTOCOL.md §15), on raw sockets.

Where gearmand 1.1.x has a bug that PROTOCOL.md marks with a **geartrain:** recommendation, the
gearmand run documents what gearmand does and the geartrain run asserts the better behaviour.
Bad input is in ``test_bad_input.py``.
"""

from __future__ import annotations

import struct

import pytest

from tests.interop.wire import REQ, Conn, P, admin, packet
from tests.support import ServerProcess

pytestmark = pytest.mark.interop

NOT_FOUND_RESULT = b"JOB_NOT_FOUND\0Job given in work result not found"


def is_gearmand(server: ServerProcess) -> bool:
    return server.kind == "gearmand"


# ----------------------------------------------------------------------------- submissions


def test_job_created_in_submission_order(any_server: ServerProcess) -> None:
    """Pipelined submissions are answered in order; an ERROR takes its submission's place."""
    with Conn(any_server) as conn:
        conn.send_raw(
            packet(P.SUBMIT_JOB_BG, b"order", b"a", b"1")
            + packet(P.SUBMIT_JOB, b"order", b"b", b"2")
            + packet(P.SUBMIT_JOB_HIGH_BG, b"order", b"u" * 65, b"3")
            + packet(P.SUBMIT_JOB_LOW, b"order", b"", b"4")
            + packet(P.SUBMIT_JOB_BG, b"order", b"a", b"dup")
        )
        replies = [conn.recv() for _ in range(5)]
    kinds = [kind for kind, _ in replies]
    assert kinds == [P.JOB_CREATED, P.JOB_CREATED, P.ERROR, P.JOB_CREATED, P.JOB_CREATED]
    assert replies[2][1] == b"ARGUMENT_TOO_LARGE\0Unique value too large"
    handles = [body for kind, body in replies if kind == P.JOB_CREATED]
    assert len(set(handles[:3])) == 3 and handles[3] == handles[0]  # "a" coalesced
    assert all(h.startswith(b"H:") and len(h) < 64 for h in handles)


def test_empty_and_dash_uniques(any_server: ServerProcess) -> None:
    with Conn(any_server) as conn:
        empty = [conn.submit(b"uq", b"", b"same", P.SUBMIT_JOB_BG) for _ in range(2)]
        dash_same = [conn.submit(b"uq", b"-", b"payload", P.SUBMIT_JOB_BG) for _ in range(2)]
        dash_other = conn.submit(b"uq", b"-", b"other", P.SUBMIT_JOB_BG)
        dash_empty = [conn.submit(b"uq", b"-", b"", P.SUBMIT_JOB_BG) for _ in range(2)]
        other_function = conn.submit(b"uq2", b"-", b"payload", P.SUBMIT_JOB_BG)
    assert empty[0] != empty[1]  # empty unique never coalesces
    assert dash_same[0] == dash_same[1]  # "-" coalesces on the payload
    assert dash_other != dash_same[0]
    assert dash_empty[0] != dash_empty[1]  # "-" with empty data does not coalesce
    assert other_function != dash_same[0]


def test_unique_of_64_bytes(any_server: ServerProcess) -> None:
    unique = bytes(range(65, 65 + 64))
    with Conn(any_server) as conn:
        first = conn.submit(b"u64", unique, b"x", P.SUBMIT_JOB_BG)
        second = conn.submit(b"u64", unique, b"y", P.SUBMIT_JOB_BG)
        listed = conn.admin("show unique jobs")
    with Conn(any_server) as conn:
        conn.send(P.GET_STATUS_UNIQUE, unique)
        if is_gearmand(any_server):
            # gearmand keeps 63 bytes (no coalescing) and drops a 64-byte status query.
            assert first != second
            assert listed == unique[:63] + b"\n" + unique[:63] + b"\n.\n"
            assert conn.closed_by_server()
            return
        assert conn.expect(P.STATUS_RES_UNIQUE) == unique + b"\x001\x000\x000\x000\x000"
    assert first == second
    assert listed == unique + b"\n.\n"


def test_coalesced_foreground_clients_all_get_results(any_server: ServerProcess) -> None:
    with Conn(any_server) as one, Conn(any_server) as two, Conn(any_server) as worker:
        handle = one.submit(b"co", b"key", b"original")
        assert two.submit(b"co", b"key", b"ignored", P.SUBMIT_JOB_HIGH) == handle
        status = two.request(P.GET_STATUS_UNIQUE, b"key", reply=P.STATUS_RES_UNIQUE)
        assert status == b"key\x001\x000\x000\x000\x002"
        worker.register(b"co")
        assert worker.grab_next() == [handle, b"co", b"key", b"original"]
        worker.send(P.WORK_DATA, handle, b"chunk")
        worker.send(P.WORK_COMPLETE, handle, b"done")
        for conn in (one, two):
            assert conn.recv() == (P.WORK_DATA, handle + b"\0chunk")
            assert conn.recv() == (P.WORK_COMPLETE, handle + b"\0done")
            assert conn.nothing_pending()


def test_same_connection_submitting_twice(any_server: ServerProcess) -> None:
    """gearmand attaches the connection twice and sends every result twice; geartrain once."""
    with Conn(any_server) as client, Conn(any_server) as worker:
        handle = client.submit(b"twice", b"k", b"x")
        assert client.submit(b"twice", b"k", b"x") == handle
        worker.register(b"twice")
        worker.grab_next()
        worker.send(P.WORK_COMPLETE, handle, b"r")
        assert client.recv() == (P.WORK_COMPLETE, handle + b"\0r")
        if is_gearmand(any_server):
            assert client.recv() == (P.WORK_COMPLETE, handle + b"\0r")
        assert client.nothing_pending()


def test_background_job_joined_by_foreground_client(any_server: ServerProcess) -> None:
    with Conn(any_server) as client, Conn(any_server) as worker:
        handle = client.submit(b"bgfg", b"k", b"x", P.SUBMIT_JOB_BG)
        assert client.submit(b"bgfg", b"k", b"y") == handle
        worker.register(b"bgfg")
        worker.grab_next()
        worker.send(P.WORK_COMPLETE, handle, b"ok")
        assert client.expect(P.WORK_COMPLETE) == handle + b"\0ok"


# ----------------------------------------------------------------------------- queue order


def test_priority_order_within_a_function(any_server: ServerProcess) -> None:
    with Conn(any_server) as client, Conn(any_server) as worker:
        for ptype, data in [
            (P.SUBMIT_JOB_LOW_BG, b"low1"),
            (P.SUBMIT_JOB_BG, b"norm1"),
            (P.SUBMIT_JOB_HIGH_BG, b"high1"),
            (P.SUBMIT_JOB_LOW_BG, b"low2"),
            (P.SUBMIT_JOB_HIGH_BG, b"high2"),
            (P.SUBMIT_JOB_BG, b"norm2"),
        ]:
            client.submit(b"prio", b"", data, ptype)
        worker.register(b"prio")
        order = [worker.grab_next()[-1] for _ in range(6)]
        assert worker.grab() == (P.NO_JOB, [])
    assert order == [b"high1", b"high2", b"norm1", b"norm2", b"low1", b"low2"]


def test_priority_across_functions(any_server: ServerProcess) -> None:
    """gearmand 1.1 serves the most recently registered function first, whatever the priority;
    geartrain follows gearmand 2.0: a high job of any function first (PROTOCOL.md §6.4)."""
    with Conn(any_server) as client, Conn(any_server) as worker:
        client.submit(b"pa", b"", b"a-high", P.SUBMIT_JOB_HIGH_BG)
        client.submit(b"pb", b"", b"b-low", P.SUBMIT_JOB_LOW_BG)
        worker.register(b"pa", b"pb")
        order = [worker.grab_next()[-1] for _ in range(2)]
    assert order == ([b"b-low", b"a-high"] if is_gearmand(any_server) else [b"a-high", b"b-low"])


def test_grab_variants(any_server: ServerProcess) -> None:
    with Conn(any_server) as client, Conn(any_server) as worker:
        assert worker.grab(P.GRAB_JOB) == (P.NO_JOB, [])  # nothing registered
        worker.register(b"g")
        h1 = client.submit(b"g", b"u1", b"", P.SUBMIT_JOB_BG)
        h2 = client.submit(b"g", b"u2", b"d2", P.SUBMIT_JOB_BG)
        h3 = client.submit(b"g", b"u3", b"d\x003", P.SUBMIT_JOB_BG)
        worker.send(P.GRAB_JOB)
        assert worker.recv() == (P.JOB_ASSIGN, h1 + b"\0g\0")  # empty data keeps the zero
        worker.send(P.GRAB_JOB_UNIQ)
        assert worker.recv() == (P.JOB_ASSIGN_UNIQ, h2 + b"\0g\0u2\0d2")
        worker.send(P.GRAB_JOB_ALL)
        assert worker.recv() == (P.JOB_ASSIGN_UNIQ, h3 + b"\0g\0u3\0d\x003")


def test_pre_sleep_and_noop(any_server: ServerProcess) -> None:
    with Conn(any_server) as client, Conn(any_server) as worker:
        worker.register(b"sleepy")
        assert worker.grab() == (P.NO_JOB, [])
        worker.send(P.PRE_SLEEP)
        assert worker.nothing_pending()
        handle = client.submit(b"sleepy", b"", b"wake", P.SUBMIT_JOB_BG)
        assert worker.recv() == (P.NOOP, b"")
        client.submit(b"sleepy", b"", b"again", P.SUBMIT_JOB_BG)
        assert worker.nothing_pending()  # one NOOP until the worker grabs
        assert worker.grab()[1][0] == handle
        worker.send(P.PRE_SLEEP)  # work is pending: NOOP at once
        assert worker.recv() == (P.NOOP, b"")


def test_worker_disconnect_requeues(any_server: ServerProcess) -> None:
    with Conn(any_server) as client:
        handle = client.submit(b"requeue", b"", b"x")
        with Conn(any_server) as first:
            first.register(b"requeue")
            first.grab_next()
            first.send(P.WORK_STATUS, handle, b"1", b"2")
            assert client.expect(P.WORK_STATUS) == handle + b"\x001\x002"
        with Conn(any_server) as second:
            second.register(b"requeue")
            assert second.grab_next()[0] == handle
            assert admin(any_server, "show jobs") == handle + b"\t1\t0\t0\n.\n"
            status = client.request(P.GET_STATUS, handle, reply=P.STATUS_RES)
            assert status == handle + b"\x001\x001\x000\x000"  # fraction reset
            second.send(P.WORK_COMPLETE, handle, b"second time")
            assert client.expect(P.WORK_COMPLETE) == handle + b"\0second time"


# ----------------------------------------------------------------------------- results


def test_work_fail_is_bare_handle(any_server: ServerProcess) -> None:
    with Conn(any_server) as client, Conn(any_server) as worker:
        worker.register(b"wf")
        first = client.submit(b"wf", b"", b"1")
        second = client.submit(b"wf", b"", b"2")
        worker.grab_next()
        worker.send(P.WORK_FAIL, first)
        assert client.recv() == (P.WORK_FAIL, first)
        worker.grab_next()
        worker.send_raw(REQ + struct.pack(">II", P.WORK_FAIL, len(second) + 1) + second + b"\0")
        # gearmand forwards the stray zero (libgearman then never matches it); geartrain strips it.
        expected = second + b"\0" if is_gearmand(any_server) else second
        assert client.recv() == (P.WORK_FAIL, expected)


def test_work_exception_without_option_becomes_work_fail(any_server: ServerProcess) -> None:
    with Conn(any_server) as client, Conn(any_server) as worker:
        worker.register(b"we")
        handle = client.submit(b"we", b"", b"x")
        worker.grab_next()
        worker.send(P.WORK_EXCEPTION, handle, b"trace")
        expected = handle + b"\0" if is_gearmand(any_server) else handle
        assert client.recv() == (P.WORK_FAIL, expected)


def test_work_exception_with_option(any_server: ServerProcess) -> None:
    with Conn(any_server) as client, Conn(any_server) as worker:
        assert client.request(P.OPTION_REQ, b"exceptions", reply=P.OPTION_RES) == b"exceptions"
        worker.register(b"we")
        handle = client.submit(b"we", b"", b"x")
        worker.grab_next()
        worker.send(P.WORK_WARNING, handle, b"warn")
        worker.send(P.WORK_EXCEPTION, handle, b"trace\0with zero")
        assert client.recv() == (P.WORK_WARNING, handle + b"\0warn")
        assert client.recv() == (P.WORK_EXCEPTION, handle + b"\0trace\0with zero")


def test_exception_then_fail_from_worker(any_server: ServerProcess) -> None:
    """The Perl worker's WORK_EXCEPTION + WORK_FAIL pair (PROTOCOL.md §14)."""
    with Conn(any_server) as client, Conn(any_server) as worker:
        worker.register(b"perlish")
        handle = client.submit(b"perlish", b"", b"x")
        worker.grab_next(P.GRAB_JOB)
        worker.send(P.WORK_EXCEPTION, handle, b"frozen")
        worker.send(P.WORK_FAIL, handle)
        worker.send(P.GRAB_JOB)
        if is_gearmand(any_server):
            assert worker.recv() == (P.ERROR, NOT_FOUND_RESULT)
        assert worker.recv() == (P.NO_JOB, b"")
        assert client.recv()[0] == P.WORK_FAIL
        assert client.nothing_pending()


@pytest.mark.parametrize(
    ("ptype", "fields", "error"),
    [
        (P.WORK_DATA, (b"d",), b"JOB_NOT_FOUND\0Job does not exist on server"),
        (P.WORK_WARNING, (b"w",), b"JOB_NOT_FOUND\0Job does not exist on server"),
        (P.WORK_STATUS, (b"1", b"2"), NOT_FOUND_RESULT),
        (P.WORK_COMPLETE, (b"r",), NOT_FOUND_RESULT),
        (P.WORK_FAIL, (), NOT_FOUND_RESULT),
        (
            P.WORK_EXCEPTION,
            (b"e",),
            b"JOB_NOT_FOUND\0An exception was received for a job that does not exist",
        ),
    ],
    ids=[
        "WORK_DATA",
        "WORK_WARNING",
        "WORK_STATUS",
        "WORK_COMPLETE",
        "WORK_FAIL",
        "WORK_EXCEPTION",
    ],
)
def test_results_for_jobs_not_owned(
    any_server: ServerProcess, ptype: int, fields: tuple[bytes, ...], error: bytes
) -> None:
    with Conn(any_server) as client, Conn(any_server) as owner, Conn(any_server) as other:
        owner.register(b"own")
        handle = client.submit(b"own", b"", b"x")
        owner.grab_next()
        for conn, target in ((other, handle), (other, b"H:nowhere:99")):
            conn.send(ptype, target, *fields)
            assert conn.recv() == (P.ERROR, error)
        assert client.nothing_pending()
        owner.send(P.WORK_COMPLETE, handle, b"real")
        assert client.recv() == (P.WORK_COMPLETE, handle + b"\0real")


# ------------------------------------------------------------------------ status, echo, options


def test_get_status(any_server: ServerProcess) -> None:
    with Conn(any_server) as client, Conn(any_server) as worker:
        unknown = client.request(P.GET_STATUS, b"H:unknown:1", reply=P.STATUS_RES)
        assert unknown == b"H:unknown:1\x000\x000\x000\x000"
        handle = client.submit(b"gs", b"gs-u", b"x", P.SUBMIT_JOB_BG)
        assert (
            client.request(P.GET_STATUS, handle, reply=P.STATUS_RES)
            == handle + b"\x001\x000\x000\x000"
        )
        worker.register(b"gs")
        worker.grab_next()
        worker.send(P.WORK_STATUS, handle, b"7", b"9")
        worker.sync()
        assert (
            client.request(P.GET_STATUS, handle, reply=P.STATUS_RES)
            == handle + b"\x001\x001\x007\x009"
        )
        by_unique = client.request(P.GET_STATUS_UNIQUE, b"gs-u", reply=P.STATUS_RES_UNIQUE)
        assert by_unique == b"gs-u\x001\x001\x007\x009\x000"
        none = client.request(P.GET_STATUS_UNIQUE, b"nope", reply=P.STATUS_RES_UNIQUE)
        assert none == b"nope\x000\x000\x000\x000\x000"


def test_echo(any_server: ServerProcess) -> None:
    with Conn(any_server) as conn:
        assert conn.request(P.ECHO_REQ, b"", reply=P.ECHO_RES) == b""
        data = bytes(range(256)) * 4096  # 1 MiB with zeros
        assert conn.request(P.ECHO_REQ, data, reply=P.ECHO_RES) == data


@pytest.mark.parametrize(
    ("option", "reply"),
    [
        (b"exceptions", (P.OPTION_RES, b"exceptions")),
        (b"EXCEPTIONS", (P.OPTION_RES, b"EXCEPTIONS")),
        (b"nonsense", (P.ERROR, b"UNKNOWN_OPTION\0Server does not recognize given option")),
        (b"x" * 70, (P.ERROR, b"UNKNOWN_OPTION\0Server does not recognize given option")),
    ],
)
def test_option_req(any_server: ServerProcess, option: bytes, reply: tuple[int, bytes]) -> None:
    with Conn(any_server) as conn:
        conn.send(P.OPTION_REQ, option)
        assert conn.recv() == reply
        conn.sync()


def test_client_id_shown_by_workers(any_server: ServerProcess) -> None:
    with Conn(any_server) as conn:
        conn.register(b"cid_fn", client_id=b"my id with spaces")
        workers = conn.admin("workers")
    assert b" 127.0.0.1 my id with spaces : cid_fn\n" in workers


def test_large_job_streams_through(any_server: ServerProcess) -> None:
    data = b"\0payload" * (1 << 20)  # 8 MiB
    with Conn(any_server, timeout=30) as client, Conn(any_server, timeout=30) as worker:
        handle = client.submit(b"big", b"", data)
        worker.register(b"big")
        assert worker.grab_next()[-1] == data
        worker.send(P.WORK_COMPLETE, handle, data[::-1])
        assert client.expect(P.WORK_COMPLETE) == handle + b"\0" + data[::-1]


def test_functions_outlive_their_workers_and_duplicate_can_do(any_server: ServerProcess) -> None:
    """gearmand counts a repeated CAN_DO twice; geartrain counts it once (documented in the
    README, allowed by PROTOCOL.md §15.15)."""
    with Conn(any_server) as worker:
        worker.register(b"dup", b"dup")
        if is_gearmand(any_server):
            assert admin(any_server, "status") == b"dup\t0\t0\t2\n.\n"
            assert b" 127.0.0.1 - : dup dup\n" in admin(any_server, "workers")
        else:
            assert admin(any_server, "status") == b"dup\t0\t0\t1\n.\n"
            assert b" 127.0.0.1 - : dup\n" in admin(any_server, "workers")
    with Conn(any_server) as conn:
        assert conn.admin("status") == b"dup\t0\t0\t0\n.\n"


def test_client_id_up_to_127_bytes(any_server: ServerProcess) -> None:
    client_id = bytes(range(0x41, 0x41 + 26)) * 5  # 130 bytes, no spaces
    with Conn(any_server) as conn:
        conn.register(b"cid", client_id=client_id)
        workers = conn.admin("workers")
    assert b" " + client_id[:127] + b" : cid\n" in workers
