"""PHP's pecl gearman extension (a layer over libgearman) as client and worker.

Scripts are fed to ``php`` on stdin; they get the server as ``$argv[1]``/``$argv[2]`` and print
JSON so the assertions stay in Python. Every client and worker sets a libgearman timeout, so a
server that never answers makes the script fail instead of hang.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.interop.helpers import Processes, php_cmd, run_php, wait_until
from tests.interop.wire import Conn, P, wait_workers
from tests.support import ServerProcess

pytestmark = pytest.mark.interop

PRELUDE = r"""<?php
// pecl gearman 2.1 does not export libgearman's GEARMAN_CLIENT_EXCEPTION (1 << 7).
if (!defined("GEARMAN_CLIENT_EXCEPTION")) { define("GEARMAN_CLIENT_EXCEPTION", 128); }
$host = $argv[1];
$port = (int)$argv[2];
function client() {
    global $host, $port;
    $c = new GearmanClient();
    $c->addServer($host, $port);
    $c->setTimeout(10000);
    return $c;
}
function worker() {
    global $host, $port;
    $w = new GearmanWorker();
    $w->addServer($host, $port);
    $w->setTimeout(15000);
    return $w;
}
function work_jobs($w, $count) {
    for ($i = 0; $i < $count; $i++) {
        if (!@$w->work() && $w->returnCode() != GEARMAN_SUCCESS
            && $w->returnCode() != GEARMAN_WORK_EXCEPTION) {
            fwrite(STDERR, "work() failed: " . $w->returnCode() . " " . $w->error() . "\n");
            exit(3);
        }
    }
}
"""

# The "reverse" example from the Gearman documentation, bounded to a number of jobs.
REVERSE_WORKER = (
    PRELUDE
    + r"""
$w = worker();
$w->addFunction("reverse", function ($job) { return strrev($job->workload()); });
work_jobs($w, (int)$argv[3]);
echo "done\n";
"""
)

REVERSE_CLIENT = (
    PRELUDE
    + r"""
$c = client();
print $c->doNormal("reverse", "Hello World!");
"""
)


def php_json(server: ServerProcess, code: str, *args: str) -> Any:
    result = run_php(server, PRELUDE + code, *args).ok()
    return json.loads(result.stdout)


def start_php_worker(
    procs: Processes, server: ServerProcess, code: str, function: str, jobs: int
) -> subprocess.Popen[bytes]:
    worker = procs.spawn(php_cmd(server, str(jobs)), stdin=code.encode())
    wait_workers(server, function)
    return worker


def test_reverse_example(any_server: ServerProcess, procs: Processes) -> None:
    worker = start_php_worker(procs, any_server, REVERSE_WORKER, "reverse", 1)
    assert run_php(any_server, REVERSE_CLIENT).ok().out == "!dlroW olleH"
    assert Processes.finish(worker).ok().out == "done\n"


def test_do_normal_high_low(any_server: ServerProcess, procs: Processes) -> None:
    start_php_worker(procs, any_server, REVERSE_WORKER, "reverse", 3)
    got = php_json(
        any_server,
        r"""
$c = client();
$out = [$c->doNormal("reverse", "abc"), $c->returnCode()];
$out[] = $c->doHigh("reverse", "def");
$out[] = $c->doLow("reverse", "ghi");
echo json_encode($out);
""",
    )
    assert got == ["cba", 0, "fed", "ihg"]


def test_background_priorities(any_server: ServerProcess) -> None:
    handles = php_json(
        any_server,
        r"""
$c = client();
echo json_encode([
    $c->doLowBackground("bgp", "low"),
    $c->doBackground("bgp", "normal"),
    $c->doHighBackground("bgp", "high"),
]);
""",
    )
    assert len(set(handles)) == 3 and all(h.startswith("H:") for h in handles)
    with Conn(any_server) as worker:
        worker.register(b"bgp")
        got = [worker.grab_next() for _ in range(3)]
    assert [g[-1] for g in got] == [b"high", b"normal", b"low"]
    assert [g[0].decode() for g in got] == handles[::-1]


def test_job_status(any_server: ServerProcess) -> None:
    handle = run_php(any_server, PRELUDE + 'echo client()->doBackground("st", "x");').ok().out
    status_script = r"""
$c = client();
echo json_encode($c->jobStatus($argv[3]));
"""
    assert php_json(any_server, status_script, handle) == [True, False, 0, 0]
    with Conn(any_server) as worker:
        worker.register(b"st")
        assert worker.grab_next()[0].decode() == handle
        worker.send(P.WORK_STATUS, handle.encode(), b"1", b"4")
        worker.sync()
        assert php_json(any_server, status_script, handle) == [True, True, 1, 4]
        worker.send(P.WORK_COMPLETE, handle.encode(), b"")
        worker.sync()
    assert php_json(any_server, status_script, handle) == [False, False, 0, 0]
    assert php_json(any_server, status_script, "H:unknown:1") == [False, False, 0, 0]


def test_add_task_and_run_tasks(any_server: ServerProcess, procs: Processes) -> None:
    start_php_worker(procs, any_server, REVERSE_WORKER, "reverse", 4)
    got = php_json(
        any_server,
        r"""
