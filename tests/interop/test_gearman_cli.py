"""The real ``gearman`` command-line tool (libgearman 1.1.20) in client and worker mode."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.interop.helpers import Processes, gearadmin, gearman, gearman_cmd, wait_until
from tests.interop.wire import Conn, P, admin, status, wait_jobs, wait_workers
from tests.support import ServerProcess

pytestmark = pytest.mark.interop

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def start_cli_worker(
    procs: Processes, server: ServerProcess, function: str, *command: str
) -> subprocess.Popen[bytes]:
    """``gearman -w -f FUNCTION -- COMMAND...``, waiting until it has registered."""
    worker = procs.spawn(gearman_cmd(server, "-w", "-f", function, "--", *command))
    wait_workers(server, function)
    return worker


def test_count_lines_end_to_end(any_server: ServerProcess, procs: Processes) -> None:
    start_cli_worker(procs, any_server, "count_lines", "wc", "-l")
    text = b"".join(b"line %d\n" % n for n in range(17))
    assert gearman(any_server, "-f", "count_lines", stdin=text).ok().out.strip() == "17"


def test_worker_count_option_exits_after_jobs(any_server: ServerProcess, procs: Processes) -> None:
    worker = procs.spawn(
        gearman_cmd(any_server, "-w", "-c", "2", "-f", "upper", "--", "tr", "a-z", "A-Z")
    )
    wait_workers(any_server, "upper")
    assert gearman(any_server, "-f", "upper", stdin=b"hello").ok().stdout == b"HELLO"
    assert gearman(any_server, "-f", "upper", stdin=b"world").ok().stdout == b"WORLD"
    assert Processes.finish(worker, timeout=10).returncode == 0


def test_client_arguments_are_separate_jobs(any_server: ServerProcess, procs: Processes) -> None:
    start_cli_worker(procs, any_server, "wcc", "wc", "-c")
    out = gearman(any_server, "-f", "wcc", "hello", "hi").ok().out
    assert out.split() == ["5", "2"]


def test_prefix_output_with_function_name(any_server: ServerProcess, procs: Processes) -> None:
    start_cli_worker(procs, any_server, "cat", "cat")
    assert gearman(any_server, "-P", "-f", "cat", "xyz").ok().out == "cat: xyz"


def test_background_job(any_server: ServerProcess) -> None:
    result = gearman(any_server, "-b", "-f", "later", stdin=b"payload").ok()
    assert result.stdout == b""
    assert status(any_server)["later"] == (1, 0, 0)
    # libgearman gives background jobs without -u a UUID unique.
    uniques = gearadmin(any_server, "--show-unique-jobs").ok().out.splitlines()
    assert len(uniques) == 2 and UUID.fullmatch(uniques[0]) and uniques[1] == "."

    with Conn(any_server) as worker:
        worker.register(b"later")
        _, function, unique, data = worker.grab_next()
        assert (function, unique.decode(), data) == (b"later", uniques[0], b"payload")


def test_priorities(any_server: ServerProcess) -> None:
    gearman(any_server, "-b", "-L", "-f", "prio", "low").ok()
    gearman(any_server, "-b", "-f", "prio", "normal").ok()
    gearman(any_server, "-b", "-I", "-f", "prio", "high").ok()
    gearman(any_server, "-b", "-I", "-f", "prio", "high2").ok()
    assert gearadmin(any_server, "--priority-status").ok().out == "prio\t2\t1\t1\t0\n.\n"

    with Conn(any_server) as worker:
        worker.register(b"prio")
        order = [worker.grab_next()[-1] for _ in range(4)]
    assert order == [b"high", b"high2", b"normal", b"low"]


def test_foreground_priorities_complete(any_server: ServerProcess, procs: Processes) -> None:
    start_cli_worker(procs, any_server, "rev", "rev")
    assert gearman(any_server, "-I", "-f", "rev", "abc").ok().out.strip() == "cba"
    assert gearman(any_server, "-L", "-f", "rev", "xyz").ok().out.strip() == "zyx"


def test_unique_key_coalesces(any_server: ServerProcess) -> None:
    gearman(any_server, "-b", "-u", "my-key", "-f", "uq", "first").ok()
    gearman(any_server, "-b", "-u", "my-key", "-f", "uq", "second").ok()
    assert status(any_server)["uq"] == (1, 0, 0)
    assert gearadmin(any_server, "--show-unique-jobs").ok().out == "my-key\n.\n"
    with Conn(any_server) as worker:
        worker.register(b"uq")
        assert worker.grab_next()[2:] == [b"my-key", b"first"]
        assert worker.grab() == (P.NO_JOB, [])


def test_foreground_clients_with_same_unique_share_one_job(
    any_server: ServerProcess, procs: Processes
) -> None:
    first = procs.spawn(gearman_cmd(any_server, "-u", "shared", "-f", "slow", "one"))
    wait_jobs(any_server, "slow", 1)
    second = procs.spawn(gearman_cmd(any_server, "-u", "shared", "-f", "slow", "two"))
    with Conn(any_server) as probe:
        wait_until(lambda: _waiting_clients(probe, b"shared") == b"2", what="two waiting clients")
    with Conn(any_server) as worker:
        worker.register(b"slow")
        handle, _, _, data = worker.grab_next()
        assert data == b"one"
        worker.send(P.WORK_COMPLETE, handle, b"done")
        worker.sync()
    assert Processes.finish(first).ok().stdout == b"done"
    assert Processes.finish(second).ok().stdout == b"done"


def _waiting_clients(conn: Conn, unique: bytes) -> bytes:
    body = conn.request(P.GET_STATUS_UNIQUE, unique, reply=P.STATUS_RES_UNIQUE)
    return body.split(b"\0")[5]


def test_one_job_per_line(any_server: ServerProcess, procs: Processes) -> None:
    start_cli_worker(procs, any_server, "echo_back", "cat")
    assert (
        gearman(any_server, "-n", "-f", "echo_back", stdin=b"ab\ncd\n").ok().stdout == b"ab\ncd\n"
    )
    assert gearman(any_server, "-N", "-f", "echo_back", stdin=b"ab\ncd\n").ok().stdout == b"abcd"


def test_no_stdin(any_server: ServerProcess, procs: Processes) -> None:
    start_cli_worker(procs, any_server, "wcc", "wc", "-c")
    assert gearman(any_server, "-s", "-f", "wcc", stdin=b"ignored").ok().out.strip() == "0"


def test_work_fail_reaches_cli(any_server: ServerProcess, procs: Processes) -> None:
    client = procs.spawn(gearman_cmd(any_server, "-f", "failer", "data"))
    with Conn(any_server) as worker:
        worker.register(b"failer")
        handle, _, _, data = worker.grab_next(P.GRAB_JOB_ALL)
        assert data == b"data"
        worker.send(P.WORK_FAIL, handle)
        worker.sync()
    result = Processes.finish(client, timeout=10)
    assert (result.returncode, result.out, result.err) == (1, "", "Job failed\n")


def test_failing_worker_command_reaches_cli(any_server: ServerProcess, procs: Processes) -> None:
    start_cli_worker(procs, any_server, "broken", "false")
    result = gearman(any_server, "-f", "broken", "data")
    assert (result.returncode, result.err) == (1, "Job failed\n")


def test_work_exception_reaches_cli(any_server: ServerProcess, procs: Processes) -> None:
    """A client without the exceptions option must get a bare-handle WORK_FAIL (§7.4, §7.5)."""
    client = procs.spawn(gearman_cmd(any_server, "-f", "thrower", "data"))
    with Conn(any_server) as worker:
        worker.register(b"thrower")
        handle = worker.grab_next()[0]
        worker.send(P.WORK_EXCEPTION, handle, b"boom")
        worker.sync()
    if any_server.kind == "gearmand":
        # gearmand converts to WORK_FAIL "handle\0", which libgearman 1.1.20 never matches:
        # the client hangs (PROTOCOL.md §7.4). Document it and move on.
        with pytest.raises(subprocess.TimeoutExpired):
            client.wait(timeout=2)
        return
    result = Processes.finish(client, timeout=10)
    assert (result.returncode, result.err) == (1, "Job failed\n")


def test_worker_status_and_data_packets(any_server: ServerProcess, procs: Processes) -> None:
    """WORK_DATA chunks, WORK_STATUS and the final WORK_COMPLETE all reach the CLI."""
    client = procs.spawn(gearman_cmd(any_server, "-f", "chunks", "go"))
    with Conn(any_server) as worker:
        worker.register(b"chunks")
        handle = worker.grab_next()[0]
        worker.send(P.WORK_STATUS, handle, b"1", b"3")
        worker.send(P.WORK_DATA, handle, b"part1,")
        worker.send(P.WORK_DATA, handle, b"part2,")
        worker.send(P.WORK_COMPLETE, handle, b"end")
        worker.sync()
    out = Processes.finish(client).ok().stdout
    # libgearman prints data and result as they come and the progress line separately.
    assert out.replace(b"33% Complete\n", b"") == b"part1,part2,end"
    assert b"33% Complete\n" in out
    assert admin(any_server, "status") == b"chunks\t0\t0\t0\n.\n"


def _cli_session(server: ServerProcess, procs: Processes) -> list[tuple[int, bytes, bytes]]:
    """A series of gearman CLI calls; returns what each printed and its exit status."""
    start_cli_worker(procs, server, "count_lines", "wc", "-l")
    start_cli_worker(procs, server, "cat", "cat")
    start_cli_worker(procs, server, "broken", "false")
    # Worker -n: one WORK_DATA packet per output line of the command.
    procs.spawn(gearman_cmd(server, "-w", "-n", "-f", "per_line", "--", "cat"))
    wait_workers(server, "per_line")
    calls: list[tuple[tuple[str, ...], bytes]] = [
        (("-f", "count_lines"), b"a\nb\nc\n"),
        (("-f", "cat", "one", "two"), b""),
        (("-P", "-f", "cat", "prefixed"), b""),
        (("-n", "-f", "cat"), b"x\ny\n"),
        (("-N", "-f", "cat"), b"x\ny\n"),
        (("-s", "-f", "count_lines"), b"ignored\n"),
        (("-I", "-f", "cat", "high"), b""),
        (("-L", "-f", "cat", "low"), b""),
        (("-u", "uniq", "-f", "cat", "with unique"), b""),
        (("-b", "-u", "bg-unique", "-f", "nobody", "later"), b""),
        (("-f", "broken", "x"), b""),
        (("-f", "per_line"), b"first\nsecond\nthird\n"),
    ]
    seen = []
    for args, stdin in calls:
        result = gearman(server, *args, stdin=stdin)
        seen.append((result.returncode, result.stdout, result.stderr))
    return seen


def test_cli_session_same_as_gearmand(server_pair: dict[str, ServerProcess]) -> None:
    """The same CLI calls print exactly the same bytes against both servers."""
    seen = {}
    for kind, server in server_pair.items():
        procs = Processes()
        try:
            seen[kind] = _cli_session(server, procs)
        finally:
            procs.stop_all()
    assert seen["geartrain"] == seen["gearmand"]


def test_large_workload(any_server: ServerProcess, procs: Processes) -> None:
    # ``gearman -w`` writes the whole workload to its command before reading the output, so the
    # command must not echo megabytes back (``cat`` would deadlock on the pipe).
    start_cli_worker(procs, any_server, "wcc", "wc", "-c")
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    assert gearman(any_server, "-f", "wcc", stdin=data, timeout=30).ok().out.strip() == str(
        len(data)
    )
