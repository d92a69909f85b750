"""Bad input on raw sockets: malformed, oversized, unframeable and garbage data.

gearmand closes silently on what it cannot frame and desynchronises on packets missing their
zero bytes; geartrain answers with an ERROR (PROTOCOL.md §2.2, §11, **geartrain:** marks).
Whatever arrives, the server must keep serving other connections afterwards.
"""

from __future__ import annotations

import struct

import pytest

from tests.interop.wire import REQ, RES, Conn, P, packet, server_alive
from tests.support import ServerProcess, start_geartrain

pytestmark = pytest.mark.interop


def is_gearmand(server: ServerProcess) -> bool:
    return server.kind == "gearmand"


def test_response_magic_is_rejected(any_server: ServerProcess) -> None:
    with Conn(any_server) as conn:
        conn.send_raw(packet(P.ECHO_REQ, b"x", magic=RES))
        assert conn.recv() == (P.ERROR, b"INVALID_MAGIC\0Request magic expected")
        conn.sync()  # the connection stays usable


@pytest.mark.parametrize("ptype", [5, P.NOOP, P.JOB_CREATED, P.NO_JOB, P.ECHO_RES, P.ALL_YOURS])
def test_unexpected_command(any_server: ServerProcess, ptype: int) -> None:
    with Conn(any_server) as conn:
        conn.send(ptype)
        assert conn.recv() == (P.ERROR, b"INVALID_COMMAND\0Command not expected")
        conn.sync()


def test_submit_job_sched_is_not_silently_dropped(any_server: ServerProcess) -> None:
    with Conn(any_server) as conn:
        conn.send(P.SUBMIT_JOB_SCHED, b"sched", b"", b"1", b"2", b"3", b"4", b"5", b"data")
        kind, body = conn.recv()
        if is_gearmand(any_server):
            assert (kind, body) == (P.ERROR, b"INVALID_COMMAND\0Command not expected")
        else:
            assert kind in (P.ERROR, P.JOB_CREATED)
        conn.sync()


def _closed_maybe_after_error(conn: Conn) -> bool:
    """True if the server closed the connection, with at most ERROR packets sent first."""
    closed = conn.closed_by_server()
    while len(conn.buf) >= 12:
        kind, _ = conn.recv()
        assert kind == P.ERROR
    return closed


@pytest.mark.parametrize(
    "data",
    [
        b"\0XYZ" + struct.pack(">II", 16, 0),  # bad magic
        REQ + struct.pack(">II", 0, 0),  # type 0
        REQ + struct.pack(">II", 43, 0),  # first unknown type
        REQ + struct.pack(">II", 0xFFFF, 4) + b"abcd",
        b"\0\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4\xf3",  # binary garbage
    ],
    ids=["bad-magic", "type-0", "type-43", "type-65535", "garbage"],
)
def test_unframeable_input_closes_connection(any_server: ServerProcess, data: bytes) -> None:
    with Conn(any_server) as conn:
        conn.send_raw(data)
        assert _closed_maybe_after_error(conn)
    server_alive(any_server)


def test_text_garbage_is_an_unknown_command(any_server: ServerProcess) -> None:
    with Conn(any_server) as conn:
        assert (
            conn.admin(b"\xff\xfe garbage \x01")
            == b"ERR UNKNOWN_COMMAND Unknown+server+command\xff\xfe\r\n"
        )
        conn.sync()


def test_missing_argument_separator(any_server: ServerProcess) -> None:
    """A CAN_DO_TIMEOUT without its zero byte, then an ECHO: gearmand reads into the ECHO and
    desynchronises; geartrain bounds parsing by the header and reports INVALID_PACKET."""
    with Conn(any_server) as conn:
        conn.send_raw(packet(P.CAN_DO_TIMEOUT, b"fn1000") + packet(P.ECHO_REQ, b"after"))
        if is_gearmand(any_server):
            assert conn.nothing_pending(0.5)
        else:
            kind, body = conn.recv()
            assert kind == P.ERROR and body.startswith(b"INVALID_PACKET\0"), body
            if not conn.closed_by_server(0.5):
                assert conn.recv() == (P.ECHO_RES, b"after")
    server_alive(any_server)


def test_submit_without_separators(any_server: ServerProcess) -> None:
    with Conn(any_server) as conn:
        conn.send_raw(packet(P.SUBMIT_JOB, b"no-zero-bytes-here"))
        if is_gearmand(any_server):
            conn.nothing_pending(0.3)
        else:
            kind, body = conn.recv()
            assert kind == P.ERROR and body.startswith(b"INVALID_PACKET\0"), body
    server_alive(any_server)


def test_body_of_4_gib_is_awaited(any_server: ServerProcess) -> None:
    """A header announcing 4 GiB - 1: both servers wait for the body (gearmand to buffer it
    in memory, geartrain to spool it to a file) and answer other connections meanwhile."""
    with Conn(any_server) as conn:
        conn.send_raw(REQ + struct.pack(">II", P.ECHO_REQ, 0xFFFFFFFF) + b"x" * 1024)
        assert conn.nothing_pending(0.5)
        server_alive(any_server)


def test_body_over_the_configured_cap_is_refused() -> None:
    """With --max-packet-size, geartrain refuses a larger body on its header alone
    (ARGUMENT_TOO_LARGE) and closes; gearmand has no such option."""
    server = start_geartrain(args=["--max-packet-size", "65536"])
    try:
        with Conn(server) as conn:
            conn.send_raw(REQ + struct.pack(">II", P.ECHO_REQ, 65537) + b"x" * 1024)
            kind, body = conn.recv()
            assert kind == P.ERROR and body.startswith(b"ARGUMENT_TOO_LARGE\0"), body
            assert conn.closed_by_server()
        server_alive(server)
    finally:
        server.stop()


def test_long_function_name(any_server: ServerProcess) -> None:
    """gearmand's zero-terminated arguments must fit in 8 KB; geartrain has no such limit."""
    name = b"f" * 9000
    with Conn(any_server) as conn:
        conn.send(P.SUBMIT_JOB_BG, name, b"", b"x")
        if is_gearmand(any_server):
            assert conn.closed_by_server()
        else:
            assert conn.expect(P.JOB_CREATED).startswith(b"H:")
    server_alive(any_server)


def test_server_survives_abrupt_disconnects(any_server: ServerProcess) -> None:
    for data in [packet(P.SUBMIT_JOB, b"f", b"", b"x")[:15], b"stat", REQ + b"\0\0"]:
        with Conn(any_server) as conn:
            conn.send_raw(data)
    with Conn(any_server) as worker:
        worker.register(b"f")
        worker.send(P.GRAB_JOB)
        kind, _ = worker.recv()
        assert kind == P.NO_JOB  # the half-sent job never existed
    server_alive(any_server)