$c = client();
$results = [];
$created = 0;
$c->setCreatedCallback(function ($task) use (&$created) { $created++; });
$c->setCompleteCallback(function ($task) use (&$results) {
    $results[$task->unique()] = $task->data();
});
$c->addTask("reverse", "one", null, "u1");
$c->addTaskHigh("reverse", "two", null, "u2");
$c->addTaskLow("reverse", "three", null, "u3");
$c->addTask("reverse", "four", null, "u4");
$ok = $c->runTasks();
ksort($results);
echo json_encode([$ok, $created, $results]);
""",
    )
    assert got == [True, 4, {"u1": "eno", "u2": "owt", "u3": "eerht", "u4": "ruof"}]


def test_data_status_and_warning_callbacks(any_server: ServerProcess, procs: Processes) -> None:
    worker_code = (
        PRELUDE
        + r"""
$w = worker();
$w->addFunction("chatty", function ($job) {
    $job->sendStatus(1, 2);
    $job->sendData("chunk");
    $job->sendWarning("careful");
    return "final";
});
work_jobs($w, 1);
"""
    )
    start_php_worker(procs, any_server, worker_code, "chatty", 1)
    got = php_json(
        any_server,
        r"""
$c = client();
$seen = [];
$c->setStatusCallback(function ($t) use (&$seen) {
    $seen[] = ["status", $t->taskNumerator(), $t->taskDenominator()];
});
$c->setDataCallback(function ($t) use (&$seen) { $seen[] = ["data", $t->data()]; });
$c->setWarningCallback(function ($t) use (&$seen) { $seen[] = ["warning", $t->data()]; });
$c->setCompleteCallback(function ($t) use (&$seen) { $seen[] = ["complete", $t->data()]; });
$c->addTask("chatty", "go");
$c->runTasks();
echo json_encode($seen);
""",
    )
    assert got == [
        ["status", 1, 2],
        ["data", "chunk"],
        ["warning", "careful"],
        ["complete", "final"],
    ]


EXCEPTION_WORKER = (
    PRELUDE
    + r"""
$w = worker();
$w->addFunction("sends_exception", function ($job) {
    $job->sendException("it broke");
    return GEARMAN_WORK_EXCEPTION;
});
$w->addFunction("fails", function ($job) {
    $job->sendFail();
    return GEARMAN_WORK_FAIL;
});
$w->addFunction("throws", function ($job) { throw new RuntimeException("thrown in worker"); });
work_jobs($w, (int)$argv[3]);
"""
)


def test_worker_send_exception_reaches_client(any_server: ServerProcess, procs: Processes) -> None:
    start_php_worker(procs, any_server, EXCEPTION_WORKER, "sends_exception", 2)
    got = php_json(
        any_server,
        r"""
$c = client();
$c->setOptions(GEARMAN_CLIENT_EXCEPTION);
$seen = [];
$c->setExceptionCallback(function ($t) use (&$seen) { $seen[] = ["exception", $t->data()]; });
$c->setFailCallback(function ($t) use (&$seen) { $seen[] = ["fail"]; });
$c->setCompleteCallback(function ($t) use (&$seen) { $seen[] = ["complete", $t->data()]; });
$c->addTask("sends_exception", "x");
$c->runTasks();
$result = $c->doNormal("sends_exception", "y");
echo json_encode([$seen, $result, $c->returnCode() == GEARMAN_WORK_EXCEPTION]);
""",
    )
    assert got == [[["exception", "it broke"]], "", True]


def test_worker_fail_reaches_client(any_server: ServerProcess, procs: Processes) -> None:
    start_php_worker(procs, any_server, EXCEPTION_WORKER, "fails", 2)
    got = php_json(
        any_server,
        r"""
$c = client();
$seen = [];
$c->setFailCallback(function ($t) use (&$seen) { $seen[] = "fail " . $t->jobHandle(); });
$c->setCompleteCallback(function ($t) use (&$seen) { $seen[] = "complete"; });
$c->addTask("fails", "x");
$c->runTasks();
$c->doNormal("fails", "y");
echo json_encode([count($seen), substr($seen[0], 0, 7), $c->returnCode() == GEARMAN_WORK_FAIL]);
""",
    )
    assert got == [1, "fail H:", True]


def test_worker_throwing_exception(any_server: ServerProcess, procs: Processes) -> None:
    """An uncaught PHP exception in the worker callback: the client sees a failed job."""
    worker = start_php_worker(procs, any_server, EXCEPTION_WORKER, "throws", 1)
    got = php_json(
        any_server,
        r"""
$c = client();
$c->setOptions(GEARMAN_CLIENT_EXCEPTION);
$result = $c->doNormal("throws", "x");
$rc = $c->returnCode();
echo json_encode([$result, $rc == GEARMAN_WORK_EXCEPTION || $rc == GEARMAN_WORK_FAIL]);
""",
    )
    assert got == ["", True]
    died = Processes.finish(worker)
    assert died.returncode != 0 and "thrown in worker" in died.err


def test_worker_function_timeout(any_server: ServerProcess, procs: Processes) -> None:
    """addFunction(..., timeout) sends CAN_DO_TIMEOUT in ms; an overdue job is handed out again."""
    worker_code = (
        PRELUDE
        + r"""
