"""The real ``gearadmin`` (gearman-tools 1.1.20) against gearmand and geartrain.

gearadmin prints list replies as received (``.`` line included), ``OK``-only replies as
``OK``, value replies as the bare value, and ``ERR`` replies as ``Error: ...`` on stderr with
exit status 0 (PROTOCOL.md §12.3).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from tests.interop.helpers import gearadmin, wait_until
from tests.interop.wire import Conn, P, normalise_handles, status
from tests.support import ServerProcess

pytestmark = pytest.mark.interop

LOG_LEVELS = {"FATAL", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG"}


@pytest.fixture
def conns() -> Iterator[ExitStack]:
    """Raw connections that keep a scenario's workers and clients alive during a test."""
    with ExitStack() as stack:
        yield stack


def connect(stack: ExitStack, server: ServerProcess) -> Conn:
    return stack.enter_context(Conn(server))


def list_lines(stdout: str) -> list[str]:
    """A list reply printed by gearadmin: check the terminator, return the lines sorted."""
    assert stdout.endswith("\n.\n") or stdout == ".\n", repr(stdout)
    return sorted(stdout[:-2].splitlines())


def test_status(any_server: ServerProcess, conns: ExitStack) -> None:
    worker = connect(conns, any_server)
    worker.register(b"reverse")
    client = connect(conns, any_server)
    client.submit(b"reverse", b"", b"one", P.SUBMIT_JOB_BG)
    client.submit(b"reverse", b"", b"two", P.SUBMIT_JOB_BG)
    client.submit(b"queued_only", b"", b"x", P.SUBMIT_JOB_BG)
    assert worker.grab()[0] == P.JOB_ASSIGN_UNIQ

    result = gearadmin(any_server, "--status").ok()
    assert result.stderr == b""
    assert list_lines(result.out) == ["queued_only\t1\t0\t0", "reverse\t2\t1\t1"]


def test_status_empty_server(any_server: ServerProcess) -> None:
    assert gearadmin(any_server, "--status").ok().stdout == b".\n"


def test_priority_status(any_server: ServerProcess, conns: ExitStack) -> None:
    client = connect(conns, any_server)
    client.submit(b"prio", b"", b"n1", P.SUBMIT_JOB_BG)
    client.submit(b"prio", b"", b"h1", P.SUBMIT_JOB_HIGH_BG)
    client.submit(b"prio", b"", b"n2", P.SUBMIT_JOB_BG)
    client.submit(b"prio", b"", b"l1", P.SUBMIT_JOB_LOW_BG)
    worker = connect(conns, any_server)
    worker.register(b"prio", b"other")

    # HIGH, NORMAL, LOW count queued (not running) jobs; the last column is workers.
    assert list_lines(gearadmin(any_server, "--priority-status").ok().out) == [
        "other\t0\t0\t0\t1",
        "prio\t1\t2\t1\t1",
    ]
    assert worker.grab()[1][-1] == b"h1"  # the running job leaves the counts
    assert list_lines(gearadmin(any_server, "--priority-status").ok().out) == [
        "other\t0\t0\t0\t1",
        "prio\t0\t2\t1\t1",
    ]


_WORKER_LINE = re.compile(r"^(\d+) (\S+) (.*) :(.*)$")


def parse_workers(stdout: str) -> list[tuple[str, str, str]]:
    """``workers`` lines as (ip, client id, functions) - the fd differs between servers."""
    parsed = []
    for line in list_lines(stdout):
        match = _WORKER_LINE.match(line)
        assert match, f"bad workers line {line!r}"
        parsed.append((match.group(2), match.group(3), match.group(4)))
    return sorted(parsed)


