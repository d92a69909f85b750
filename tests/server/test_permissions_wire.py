"""Permissions at the wire: every packet that submits, works or administers, by address rule.

Every client here comes from 127.0.0.1, so the rules tell requests apart by function and
by right. Each denial must answer ERROR PERMISSION_DENIED (or an ERR admin line), leave
the connection working, reach no worker, and be counted.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from geartrain.protocol.constants import ErrorCode
from geartrain.protocol.constants import PacketType as P
from geartrain.server.app import Server, StartupError
from geartrain.server.config import Settings
from geartrain.server.metrics import exposition

from .conftest import RawClient, running_server, serving

#: Loopback may submit to open-* and work on everything, and read the admin status.
SUBMIT_OPEN_ONLY = """
[[grant]]
identity = {address = ["127.0.0.0/8", "::1"]}
submit = ["open*"]
work = ["*"]
admin = "read"
"""

#: Loopback may submit anything but work on open-* only, and run no admin command.
WORK_OPEN_ONLY = """
[default]
submit = ["*"]

[[grant]]
identity = {address = "127.0.0.1"}
work = ["open*"]
"""


@asynccontextmanager
async def guarded(tmp_path: Path, rules: str, **options: Any) -> AsyncIterator[Server]:
    """A server on a free port whose permissions file holds ``rules``."""
    path = tmp_path / "permissions.toml"
    path.write_text(rules)
    values: dict[str, Any] = {"listen": ["127.0.0.1"], "port": 0, "queue": "none"}
    values.update(options, permissions=str(path), job_handle_prefix="H:test")
    async with serving(Server(Settings(**values))) as server:
        yield server


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[Server], Any]]:
    """``await clients(server)``: a raw connection, closed after the test."""
    async with AsyncExitStack() as stack:

        async def connect(server: Server) -> RawClient:
            host, port = server.addresses[0]
            reader, writer = await asyncio.open_connection(host, port)
            client = RawClient(reader, writer)
            stack.push_async_callback(client.close)
            return client

        yield connect


async def still_answers(client: RawClient) -> None:
    """The connection carries on after a denial: an ECHO comes back."""
    client.send(P.ECHO_REQ, data=b"still here")
    assert await client.packets(1) == [(P.ECHO_RES, (), b"still here")]


async def sleeping_worker(client: RawClient, *functions: bytes) -> None:
    """Register ``functions`` and sleep, so a job for any of them would NOOP the worker."""
    for name in functions:
        client.send(P.CAN_DO, name)
    client.send(P.PRE_SLEEP)
    await still_answers(client)


async def got_nothing(worker: RawClient) -> None:
    """No NOOP and no job reached the worker: its GRAB_JOB's NO_JOB is the first reply."""
    worker.send(P.GRAB_JOB)
    assert await worker.packets(1) == [(P.NO_JOB, (), b"")]


SUBMITS = [
    pytest.param(P.SUBMIT_JOB, (b"u",), id="SUBMIT_JOB"),
    pytest.param(P.SUBMIT_JOB_BG, (b"u",), id="SUBMIT_JOB_BG"),
    pytest.param(P.SUBMIT_JOB_HIGH, (b"u",), id="SUBMIT_JOB_HIGH"),
    pytest.param(P.SUBMIT_JOB_HIGH_BG, (b"u",), id="SUBMIT_JOB_HIGH_BG"),
    pytest.param(P.SUBMIT_JOB_LOW, (b"u",), id="SUBMIT_JOB_LOW"),
    pytest.param(P.SUBMIT_JOB_LOW_BG, (b"u",), id="SUBMIT_JOB_LOW_BG"),
    pytest.param(P.SUBMIT_JOB_EPOCH, (b"u", b"1"), id="SUBMIT_JOB_EPOCH"),
    pytest.param(P.SUBMIT_REDUCE_JOB, (b"u", b"r", b"a"), id="SUBMIT_REDUCE_JOB"),
    pytest.param(P.SUBMIT_REDUCE_JOB_BACKGROUND, (b"u", b"r", b"a"), id="SUBMIT_REDUCE_JOB_BG"),
]


