"""The text admin protocol on a raw socket, byte for byte (PROTOCOL.md §12).

Tools such as gearadmin, python ``gear`` and monitoring scripts parse these replies by their
exact shape: list lines ending ``\\n`` closed by ``.\\n``, ``OK\\r\\n``, ``OK <value>\\n``,
``ERR <CODE> <text+with+pluses>\\r\\n``.
"""

from __future__ import annotations

import re

import pytest

from tests.interop.wire import Conn, P, normalise_handles, server_alive, status
from tests.support import ServerProcess

pytestmark = pytest.mark.interop

INCOMPLETE = b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+"


def test_transcript(any_server: ServerProcess) -> None:
    """The transcript of PROTOCOL.md §12.3 (lines ending in \\r\\n, as gearadmin sends them)."""
    with Conn(any_server) as worker, Conn(any_server) as client, Conn(any_server) as adm:
        worker.register(b"rev")
        handle = client.submit(b"rev", b"", b"Hello")

        assert adm.admin("status") == b"rev\t1\t0\t1\n.\n"
        workers = re.sub(rb"(?m)^\d+ ", b"FD ", adm.admin("workers"))
        assert workers.endswith(b"\n.\n")
        assert sorted(workers[:-3].split(b"\n")) == [
            b"FD 127.0.0.1 - :",
            b"FD 127.0.0.1 - :",
            b"FD 127.0.0.1 - : rev",
        ]
        assert adm.admin("show jobs") == handle + b"\t0\t0\t0\n.\n"
        assert adm.admin("show unique jobs") == b"\n.\n"
        assert adm.admin("prioritystatus") == b"rev\t0\t1\t0\t1\n.\n"
        assert adm.admin("maxqueue") == INCOMPLETE + b"maxqueue\r\n"
        assert adm.admin("maxqueue x") == b"OK\r\n"
        assert adm.admin("drop function nope") == b"ERR function not found\r\n"
        assert adm.admin("cancel job H:x:1") == b"ERR UNKNOWN_JOB\r\n"
        assert adm.admin("foo bar") == b"ERR UNKNOWN_COMMAND Unknown+server+commandfoo\r\n"
        assert re.fullmatch(rb"OK \d\S*\n", adm.admin("version"))
        assert re.fullmatch(rb"OK [A-Z]+\n", adm.admin("verbose"))
        assert adm.admin("getpid") == b"OK %d\n" % any_server.proc.pid