def test_workers(any_server: ServerProcess, conns: ExitStack) -> None:
    worker = connect(conns, any_server)
    worker.register(b"fa", b"fb", client_id=b"worker-1")
    anonymous = connect(conns, any_server)
    anonymous.register(b"fc")
    client = connect(conns, any_server)
    client.sync()

    # Every connection is listed, gearadmin's own included; functions in reverse registration
    # order; no functions -> the line ends in ":" without a trailing space.
    assert parse_workers(gearadmin(any_server, "--workers").ok().out) == [
        ("127.0.0.1", "-", ""),
        ("127.0.0.1", "-", ""),
        ("127.0.0.1", "-", " fc"),
        ("127.0.0.1", "worker-1", " fb fa"),
    ]


def test_show_jobs(any_server: ServerProcess, conns: ExitStack) -> None:
    client = connect(conns, any_server)
    background = client.submit(b"sj", b"bg-1", b"x", P.SUBMIT_JOB_BG)
    foreground = client.submit(b"sj", b"fg-1", b"y")
    worker = connect(conns, any_server)
    worker.register(b"sj")
    assert worker.grab()[1][0] == background

    # HANDLE, RETRIES, IGNORE, QUEUED (1 for background jobs, 0 for foreground ones).
    out = gearadmin(any_server, "--show-jobs").ok().out
    assert list_lines(out) == sorted(
        [f"{background.decode()}\t0\t0\t1", f"{foreground.decode()}\t0\t0\t0"]
    )


def test_show_unique_jobs(any_server: ServerProcess, conns: ExitStack) -> None:
    client = connect(conns, any_server)
    client.submit(b"su", b"unique-a", b"x", P.SUBMIT_JOB_BG)
    client.submit(b"su", b"", b"y", P.SUBMIT_JOB_BG)
    client.submit(b"su", b"-", b"z", P.SUBMIT_JOB_BG)
    # An empty unique is listed as an empty line, the dash job as "-".
    assert list_lines(gearadmin(any_server, "--show-unique-jobs").ok().out) == ["", "-", "unique-a"]


def test_server_version(any_server: ServerProcess) -> None:
    out = gearadmin(any_server, "--server-version").ok().out
    assert re.fullmatch(r"[0-9][^\s]*\n", out), repr(out)
    if any_server.kind == "gearmand":
        assert out.startswith("1.1.")


def test_server_verbose(any_server: ServerProcess) -> None:
    out = gearadmin(any_server, "--server-verbose").ok().out
    assert out.endswith("\n") and out[:-1] in LOG_LEVELS, repr(out)


def test_getpid(any_server: ServerProcess) -> None:
    assert gearadmin(any_server, "--getpid").ok().out == f"{any_server.proc.pid}\n"


def test_create_and_drop_function(any_server: ServerProcess) -> None:
    assert gearadmin(any_server, "--create-function=made_here").ok().out == "OK\n"
    assert status(any_server)["made_here"] == (0, 0, 0)

    dropped = gearadmin(any_server, "--drop-function=made_here").ok()
    assert (dropped.out, dropped.err) == ("OK\n", "")
    assert "made_here" not in status(any_server)

    again = gearadmin(any_server, "--drop-function=made_here").ok()
    assert (again.out, again.err) == ("", "Error: function not found\r\n")


def test_drop_function_refused_while_worker_registered(
    any_server: ServerProcess, conns: ExitStack
) -> None:
    worker = connect(conns, any_server)
    worker.register(b"busy_fn")
    refused = gearadmin(any_server, "--drop-function=busy_fn").ok()
    assert refused.out == ""
    assert refused.err == "Error: there are still connected workers or executing clients\r\n"
    assert "busy_fn" in status(any_server)


def test_cancel_queued_job(any_server: ServerProcess, conns: ExitStack) -> None:
    client = connect(conns, any_server)
    handle = client.submit(b"cancel_me", b"c-1", b"payload")
    other = client.submit(b"cancel_me", b"c-2", b"keep", P.SUBMIT_JOB_BG)

    assert gearadmin(any_server, f"--cancel-job={handle.decode()}").ok().out == "OK\n"
    # The waiting client learns at once, with a bare-handle WORK_FAIL (PROTOCOL.md §7.4, §8.4).
    assert client.expect(P.WORK_FAIL) == handle

    # A worker never receives the cancelled job.
    worker = connect(conns, any_server)
    worker.register(b"cancel_me")
    kind, assigned = worker.grab()
    assert kind == P.JOB_ASSIGN_UNIQ and assigned[0] == other
    assert worker.grab() == (P.NO_JOB, [])