@pytest.mark.parametrize(("ptype", "rest"), SUBMITS)
async def test_a_denied_submit_gets_an_error_and_reaches_no_worker(
    tmp_path: Path,
    clients: Callable[[Server], Any],
    caplog: pytest.LogCaptureFixture,
    ptype: int,
    rest: tuple[bytes, ...],
) -> None:
    async with guarded(tmp_path, SUBMIT_OPEN_ONLY) as server:
        worker, client = await clients(server), await clients(server)
        await sleeping_worker(worker, b"secret", b"open-1")
        client.send(ptype, b"secret", *rest, data=b"payload")
        [(kind, (code, text), _)] = await client.packets(1)
        assert (kind, code) == (P.ERROR, ErrorCode.PERMISSION_DENIED)
        assert text == b"address 127.0.0.1 may not submit jobs to function 'secret'"
        await still_answers(client)
        await got_nothing(worker)
        assert b"secret\t0\t0\t1\n" in await client.admin(b"status")  # no job queued
        # The same packet type for a permitted function goes through.
        client.send(ptype, b"open-1", *rest, data=b"payload")
        assert (await client.packet()).type == P.JOB_CREATED
        assert server.counters.permission_denied == {"submit": 1}
    assert "permission denied: address 127.0.0.1 (from 127.0.0.1) may not submit" in caplog.text


@pytest.mark.parametrize(
    ("ptype", "rest"),
    [pytest.param(P.CAN_DO, (), id="CAN_DO"), pytest.param(P.CAN_DO_TIMEOUT, (b"5",), id="T")],
)
async def test_a_denied_can_do_registers_nothing_and_the_worker_gets_no_job(
    tmp_path: Path, clients: Callable[[Server], Any], ptype: int, rest: tuple[bytes, ...]
) -> None:
    async with guarded(tmp_path, WORK_OPEN_ONLY) as server:
        worker, client = await clients(server), await clients(server)
        worker.send(ptype, b"secret", *rest)
        [(kind, (code, text), _)] = await worker.packets(1)
        assert (kind, code) == (P.ERROR, ErrorCode.PERMISSION_DENIED)
        assert text == b"address 127.0.0.1 may not work on function 'secret'"
        await sleeping_worker(worker, b"open-1")
        client.send(P.SUBMIT_JOB_BG, b"secret", b"", data=b"x")
        assert (await client.packet()).type == P.JOB_CREATED
        for grab in (P.GRAB_JOB, P.GRAB_JOB_UNIQ, P.GRAB_JOB_ALL):
            worker.send(grab)
            assert await worker.packets(1) == [(P.NO_JOB, (), b"")]
        secret = server.scheduler.functions[b"secret"]
        assert (secret.total, len(secret.workers)) == (1, 0)
        assert [f.name for f in worker_peer(server).ability_list] == [b"open-1"]
        assert server.counters.permission_denied == {"work": 1}


def worker_peer(server: Server) -> Any:
    """The one connection that registered a function."""
    [peer] = [c for c in server.connections if c.ability_list]
    return peer


async def test_status_of_jobs_needs_submit_on_their_function_or_admin_read(
    tmp_path: Path, clients: Callable[[Server], Any]
) -> None:
    rules = '[default]\nsubmit = ["open*"]\n'  # no admin read
    async with guarded(tmp_path, rules) as server:
        client = await clients(server)
        secret = server.scheduler.submit(None, b"secret", b"u-secret", b"", 1, True)
        opened = server.scheduler.submit(None, b"open-1", b"u-open", b"", 1, True)
        assert not isinstance(secret, tuple) and not isinstance(opened, tuple)
        client.send(P.GET_STATUS, secret.handle)
        client.send(P.GET_STATUS_UNIQUE, b"u-secret")
        denied = await client.packets(2)
        assert [(kind, args[0]) for kind, args, _ in denied] == [
            (P.ERROR, ErrorCode.PERMISSION_DENIED)
        ] * 2
        assert denied[0][1][1] == (
            b"address 127.0.0.1 may not see the status of jobs of function 'secret'"
        )
        client.send(P.GET_STATUS, opened.handle)
        client.send(P.GET_STATUS_UNIQUE, b"u-open")
        client.send(P.GET_STATUS, b"H:test:999")  # unknown: nothing to protect
        allowed = await client.packets(3)
        assert [kind for kind, _, _ in allowed] == [P.STATUS_RES, P.STATUS_RES_UNIQUE, P.STATUS_RES]
        assert allowed[0][1][1] == b"1" and allowed[2][1][1] == b"0"  # known, unknown
        assert server.counters.permission_denied == {"status": 2}


