"""``geartrain submit`` through click's CliRunner and as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from geartrain.admin import AdminClient
from geartrain.cli.submit import submit
from geartrain.errors import WorkFail
from geartrain.worker import Job
from tests.client.helpers import worker_thread
from tests.support import ServerProcess, free_port


def reverse(job: Job) -> bytes:
    return job.payload[::-1]


def chunks(job: Job) -> bytes:
    job.send_data(b"<")
    return b">"


def fail(job: Job) -> bytes:
    raise WorkFail


def echo_meta(job: Job) -> bytes:
    return job.unique + b"|" + job.payload


FUNCTIONS = {"rev": reverse, "chunks": chunks, "fail": fail, "meta": echo_meta}


def run(server: ServerProcess, *args: str, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    runner = CliRunner()
    result = runner.invoke(submit, ["-h", "127.0.0.1", "-p", str(server.port), *args], input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout_bytes, result.stderr_bytes


def test_payload_arguments_and_stdin(any_server: ServerProcess) -> None:
    with worker_thread(any_server.address, FUNCTIONS):
        assert run(any_server, "-f", "rev", "abc", "de")[:2] == (0, b"cbaed")
        assert run(any_server, "-f", "rev", stdin=b"from stdin\n")[:2] == (0, b"\nnidts morf")
        assert run(any_server, "-f", "rev", "-s")[:2] == (0, b"")
        assert run(any_server, "-f", "chunks", "x")[:2] == (0, b"<>")


def test_one_job_per_line(any_server: ServerProcess) -> None:
    with worker_thread(any_server.address, FUNCTIONS):
        assert run(any_server, "-n", "-f", "rev", stdin=b"ab\ncd\n")[:2] == (0, b"\nba\ndc")
        assert run(any_server, "-N", "-f", "rev", stdin=b"ab\ncd\n")[:2] == (0, b"badc")
        lines = b"".join(b"line %d\n" % i for i in range(300))
        code, out, _ = run(any_server, "-N", "-f", "meta", "-w", "7", stdin=lines)
        assert code == 0 and out == b"".join(b"|line %d" % i for i in range(300))


def test_prefix_unique_and_priorities(any_server: ServerProcess) -> None:
    with worker_thread(any_server.address, FUNCTIONS):
        code, out, _ = run(any_server, "-P", "-f", "rev", "-f", "meta", "xy")
        assert (code, out) == (0, b"rev: yxmeta: |xy")
        assert run(any_server, "-u", "my-id", "-f", "meta", "p")[:2] == (0, b"my-id|p")
        assert run(any_server, "-I", "-f", "rev", "hi")[:2] == (0, b"ih")
        assert run(any_server, "-L", "-f", "rev", "lo")[:2] == (0, b"ol")
    code, _, err = run(any_server, "-I", "-L", "-f", "rev", "x")
    assert code == 2 and b"exclusive" in err


def test_background_queues_and_prints_nothing(any_server: ServerProcess) -> None:
    code, out, err = run(any_server, "-b", "-v", "-f", "later", "a", "b")
    assert (code, out) == (0, b"")
    assert err.count(b"queued H:") == 2
    with AdminClient(any_server.address) as admin:
        assert [s.total for s in admin.status() if s.function == "later"] == [2]


def test_exit_codes(any_server: ServerProcess) -> None:
    with worker_thread(any_server.address, FUNCTIONS):
        code, out, err = run(any_server, "-f", "fail", "x")
        assert code == 1 and out == b"" and b"failed" in err
    code, _, err = run(any_server, "-t", "300", "-f", "nobody", "x")
    assert code == 4 and b"timed out" in err
    with AdminClient(any_server.address) as admin:
        admin.create_function("full")
        admin.maxqueue("full", 1)
    code, _, err = run(any_server, "-b", "-f", "full", "1", "2")
    assert code == 5 and b"QUEUE_ERROR" in err
    runner = CliRunner()
    result = runner.invoke(submit, ["-p", str(free_port()), "-f", "x", "y"])
    assert result.exit_code == 3 and b"no job server reachable" in result.stderr_bytes


def test_environment_names_the_server(
    any_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEARMAN_SERVERS", f"127.0.0.1:{free_port()},127.0.0.1:{any_server.port}")
    with worker_thread(any_server.address, FUNCTIONS):
        result = CliRunner().invoke(submit, ["-f", "rev", "env"])
    assert (result.exit_code, result.stdout_bytes) == (0, b"vne")


def test_progress_bar_when_asked(any_server: ServerProcess, tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "jobs.txt")
    with open(path, "wb") as fh:
        fh.write(b"".join(b"%d\n" % i for i in range(50)))
    with worker_thread(any_server.address, FUNCTIONS):
        code, out, err = run(any_server, "-N", "-f", "rev", "-F", path, "--progress")
        assert code == 0 and out == b"".join(str(i).encode()[::-1] for i in range(50))
        assert b"jobs" in err and b"100%" in err
        # Not a terminal: no bar unless asked.
        code, out, err = run(any_server, "-N", "-f", "rev", "-F", path)
        assert code == 0 and b"100%" not in err


def test_as_subprocess(any_server: ServerProcess) -> None:
    with worker_thread(any_server.address, FUNCTIONS):
        proc = subprocess.run(
            [sys.executable, "-m", "geartrain", "submit", "-p", str(any_server.port), "-f", "rev"],
            input=b"subprocess",
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert (proc.returncode, proc.stdout) == (0, b"ssecorpbus"), proc.stderr
