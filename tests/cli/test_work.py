"""``geartrain work``: one command run per job, supervision and recycling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from click.testing import CliRunner

from geartrain.admin import AdminClient
from geartrain.cli.work import work
from geartrain.client import Client, UpdateKind
from geartrain.errors import JobFailed
from tests.client.helpers import registered, wait_until
from tests.support import ServerProcess

PID_COMMAND = ["sh", "-c", "printf %s $PPID"]  # the worker process that ran the command


@contextmanager
def geartrain_work(server: ServerProcess, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "geartrain",
            "work",
            "-p",
            str(server.port),
            "--poll-interval",
            "0.2",
            *args,
        ]
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def workers_of(server: ServerProcess, function: str) -> int:
    with AdminClient(server.address) as admin:
        return registered(admin.status(), function)


def test_command_output_is_the_result_and_count_ends_it(any_server: ServerProcess) -> None:
    with geartrain_work(any_server, "-c", "2", "-f", "upper", "--", "tr", "a-z", "A-Z") as proc:
        with Client([any_server.address], timeout=20) as client:
            tasks = [client.submit("upper", b"hello"), client.submit("upper", b"world\n")]
            assert client.gather(tasks) == [b"HELLO", b"WORLD\n"]
        assert proc.wait(20) == 0


def test_failing_command_fails_the_job_and_no_command_echoes(any_server: ServerProcess) -> None:
    with (
        geartrain_work(
            any_server, "-c", "1", "-f", "bad", "--", "sh", "-c", "cat >/dev/null; exit 3"
        ) as proc,
        Client([any_server.address], timeout=20) as client,
    ):
        with pytest.raises(JobFailed):
            client.call("bad", b"x")
        assert proc.wait(20) == 0
    with (
        geartrain_work(any_server, "-c", "1", "-f", "echo") as proc,
        Client([any_server.address], timeout=20) as client,
    ):
        assert client.call("echo", b"\0same\0") == b"\0same\0"
        assert proc.wait(20) == 0


def test_per_line_output_is_sent_as_data(any_server: ServerProcess) -> None:
    with (
        geartrain_work(
            any_server, "-c", "1", "-N", "-f", "lines", "--", "printf", "a\\nb\\n"
        ) as proc,
        Client([any_server.address], timeout=20) as client,
    ):
        task = client.submit("lines")
        data = [u.data for u in task.stream(20) if u.kind is UpdateKind.DATA]
        assert data == [b"a", b"b"] and task.outcome() == b""
        assert proc.wait(20) == 0


def test_max_jobs_recycles_the_process(any_server: ServerProcess) -> None:
    with geartrain_work(any_server, "--max-jobs", "1", "-f", "pid", "--", *PID_COMMAND) as proc:
        with Client([any_server.address], timeout=20) as client:
            pids = [client.call("pid") for _ in range(3)]
        assert len(set(pids)) == 3
        assert all(int(pid) != proc.pid for pid in pids)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_supervisor_restarts_a_crashed_worker(any_server: ServerProcess) -> None:
    with geartrain_work(any_server, "--processes", "2", "-f", "pid", "--", *PID_COMMAND) as proc:
        wait_until(lambda: workers_of(any_server, "pid") == 2, timeout=20)
        with Client([any_server.address], timeout=20) as client:
            victim = int(client.call("pid"))
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: workers_of(any_server, "pid") == 1, timeout=20)
            wait_until(lambda: workers_of(any_server, "pid") == 2, timeout=20)
            seen = {int(client.call("pid", unique=f"after-{i}")) for i in range(6)}
        assert victim not in seen
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        wait_until(lambda: workers_of(any_server, "pid") == 0, timeout=20)


def test_max_lifetime_replaces_idle_process(any_server: ServerProcess) -> None:
    with (
        geartrain_work(
            any_server, "--max-lifetime", "0.5", "-f", "pid", "--", *PID_COMMAND
        ) as proc,
        Client([any_server.address], timeout=20) as client,
    ):
        first = client.call("pid")
        wait_until(lambda: client.call("pid", unique=os.urandom(4).hex()) != first, timeout=20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_in_process_with_cli_runner(any_server: ServerProcess) -> None:
    results: list[bytes] = []

    def submit() -> None:
        with Client([any_server.address], timeout=20) as client:
            results.append(client.call("runner", b"abc"))

    thread = threading.Thread(target=submit)
    thread.start()
    result = CliRunner().invoke(
        work, ["-p", str(any_server.port), "-c", "1", "-f", "runner", "--", "rev"]
    )
    thread.join(20)
    assert result.exit_code == 0, result.output
    assert results == [b"cba"]