READS = [
    b"status",
    b"prioritystatus",
    b"workers",
    b"show jobs",
    b"show unique jobs",
    b"version",
    b"verbose",
    b"getpid",
    b"job H:test:1",
    b"memory",
    b"dead list",
    b"dead stats",
]
WRITES = [
    b"cancel job H:test:1",
    b"drop function open-1",
    b"create function made-by-admin",
    b"maxqueue open-1 1",
    b"dead requeue --all",
    b"dead purge --all",
    b"shutdown",
]


async def test_admin_read_allows_every_read_command_and_no_write(
    tmp_path: Path, clients: Callable[[Server], Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with guarded(tmp_path, SUBMIT_OPEN_ONLY, admin_shutdown=True) as server:
        admin = await clients(server)
        queued = server.scheduler.submit(None, b"open-1", b"", b"", 1, True)
        assert not isinstance(queued, tuple) and queued.handle == b"H:test:1"
        for line in READS:
            assert not (await admin.admin(line)).startswith(b"ERR"), line
        # Read-only lookups of things that do not exist: not denied, just not found.
        for line in (b"job unique open-1 x", b"dead show 1"):
            assert await admin.admin(line) == b"ERR UNKNOWN_JOB\r\n", line
        for line in WRITES:
            reply = await admin.admin(line)
            assert reply.startswith(b"ERR PERMISSION_DENIED address+127.0.0.1+may+not+run+")
            assert reply.endswith(b"(needs+admin+write)\r\n")
        # Nothing changed: the job is queued, the function has no limit, none was made.
        assert server.scheduler.jobs[b"H:test:1"] is queued
        assert server.scheduler.functions[b"open-1"].max_queue == [0, 0, 0]
        assert b"made-by-admin" not in server.scheduler.functions
        assert not server.stopping
        assert server.counters.permission_denied == {"admin": len(WRITES)}
    assert "may not run 'cancel job H:test:1' (needs admin write)" in caplog.text


async def test_without_admin_rights_even_reads_are_denied_but_unknown_words_stay_unknown(
    tmp_path: Path, clients: Callable[[Server], Any]
) -> None:
    async with guarded(tmp_path, WORK_OPEN_ONLY) as server:
        admin = await clients(server)
        for line in READS:
            reply = await admin.admin(line)
            assert reply.startswith(b"ERR PERMISSION_DENIED "), line
            assert reply.endswith(b"(needs+admin+read)\r\n")
        assert (await admin.admin(b"frobnicate")).startswith(b"ERR UNKNOWN_COMMAND")
        await still_answers(admin)


async def test_admin_write_allows_changes(tmp_path: Path, clients: Callable[[Server], Any]) -> None:
    rules = '[[grant]]\nidentity = {address = "127.0.0.1/32"}\nadmin = "write"\n'
    async with guarded(tmp_path, rules) as server:
        admin = await clients(server)
        assert await admin.admin(b"create function made-by-admin") == b"OK\r\n"
        assert await admin.admin(b"maxqueue made-by-admin 3") == b"OK\r\n"
        assert server.scheduler.functions[b"made-by-admin"].max_queue == [3, 3, 3]
        assert await admin.admin(b"drop function made-by-admin") == b"OK\r\n"


async def test_denials_are_counted_in_the_metrics(
    tmp_path: Path, clients: Callable[[Server], Any]
) -> None:
    async with guarded(tmp_path, WORK_OPEN_ONLY) as server:
        body, _ = exposition(server)
        assert b'geartrain_permission_denied_total{kind="submit"} 0.0' in body
        peer = await clients(server)
        peer.send(P.CAN_DO, b"secret")
        peer.send(P.CAN_DO, b"secret-2")
        assert [kind for kind, _, _ in await peer.packets(2)] == [P.ERROR, P.ERROR]
        await peer.admin(b"status")
        body, _ = exposition(server)
        assert b'geartrain_permission_denied_total{kind="work"} 2.0' in body
        assert b'geartrain_permission_denied_total{kind="admin"} 1.0' in body
        assert b'geartrain_errors_sent_total{code="PERMISSION_DENIED"} 2.0' in body


async def test_a_reload_changes_rights_for_new_requests_and_unregisters_workers(
    tmp_path: Path, clients: Callable[[Server], Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with guarded(tmp_path, SUBMIT_OPEN_ONLY) as server:
        worker, client = await clients(server), await clients(server)
        await sleeping_worker(worker, b"secret")
        (tmp_path / "permissions.toml").write_text(WORK_OPEN_ONLY)
        assert server.reload_permissions()
        # The same connection may now submit to secret, but its worker no longer works on it.
        client.send(P.SUBMIT_JOB_BG, b"secret", b"", data=b"x")
        assert (await client.packet()).type == P.JOB_CREATED
        await got_nothing(worker)
        assert not server.scheduler.functions[b"secret"].workers
        assert (await client.admin(b"status")).startswith(b"ERR PERMISSION_DENIED")
    assert "permissions reloaded: address 127.0.0.1 (from 127.0.0.1) no longer works on" in (
        caplog.text
    )


async def test_a_broken_file_on_reload_keeps_the_old_rules(
    tmp_path: Path, clients: Callable[[Server], Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with guarded(tmp_path, SUBMIT_OPEN_ONLY) as server:
        rules = server.permissions
        (tmp_path / "permissions.toml").write_text('[default]\nsubmit = "*"\n')
        with caplog.at_level(logging.ERROR):
            assert not server.reload_permissions()
        assert server.permissions is rules
        client = await clients(server)
        client.send(P.SUBMIT_JOB_BG, b"secret", b"", data=b"x")
        assert (await client.packet()).args[0] == ErrorCode.PERMISSION_DENIED
    assert "permissions not reloaded, the old rules stay in use" in caplog.text
    assert "[default] submit must be a list" in caplog.text


async def test_a_broken_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match=r"grant #1: unknown identity key 'host'"):
        async with guarded(tmp_path, '[[grant]]\nidentity = {host = "x"}\n'):
            pass  # pragma: no cover - never reached


async def test_without_a_permissions_file_nothing_is_checked(
    tmp_path: Path, clients: Callable[[Server], Any]
) -> None:
    async with running_server() as server:
        peer = await clients(server)
        peer.send(P.CAN_DO, b"anything")
        peer.send(P.SUBMIT_JOB_BG, b"anything", b"", data=b"x")
        assert (await peer.packet()).type == P.JOB_CREATED
        assert await peer.admin(b"create function f") == b"OK\r\n"
        assert server.permissions is None
        assert all(c.rights is None for c in server.connections)
        assert server.reload_permissions() is False


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
async def test_ipv6_address_rules(tmp_path: Path, clients: Callable[[Server], Any]) -> None:
    rules = (
        '[[grant]]\nidentity = {address = "::1/128"}\nsubmit = ["v6-*"]\n\n'
        '[[grant]]\nidentity = {address = "127.0.0.0/8"}\nsubmit = ["*"]\n'
    )
    async with guarded(tmp_path, rules, listen=["::1"]) as server:
        client = await clients(server)
        client.send(P.SUBMIT_JOB_BG, b"v6-resize", b"", data=b"x")
        client.send(P.SUBMIT_JOB_BG, b"v4-resize", b"", data=b"x")
        created, (kind, (code, text), _) = await client.packets(2)
        assert created[0] == P.JOB_CREATED
        assert (kind, code) == (P.ERROR, ErrorCode.PERMISSION_DENIED)
        assert text == b"address ::1 may not submit jobs to function 'v4-resize'"