def test_cancel_unknown_job(any_server: ServerProcess) -> None:
    result = gearadmin(any_server, "--cancel-job=H:nowhere:12345").ok()
    assert (result.out, result.err) == ("", "Error: UNKNOWN_JOB\r\n")


# ----------------------------------------------------------------------------- side by side


def _scenario(server: ServerProcess, stack: ExitStack) -> dict[bytes, bytes]:
    """Set up workers, clients and jobs; returns the handles' names in submission order."""
    worker = connect(stack, server)
    worker.register(b"alpha", b"beta", client_id=b"w-one")
    runner = connect(stack, server)  # grabs from one function only: the same job on both servers
    runner.register(b"alpha")
    client = connect(stack, server)
    names: dict[bytes, bytes] = {}
    for function, unique, ptype in [
        (b"alpha", b"u1", P.SUBMIT_JOB_BG),
        (b"alpha", b"u2", P.SUBMIT_JOB_HIGH_BG),
        (b"beta", b"u3", P.SUBMIT_JOB_LOW_BG),
        (b"gamma", b"", P.SUBMIT_JOB_BG),
        (b"alpha", b"u5", P.SUBMIT_JOB),
    ]:
        handle = client.submit(function, unique, b"data", ptype)
        names[handle] = b"<H%d>" % (len(names) + 1)
    assert runner.grab()[1][-1] == b"data"
    gearadmin(server, "--create-function=delta").ok()
    return names


# What legitimately differs and is normalised: the fd column of --workers, the pid, the version
# string, the configured log level, the order of list lines (hash order in gearmand) and job
# handles (they embed the host name).
_NORMALISE: dict[str, Callable[[str], str]] = {
    "--workers": lambda out: "\n".join(re.sub(r"^\d+ ", "FD ", x) for x in list_lines(out)),
    "--getpid": lambda out: "PID" if out.strip().isdigit() else out,
    "--server-version": lambda out: "VERSION" if re.fullmatch(r"\S+\n", out) else out,
    "--server-verbose": lambda out: "LEVEL" if out.strip() in LOG_LEVELS else out,
}


def test_gearadmin_output_same_as_gearmand(server_pair: dict[str, ServerProcess]) -> None:
    options = [
        "--status",
        "--priority-status",
        "--workers",
        "--show-jobs",
        "--show-unique-jobs",
        "--server-version",
        "--server-verbose",
        "--getpid",
        "--drop-function=nope",
        "--cancel-job=H:nowhere:1",
    ]
    seen: dict[str, list[tuple[str, str, int]]] = {}
    for kind, server in server_pair.items():
        with ExitStack() as stack:
            handles = _scenario(server, stack)
            outputs = []
            for option in options:
                result = gearadmin(server, option)
                out = normalise_handles(result.stdout, handles).decode()
                normalise = _NORMALISE.get(option)
                if normalise is not None:
                    out = normalise(out)
                elif out.endswith(".\n"):
                    out = "\n".join(list_lines(out))
                outputs.append((out, result.err, result.returncode))
            seen[kind] = outputs
    for option, ours, reference in zip(options, seen["geartrain"], seen["gearmand"], strict=True):
        assert ours == reference, f"gearadmin {option}"


def test_gearadmin_against_stopped_server(any_server: ServerProcess) -> None:
    """Sanity check of the harness itself: no server, no output, non-zero or error text."""
    any_server.stop()
    wait_until(lambda: any_server.proc.poll() is not None, what="server exit")
    result = gearadmin(any_server, "--status")
    assert result.returncode != 0 or result.err