$w = worker();
$w->addFunction("sleepy", function ($job) { sleep(4); return "late"; }, null, 1000);
work_jobs($w, 1);
"""
    )
    start_php_worker(procs, any_server, worker_code, "sleepy", 1)
    with Conn(any_server) as client:
        handle = client.submit(b"sleepy", b"", b"zz", P.SUBMIT_JOB_BG)
        running = client.request(P.GET_STATUS, handle, reply=P.STATUS_RES)
        wait_until(
            lambda: (
                client.request(P.GET_STATUS, handle, reply=P.STATUS_RES).split(b"\0")[2] == b"1"
            ),
            what="the PHP worker to take the job",
        )
        # After ~1 s the server takes the job back and queues it again for other workers.
        with Conn(any_server) as second:
            second.register(b"sleepy")
            again = second.grab_next(timeout=8)
        assert again[0] == handle and again[-1] == b"zz"
    assert running.startswith(handle + b"\0")


def test_ping(any_server: ServerProcess) -> None:
    got = php_json(any_server, 'echo json_encode([client()->ping("x"), worker()->ping("y")]);')
    assert got == [True, True]


SESSION_WORKER = (
    PRELUDE
    + r"""
$w = worker();
$w->addFunction("reverse", function ($job) { return strrev($job->workload()); });
$w->addFunction("fails", function ($job) { $job->sendFail(); return GEARMAN_WORK_FAIL; });
$w->addFunction("sends_exception", function ($job) {
    $job->sendException("it broke");
    return GEARMAN_WORK_EXCEPTION;
});
$w->addFunction("chatty", function ($job) {
    $job->sendStatus(2, 3);
    $job->sendData("d1");
    return "final";
});
work_jobs($w, 8);
"""
)

SESSION_CLIENT = r"""
$c = client();
$log = [];
$log[] = [$c->doNormal("reverse", "abc"), $c->returnCode()];
$log[] = [$c->doHigh("reverse", "high"), $c->returnCode()];
$log[] = [$c->doLow("reverse", "low"), $c->returnCode()];
$log[] = [$c->doNormal("fails", "x"), $c->returnCode()];
$seen = [];
$c->setCompleteCallback(function ($t) use (&$seen) { $seen[] = ["complete", $t->data()]; });
$c->setDataCallback(function ($t) use (&$seen) { $seen[] = ["data", $t->data()]; });
$c->setStatusCallback(function ($t) use (&$seen) {
    $seen[] = ["status", $t->taskNumerator(), $t->taskDenominator()];
});
$c->setExceptionCallback(function ($t) use (&$seen) { $seen[] = ["exception", $t->data()]; });
$c->setFailCallback(function ($t) use (&$seen) { $seen[] = ["fail"]; });
$c->addTask("chatty", "go");
$c->runTasks();
$c->addTask("reverse", "task", null, "t1");
$c->runTasks();
$c->addTask("sends_exception", "x");
$c->runTasks();
$log[] = $seen;
$handle = $c->doBackground("reverse", "bg");
$log[] = [substr($handle, 0, 2), $c->returnCode()];
$log[] = $c->jobStatus("H:nowhere:1");
$log[] = $c->ping("echo me");
echo json_encode($log);
"""


def test_php_session_same_as_gearmand(server_pair: dict[str, ServerProcess]) -> None:
    """One PHP client session against a PHP worker: identical results on both servers."""
    seen = {}
    for kind, server in server_pair.items():
        procs = Processes()
        try:
            start_php_worker(procs, server, SESSION_WORKER, "reverse", 8)
            seen[kind] = php_json(server, SESSION_CLIENT)
        finally:
            procs.stop_all()
    assert seen["gearmand"][0] == ["cba", 0]  # the session really ran
    assert seen["geartrain"] == seen["gearmand"]


def test_job_status_by_unique_key(any_server: ServerProcess) -> None:
    """libgearman's GET_STATUS_UNIQUE: STATUS_RES_UNIQUE is matched by its first field."""
    got = php_json(
        any_server,
        r"""
$c = client();
$c->doBackground("by_unique", "x", "php-unique");
echo json_encode([$c->jobStatusByUniqueKey("php-unique"), $c->jobStatusByUniqueKey("nope")]);
""",
    )
    assert got == [[True, False, 0, 0], [False, False, 0, 0]]


def test_worker_id_shown_by_workers(any_server: ServerProcess, procs: Processes) -> None:
    worker_code = (
        PRELUDE
        + r"""
$w = worker();
$w->setId("php-worker-7");
$w->addFunction("ident", function ($job) { return "ok"; });
work_jobs($w, 1);
"""
    )
    start_php_worker(procs, any_server, worker_code, "ident", 1)
    with Conn(any_server) as conn:
        wait_until(
            lambda: b" php-worker-7 : ident\n" in conn.admin("workers"),
            what="the PHP worker's id in 'workers'",
        )
