"""Retries and the dead-letter queue with real failing workers: the ``gearman -w`` CLI
running a failing command, PHP's pecl gearman and Perl's Gearman::Worker returning
failure or throwing. Each job is retried by its policy, dead-lettered with every
attempt's outcome, requeued by an operator and then completed. And the session of
docs/retries.md, run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.helpers import (
    Processes,
    gearman,
    gearman_cmd,
    need_program,
    perl_cmd,
    php_cmd,
    wait_until,
)
from tests.interop.test_perl import PRELUDE as PERL_PRELUDE
from tests.interop.test_php import PRELUDE as PHP_PRELUDE
from tests.interop.wire import Conn, P, admin
from tests.support import ServerProcess, free_port, start_geartrain

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]

ATTEMPTS = 3
POLICY = f"flaky={ATTEMPTS},backoff=fixed,min=0.1"

PHP_FAILING = (
    PHP_PRELUDE
    + r"""
$w = worker();
$w->addFunction("flaky", function ($job) {
    static $calls = 0;
    $calls++;
    if ($calls % 2) { $job->sendFail(); return; }
    throw new Exception("attempt $calls broke");
});
$w->setTimeout(1000);
// Runs until the test stops it, or for 25 s whatever happens.
for ($start = time(); time() - $start < 25;) {
    try { @$w->work(); } catch (Exception $e) { /* reported to the server already */ }
}
"""
)

PERL_FAILING = (
    PERL_PRELUDE
    + r"""