# Admin lines and gearmand's exact replies (PROTOCOL.md §12).
REPLY_SHAPES = [
    (b"", b"ERR UNKNOWN_COMMAND Unknown+server+command\r\n"),
    (b"show", b"ERR UNKNOWN_COMMAND Unknown+server+commandshow\r\n"),
    (b"show x", b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n"),
    (b"show unique", b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n"),
    (b"create", INCOMPLETE + b"create\r\n"),
    (b"create function", INCOMPLETE + b"create\r\n"),
    (b"drop function", INCOMPLETE + b"drop\r\n"),
    (b"cancel job", b"ERR UNKNOWN_COMMAND Unknown+server+commandcancel\r\n"),
    (b"shutdown", b"ERR UNKNOWN_COMMAND Unknown+server+commandshutdown\r\n"),
    (b"shutdown graceful", b"ERR UNKNOWN_COMMAND Unknown+server+commandshutdown\r\n"),
    (b"show\tjobs", b"ERR UNKNOWN_COMMAND Unknown+server+commandshow\tjobs\r\n"),
    (b" status", b"ERR UNKNOWN_COMMAND Unknown+server+command\r\n"),
    (b"STATUS", b".\n"),
    (b"Show Jobs", b".\n"),
    (b"status extra words", b".\n"),
    (b"maxqueue nosuchfunction 3", b"OK\r\n"),
]


@pytest.mark.parametrize(
    ("line", "reply"), REPLY_SHAPES, ids=[repr(line.decode()) for line, _ in REPLY_SHAPES]
)
@pytest.mark.parametrize("ending", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_reply_shapes(any_server: ServerProcess, line: bytes, reply: bytes, ending: bytes) -> None:
    with Conn(any_server) as conn:
        assert conn.admin(line, ending) == reply


def test_pipelined_lines_answered_in_order(any_server: ServerProcess) -> None:
    with Conn(any_server) as conn:
        conn.send_raw(b"create function piped\r\nstatus\r\nnope\r\nstatus\n")
        assert conn.read_admin_reply() == b"OK\r\n"
        assert conn.read_admin_reply() == b"piped\t0\t0\t0\n.\n"
        assert conn.read_admin_reply() == b"ERR UNKNOWN_COMMAND Unknown+server+commandnope\r\n"
        assert conn.read_admin_reply() == b"piped\t0\t0\t0\n.\n"


def test_text_and_binary_interleave_on_one_connection(any_server: ServerProcess) -> None:
    with Conn(any_server) as conn:
        conn.send(P.ECHO_REQ, b"one")
        conn.send_raw(b"status\n")
        conn.send(P.ECHO_REQ, b"two")
        assert conn.expect(P.ECHO_RES) == b"one"
        assert conn.read_admin_reply() == b".\n"
        assert conn.expect(P.ECHO_RES) == b"two"


def test_create_function_with_bare_newline(any_server: ServerProcess) -> None:
    """gearmand cuts two bytes off the name assuming ``\\r\\n``; geartrain uses the real word."""
    with Conn(any_server) as conn:
        assert conn.admin("create function abcdef", b"\n") == b"OK\r\n"
    expected = "abcde" if any_server.kind == "gearmand" else "abcdef"
    assert list(status(any_server)) == [expected]


def test_drop_function_name_is_case_insensitive(any_server: ServerProcess) -> None:
    with Conn(any_server) as conn:
        assert conn.admin("create function abcde") == b"OK\r\n"
        assert conn.admin("drop function ABCDE") == b"OK\r\n"
        assert conn.admin("status") == b".\n"


def test_maxqueue_limits_submissions(any_server: ServerProcess) -> None:
    with Conn(any_server) as conn:
        assert conn.admin("create function limited") == b"OK\r\n"
        assert conn.admin("maxqueue limited 1") == b"OK\r\n"
        conn.submit(b"limited", b"a", b"x", P.SUBMIT_JOB_BG)
        conn.send(P.SUBMIT_JOB_BG, b"limited", b"b", b"y")
        assert conn.expect(P.ERROR) == b"QUEUE_ERROR\0Job queue is full"
        assert conn.admin("maxqueue limited") == b"OK\r\n"
        conn.submit(b"limited", b"b", b"y", P.SUBMIT_JOB_BG)
        assert conn.admin("status") == b"limited\t2\t0\t0\n.\n"


def test_cancel_job_reply(any_server: ServerProcess) -> None:
    with Conn(any_server) as conn:
        handle = conn.submit(b"tocancel", b"k", b"x", P.SUBMIT_JOB_BG)
        assert conn.admin(b"cancel job " + handle) == b"OK\r\n"
        # gearmand keeps a cancelled job (flagged "ignore") until a worker reaches it, so a second
        # cancel still says OK; in geartrain a cancelled job is gone (PROTOCOL.md §8.4).
        again = b"OK\r\n" if any_server.kind == "gearmand" else b"ERR UNKNOWN_JOB\r\n"
        assert conn.admin(b"cancel job " + handle) == again


def test_long_admin_line_keeps_server_alive(any_server: ServerProcess) -> None:
    """gearmand closes on lines over ~8 KB; either way the server must survive."""
    with Conn(any_server) as conn:
        conn.send_raw(b"status " + b"x" * 20000 + b"\r\n")
        if any_server.kind == "gearmand":
            assert conn.closed_by_server()
    server_alive(any_server)


# The same command list on both servers: replies must be identical after normalising the fds of
# "workers", the pid of "getpid", the version string, the log level named by "verbose" and job
# handles (which embed the host name).
# "status"/"prioritystatus" lines are sorted (gearmand uses hash order). Deliberate geartrain
# differences (PROTOCOL.md "geartrain:" marks) are left out of this list.
COMMANDS = [
    "status",
    "prioritystatus",
    "workers",
    "show jobs",
    "show unique jobs",
    "version",
    "verbose",
    "getpid",
    "VERSION",
    "create function made",
    "create function",
    "status",
    "drop function made",
    "drop function made",
    "drop function busy",
    "drop function",
    "maxqueue",
    "maxqueue busy 10",
    "maxqueue busy 1 2 3",
    "cancel job H:nowhere:1",
    "cancel x y",
    "cancel job",
    "show",
    "show x",
    "show unique",
    "shutdown",
    "",
    "frobnicate now",
]


def _normalise(command: str, reply: bytes, pid: int, handles: dict[bytes, bytes]) -> bytes:
    reply = normalise_handles(reply, handles)
    if command == "workers":
        reply = re.sub(rb"(?m)^\d+ ", b"FD ", reply)
    if command.lower() == "version":
        reply = re.sub(rb"^OK \S+\n$", b"OK VERSION\n", reply)
    if command == "verbose":
        # The log level is configuration (gearmand defaults to ERROR, geartrain to NOTICE).
        reply = re.sub(
            rb"^OK (FATAL|ALERT|CRITICAL|ERROR|WARNING|NOTICE|INFO|DEBUG)\n$", b"OK LEVEL\n", reply
        )
    if command == "getpid":
        reply = reply.replace(b"OK %d\n" % pid, b"OK PID\n")
    if reply.endswith(b".\n") and b"\n" in reply[:-2]:
        reply = b"\n".join(sorted(reply[:-2].split(b"\n"))) + b"|.\n"
    return reply


def test_admin_replies_same_as_gearmand(server_pair: dict[str, ServerProcess]) -> None:
    transcripts: dict[str, list[bytes]] = {}
    for kind, server in server_pair.items():
        with Conn(server) as worker, Conn(server) as client, Conn(server) as adm:
            worker.register(b"busy", b"other", client_id=b"wid")
            handles = {
                client.submit(b"busy", b"u1", b"a", P.SUBMIT_JOB_BG): b"<H1>",
                client.submit(b"busy", b"", b"b", P.SUBMIT_JOB_HIGH): b"<H2>",
                client.submit(b"idle", b"u3", b"c", P.SUBMIT_JOB_LOW_BG): b"<H3>",
            }
            assert worker.grab()[1][-1] == b"b"
            transcripts[kind] = [
                _normalise(cmd, adm.admin(cmd), server.proc.pid, handles) for cmd in COMMANDS
            ]
    for command, ours, reference in zip(
        COMMANDS, transcripts["geartrain"], transcripts["gearmand"], strict=True
    ):
        assert ours == reference, f"admin command {command!r}"
