"""``geartrain admin``: output byte-identical to ``gearadmin``, ``--json``, ping and top."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from geartrain.cli.admin import admin
from geartrain.client import Client, Priority
from tests.client.helpers import GEARADMIN, wait_until, worker_thread
from tests.support import ServerProcess, free_port, start_geartrain

# (our sub-command, gearadmin option)
EQUIVALENTS = [
    (["status"], ["--status"]),
    (["priority-status"], ["--priority-status"]),
    (["workers"], ["--workers"]),
    (["jobs"], ["--show-jobs"]),
    (["unique-jobs"], ["--show-unique-jobs"]),
    (["version"], ["--server-version"]),
    (["verbose"], ["--server-verbose"]),
    (["getpid"], ["--getpid"]),
    (["create", "made-here"], ["--create-function=made-there"]),
    (["drop", "nope"], ["--drop-function=nope"]),
    (["cancel", "H:no:1"], ["--cancel-job=H:no:1"]),
]


def ours(server: ServerProcess, *args: str) -> tuple[int, bytes, bytes]:
    result = CliRunner().invoke(admin, ["-p", str(server.port), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout_bytes, result.stderr_bytes


def theirs(server: ServerProcess, *args: str) -> tuple[bytes, bytes]:
    assert GEARADMIN is not None
    proc = subprocess.run(
        [GEARADMIN, "-h", "127.0.0.1", "-p", str(server.port), *args],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return proc.stdout, proc.stderr


@pytest.fixture
def busy_server(any_server: ServerProcess) -> Iterator[ServerProcess]:
    """A server with queued jobs of several priorities and a registered worker."""
    with Client([any_server.address], timeout=10) as client:
        client.submit_background("queued", b"1", unique="one", priority=Priority.HIGH)
        client.submit_background("queued", b"2", unique="two", priority=Priority.LOW)
        client.submit_background("other", b"3", unique="three")
    with worker_thread(any_server.address, {"served": lambda job: b""}, client_id="cli-test"):
        wait_until(lambda: b"served\t0\t0\t1" in ours(any_server, "status")[1])
        yield any_server


@pytest.mark.interop
@pytest.mark.parametrize(("mine", "reference"), EQUIVALENTS, ids=[e[0][0] for e in EQUIVALENTS])
def test_output_is_byte_identical_to_gearadmin(
    busy_server: ServerProcess, mine: list[str], reference: list[str]
) -> None:
    if GEARADMIN is None:
        pytest.skip("gearadmin is not installed (gearman-tools)")
    expected_out, expected_err = theirs(busy_server, *reference)
    code, out, err = ours(busy_server, *mine)
    if mine[0] == "workers":
        # Each tool lists its own admin connection; its descriptor number may differ.
        out = b"\n".join(sorted(out.splitlines()[:-1]))
        expected_out = b"\n".join(sorted(expected_out.splitlines()[:-1]))
        assert [line.split(b" ", 1)[1] for line in out.splitlines()] == [
            line.split(b" ", 1)[1] for line in expected_out.splitlines()
        ]
    else:
        assert (out, err) == (expected_out, expected_err)
    assert code == (1 if expected_err else 0)


def test_maxqueue_and_errors(any_server: ServerProcess) -> None:
    assert ours(any_server, "create", "mq")[:2] == (0, b"OK\n")
    assert ours(any_server, "maxqueue", "mq", "1")[:2] == (0, b"OK\n")
    assert ours(any_server, "maxqueue", "mq", "1", "2", "3")[:2] == (0, b"OK\n")
    assert ours(any_server, "maxqueue", "mq")[:2] == (0, b"OK\n")
    code, _, err = ours(any_server, "maxqueue", "mq", "1", "2")
    assert code == 2 and b"high normal low" in err
    code, _, err = ours(any_server, "cancel", "two words")
    assert code == 2
    code, out, err = ours(any_server, "drop", "never-there")
    assert (code, out, err) == (1, b"", b"Error: function not found\r\n")
    unreachable = CliRunner().invoke(admin, ["-p", str(free_port()), "status"])
    assert unreachable.exit_code == 3 and b"cannot connect" in unreachable.stderr_bytes


def test_json_output(busy_server: ServerProcess) -> None:
    code, out, _ = ours(busy_server, "--json", "status")
    assert code == 0
    rows = {row["function"]: row for row in json.loads(out)}
    assert rows["queued"] == {"function": "queued", "total": 2, "running": 0, "workers": 0}
    assert rows["served"]["workers"] == 1
    prio = {r["function"]: r for r in json.loads(ours(busy_server, "--json", "priority-status")[1])}
    assert (prio["queued"]["high"], prio["queued"]["low"]) == (1, 1)
    workers = json.loads(ours(busy_server, "--json", "workers")[1])
    assert any(w["client_id"] == "cli-test" and w["functions"] == ["served"] for w in workers)
    jobs = json.loads(ours(busy_server, "--json", "jobs")[1])
    assert len(jobs) == 3 and all(set(j) == {"handle", "retries", "ignore", "queued"} for j in jobs)
    assert set(json.loads(ours(busy_server, "--json", "unique-jobs")[1])) == {"one", "two", "three"}
    assert json.loads(ours(busy_server, "--json", "getpid")[1]) == busy_server.proc.pid
    assert isinstance(json.loads(ours(busy_server, "--json", "version")[1]), str)
    assert json.loads(ours(busy_server, "--json", "create", "j")[1]) == {"ok": True}
    code, out, _ = ours(busy_server, "--json", "cancel", "H:none:9")
    assert code == 1 and json.loads(out)["error"] == "UNKNOWN_JOB"


def test_ping_and_top(busy_server: ServerProcess) -> None:
    code, out, _ = ours(busy_server, "ping", "-c", "3")
    assert (
        code == 0
        and len(out.splitlines()) == 3
        and all(line.endswith(b" ms") for line in out.splitlines())
    )
    assert len(json.loads(ours(busy_server, "--json", "ping")[1])["rtt"]) == 1
    code, out, _ = ours(busy_server, "top", "--iterations", "2", "--interval", "0.1")
    assert code == 0
    assert out.count(b"FUNCTION") == 2
    table = out.decode().splitlines()
    queued = [line.split() for line in table if line.startswith("queued ")]
    assert queued[0] == ["queued", "2", "0", "0"]
    assert next(line.split() for line in table if line.startswith("served "))[3] == "1"


def test_as_subprocess(any_server: ServerProcess) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "geartrain", "admin", "-p", str(any_server.port), "getpid"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stdout) == (0, f"{any_server.proc.pid}\n".encode())


def test_connection_options_work_after_the_sub_command(busy_server: ServerProcess) -> None:
    # gearadmin users type `... status -h host -p port`; both orders must reach the server.
    runner = CliRunner()
    before = runner.invoke(admin, ["-h", "127.0.0.1", "-p", str(busy_server.port), "status"])
    after = runner.invoke(admin, ["status", "-h", "127.0.0.1", "-p", str(busy_server.port)])
    assert before.exit_code == after.exit_code == 0, (before.output, after.output)
    assert b"queued\t2\t0\t0" in after.stdout_bytes
    assert after.stdout_bytes == before.stdout_bytes
    parsed = runner.invoke(admin, ["getpid", "-p", str(busy_server.port), "--json"])
    assert parsed.exit_code == 0 and isinstance(json.loads(parsed.stdout), int)
    # The option given after the sub-command wins over the group's.
    dead = runner.invoke(admin, ["-p", str(busy_server.port), "version", "-p", str(free_port())])
    assert dead.exit_code == 3


def test_memory_shows_the_budget_as_text_and_json() -> None:
    server = start_geartrain(["--max-memory", "64M"])
    try:
        with Client([server.address], timeout=10) as client:
            client.submit_background("unserved", b"m" * 300)
        code, out, _ = ours(server, "memory")
        assert code == 0 and out.endswith(b"\n.\n")
        assert b"budget\t67108864\n" in out and b"jobs\t300\n" in out
        code, out, _ = ours(server, "--json", "memory")
        report = json.loads(out)
        assert code == 0 and report["paused"] == []
        assert report["figures"]["budget"] == 64 << 20
        assert report["figures"]["high_water"] == int((64 << 20) * 0.9)
        assert (report["figures"]["jobs"], report["figures"]["over"]) == (300, 0)
    finally:
        server.stop()