# Runs until the test stops it, or for 25 s whatever happens.
my ($calls, $start) = (0, time);
my $w = Gearman::Worker->new(job_servers => [$server]);
$w->register_function(flaky => sub {
    $calls++;
    die "perl attempt $calls broke\n" if $calls % 2 == 0;
    return undef;  # undef is WORK_FAIL for Gearman::Worker
});
$w->work(stop_if => sub { return time - $start > 25; });
"""
)


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    started = start_geartrain(["--retry", POLICY])
    yield started
    started.stop()


def dead_lines(server: ServerProcess) -> list[list[bytes]]:
    reply = admin(server, "dead list")
    return [line.split(b"\t") for line in reply.split(b"\n")[:-2]]


def attempt_lines(server: ServerProcess, dead_id: bytes) -> list[list[bytes]]:
    reply = admin(server, "dead show " + dead_id.decode())
    return [line.split(b"\t")[1:] for line in reply.split(b"\n") if line.startswith(b"attempt\t")]


def requeue_and_complete(server: ServerProcess, dead_id: bytes) -> None:
    """Requeue the dead job and run it with a worker that succeeds."""
    assert admin(server, "dead requeue " + dead_id.decode()) == b"OK 1\n"
    assert dead_lines(server) == []
    with Conn(server) as worker:
        worker.register(b"flaky")
        handle, _function, unique, data = worker.grab_next()
        assert (unique, data) == (b"order-7", b"payload")
        worker.send(P.WORK_COMPLETE, handle, b"ok")
        worker.sync()
    assert b"state" not in admin(server, "job unique flaky order-7")


def run_failing_worker(
    server: ServerProcess, procs: Processes, cmd: list[str], script: str | None = None
) -> list[list[bytes]]:
    """Submit the job and let the failing worker run it until it is dead; the dead
    entries. The worker is stopped then, so that it cannot take the requeued job."""
    with Conn(server) as client:
        handle = client.submit(b"flaky", b"order-7", b"payload", P.SUBMIT_JOB_BG)
    worker = procs.spawn(cmd, stdin=None if script is None else script.encode())
    dead = wait_until(lambda: dead_lines(server), 20, what="the job to be dead-lettered")
    worker.terminate()
    worker.wait(10)
    wait_until(lambda: b"flaky\t" not in admin(server, "workers"), what="the worker to leave")
    [(_, dead_handle, function, unique, attempts, _died, _last)] = dead
    assert (dead_handle, function, unique, attempts) == (
        handle,
        b"flaky",
        b"order-7",
        str(ATTEMPTS).encode(),
    )
    return dead


def test_gearman_cli_worker_running_a_failing_command(
    server: ServerProcess, procs: Processes
) -> None:
    cmd = gearman_cmd(server, "-w", "-f", "flaky", "--", "false")
    [entry] = run_failing_worker(server, procs, cmd)
    outcomes = [a[2] for a in attempt_lines(server, entry[0])]
    assert outcomes == [b"fail"] * ATTEMPTS
    requeue_and_complete(server, entry[0])


def test_php_worker_that_fails_and_throws(server: ServerProcess, procs: Processes) -> None:
    [entry] = run_failing_worker(server, procs, php_cmd(server), PHP_FAILING)
    attempts = attempt_lines(server, entry[0])
    assert [a[2] for a in attempts] == [b"fail", b"exception", b"fail"]
    # pecl gearman 2.1 sends WORK_EXCEPTION for a thrown exception, but with a text of
    # its own ("Unable to add worker function"), not the exception's message.
    assert attempts[1][3]
    requeue_and_complete(server, entry[0])


def test_perl_worker_that_fails_and_dies(server: ServerProcess, procs: Processes) -> None:
    [entry] = run_failing_worker(server, procs, perl_cmd(server), PERL_FAILING)
    attempts = attempt_lines(server, entry[0])
    assert [a[2] for a in attempts] == [b"fail", b"exception", b"fail"]
    # Gearman::Worker sends the die message Storable-frozen in its WORK_EXCEPTION (and a
    # WORK_FAIL after it, which the server ignores for a job it already ended).
    assert b"perl attempt 2 broke" in attempts[1][3]
    requeue_and_complete(server, entry[0])


def test_the_session_of_docs_retries_md_runs_as_written(tmp_path: Path) -> None:
    """The shell blocks of docs/retries.md, pasted into one shell (on a free port)."""
    need_program("gearman", "gearman-tools")
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "docs" / "retries.md").read_text(), re.S)
    port = str(free_port())
    script = "set -m\n" + "\n".join(blocks).replace("4731", port)
    bin_dir = str(Path(sys.executable).parent)
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")},
        capture_output=True,
        timeout=60,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert b"state\tretrying\n" in out and b"state\tdead\n" in out
    assert b"\tflaky\torder-7\t3\t" in out  # the dead list line: three attempts
    assert out.count(b"127.0.0.1 -\tfail") == 3
    assert out.endswith(b"1\n.\n")  # requeued one, then the dead list is empty


PERL_FAILS_ONCE = (
    PERL_PRELUDE
    + r"""
# Fails its first job, then answers "ok <payload>"; runs until stopped, or for 25 s.
my ($calls, $start) = (0, time);
my $w = Gearman::Worker->new(job_servers => [$server]);
$w->register_function(flakyfg => sub {
    $calls++;
    print STDERR "call $calls\n";
    return undef if $calls == 1;  # undef is WORK_FAIL for Gearman::Worker
    return "ok " . $_[0]->arg;
});
$w->work(stop_if => sub { return time - $start > 25; });
"""
)


def test_a_foreground_job_is_retried_unseen_by_the_gearman_cli_client(
    procs: Processes,
) -> None:
    # foreground=yes: the Perl worker's WORK_FAIL is retried after 0.1 s, and the real
    # gearman client, waiting all along, prints the second attempt's result.
    server = start_geartrain(["--retry", "flakyfg=3,backoff=fixed,min=0.1,foreground=yes"])
    try:
        worker = procs.spawn(perl_cmd(server), stdin=PERL_FAILS_ONCE.encode())
        wait_until(lambda: b"flakyfg" in admin(server, "workers"), what="the Perl worker")
        result = gearman(server, "-f", "flakyfg", "photo-7")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == b"ok photo-7"
        assert admin(server, "dead list") == b".\n"
        worker.terminate()
        _, calls = worker.communicate(timeout=10)
        assert calls.split() == [b"call", b"1", b"call", b"2"]  # it did fail once
    finally:
        server.stop()
