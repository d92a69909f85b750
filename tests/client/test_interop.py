"""Our client with workers written against libgearman: PHP's pecl extension and ``gearman -w``."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from geartrain.client import Client, UpdateKind
from geartrain.errors import JobFailed
from tests.client.helpers import GEARMAN, PHP, php_has_gearman, wait_until
from tests.support import ServerProcess

pytestmark = pytest.mark.interop

PHP_WORKER = r"""
$w = new GearmanWorker();
$w->addServer('127.0.0.1', (int)$argv[1]);
$w->setTimeout(15000);
$w->addFunction('php_reverse', function ($job) { return strrev($job->workload()); });
$w->addFunction('php_chunks', function ($job) {
    $job->sendData('chunk1');
    $job->sendStatus(1, 2);
    return 'last:' . $job->unique();
});
$w->addFunction('php_fail', function ($job) { $job->sendFail(); return null; });
for ($n = 0; $n < (int)$argv[2]; $n++) { if (!$w->work()) { exit(3); } }
"""


@pytest.fixture
def php_worker(any_server: ServerProcess) -> Iterator[subprocess.Popen[bytes]]:
    if not php_has_gearman():
        pytest.skip("php with the gearman extension is not installed (php-gearman)")
    assert PHP is not None
    proc = subprocess.Popen(
        [PHP, "-r", PHP_WORKER, "--", str(any_server.port), "4"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def test_our_client_with_php_worker(
    any_server: ServerProcess, php_worker: subprocess.Popen[bytes]
) -> None:
    with Client([any_server.address], timeout=15) as client:
        assert client.call("php_reverse", b"hello php") == b"php olleh"
        task = client.submit("php_chunks", b"", unique="uniq-1")
        updates = [(u.kind, u.data) for u in task.stream(15)]
        assert (UpdateKind.DATA, b"chunk1") in updates
        assert updates[-1] == (UpdateKind.COMPLETE, b"last:uniq-1")
        assert task.numerator == 1 and task.denominator == 2
        with pytest.raises(JobFailed):
            client.call("php_fail", b"x")
        assert client.gather([client.submit("php_reverse", b"ab")]) == [b"ba"]
    assert php_worker.wait(15) == 0


def test_our_client_with_gearman_cli_worker(any_server: ServerProcess) -> None:
    if GEARMAN is None:
        pytest.skip("the gearman command-line tool is not installed (gearman-tools)")
    worker = subprocess.Popen(
        [
            GEARMAN,
            "-w",
            "-h",
            "127.0.0.1",
            "-p",
            str(any_server.port),
            "-c",
            "2",
            "-f",
            "tr",
            "--",
            "tr",
            "a-z",
            "A-Z",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with Client([any_server.address], timeout=15) as client:
            results = client.gather([client.submit("tr", b"hello"), client.submit("tr", b"bye")])
        assert results == [b"HELLO", b"BYE"]
        wait_until(lambda: worker.poll() is not None, timeout=15)
        assert worker.returncode == 0
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait(10)
