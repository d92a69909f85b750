"""Our worker serving clients built on libgearman: PHP's pecl extension and the ``gearman`` tool."""

from __future__ import annotations

import subprocess

import pytest

from geartrain.errors import WorkFail
from geartrain.worker import Job
from tests.client.helpers import GEARMAN, PHP, php_has_gearman, worker_thread
from tests.support import ServerProcess

pytestmark = pytest.mark.interop

PHP_CLIENT = r"""
$c = new GearmanClient();
$c->addServer('127.0.0.1', (int)$argv[1]);
$c->setTimeout(15000);
echo $c->doNormal('py_reverse', 'hello from php'), "\n";
echo $c->doHigh('py_reverse', 'high'), "\n";
echo $c->doLow('py_unique', 'x', 'php-unique-1'), "\n";
$c->doNormal('py_fail', 'x');
echo $c->returnCode() == GEARMAN_WORK_FAIL ? "failed" : "rc=" . $c->returnCode(), "\n";
$handle = $c->doBackground('py_reverse', 'bg');
echo $c->returnCode() == GEARMAN_SUCCESS && strlen($handle) > 0 ? "queued" : "bad", "\n";
"""


def reverse(job: Job) -> bytes:
    return job.payload[::-1]


def unique(job: Job) -> bytes:
    return job.unique


def fail(job: Job) -> bytes:
    raise WorkFail


FUNCTIONS = {"py_reverse": reverse, "py_unique": unique, "py_fail": fail}


def test_php_client_with_our_worker(any_server: ServerProcess) -> None:
    if not php_has_gearman():
        pytest.skip("php with the gearman extension is not installed (php-gearman)")
    assert PHP is not None
    with worker_thread(any_server.address, FUNCTIONS):
        proc = subprocess.run(
            [PHP, "-r", PHP_CLIENT, "--", str(any_server.port)],
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines() == [
        "php morf olleh",
        "hgih",
        "php-unique-1",
        "failed",
        "queued",
    ]


def run_gearman(
    server: ServerProcess, *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    if GEARMAN is None:
        pytest.skip("the gearman command-line tool is not installed (gearman-tools)")
    return subprocess.run(
        [GEARMAN, "-h", "127.0.0.1", "-p", str(server.port), *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_gearman_cli_client_with_our_worker(any_server: ServerProcess) -> None:
    with worker_thread(any_server.address, FUNCTIONS):
        assert run_gearman(any_server, "-f", "py_reverse", "abc").stdout == b"cba"
        lines = run_gearman(any_server, "-N", "-f", "py_reverse", stdin=b"one\ntwo\n")
        assert lines.stdout == b"enoowt"
        assert run_gearman(any_server, "-u", "given", "-f", "py_unique", "x").stdout == b"given"
        assert run_gearman(any_server, "-P", "-f", "py_reverse", "xy").stdout == b"py_reverse: yx"
        # WORK_FAIL must be exactly the handle, or libgearman waits forever.
        failed = run_gearman(any_server, "-f", "py_fail", "x")
        assert (failed.returncode, failed.stdout, failed.stderr) == (1, b"", b"Job failed\n")
