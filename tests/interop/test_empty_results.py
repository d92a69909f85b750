"""Perl's Gearman::Worker reporting an empty result: every client gets it, nothing stalls.

Gearman::Worker (libgearman-client-perl 2.004) sends WORK_COMPLETE as the bare job handle,
with no NUL and no data, whenever the function returns "" or "0" (it tests the result for
truth); undef is its way to fail a job and goes out as WORK_FAIL. gearmand 1.1.20 closes such
a worker's connection, so the job is requeued and runs again, and again. geartrain reads the
bare handle as an empty result (PROTOCOL.md §2.1: the handle is the only argument). The "0"
cannot survive: the worker never sends it, so its clients get the empty result.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from geartrain.client import Client
from geartrain.errors import JobFailed
from tests.interop.helpers import Processes, perl_cmd, run_perl, run_php
from tests.interop.test_perl import PRELUDE
from tests.interop.test_php import PRELUDE as PHP_PRELUDE
from tests.interop.wire import Conn, P, wait_workers
from tests.support import ServerProcess

pytestmark = pytest.mark.interop

# Serves jobs until told how many, or for 25 s; `echo` proves it is still healthy afterwards.
EMPTY_WORKER = (
    PRELUDE
    + r"""
my $max = shift @ARGV;
my $done = 0;
my $start = time;
my $w = Gearman::Worker->new(job_servers => [$server]);
$w->register_function(empty_string => sub { return ""; });
$w->register_function(zero => sub { return "0"; });
$w->register_function(nothing => sub { return undef; });
$w->register_function(echo => sub { return $_[0]->arg; });
$w->work(
    on_complete => sub { $done++ },
    on_fail => sub { $done++ },
    stop_if => sub { return $done >= $max || time - $start > 25; },
);
print "worked $done\n";
"""
)


def start_empty_worker(
    procs: Processes, server: ServerProcess, jobs: int
) -> subprocess.Popen[bytes]:
    worker = procs.spawn(perl_cmd(server, str(jobs)), stdin=EMPTY_WORKER.encode())
    wait_workers(server, "echo")
    return worker


def test_the_bare_handle_is_an_empty_result_on_the_wire(
    geartrain_server: ServerProcess, procs: Processes
) -> None:
    worker = start_empty_worker(procs, geartrain_server, 3)
    with Conn(geartrain_server) as client:
        for function in ("empty_string", "zero"):
            handle = client.submit(function.encode(), b"", b"payload", P.SUBMIT_JOB)
            assert client.recv(timeout=10) == (P.WORK_COMPLETE, handle + b"\0")
        handle = client.submit(b"nothing", b"", b"payload", P.SUBMIT_JOB)
        assert client.recv(timeout=10) == (P.WORK_FAIL, handle)
    assert Processes.finish(worker, timeout=30).ok().out == "worked 3\n"


def test_perl_client_gets_empty_results_and_a_task_set_after_them_completes(
    geartrain_server: ServerProcess, procs: Processes
) -> None:
    worker = start_empty_worker(procs, geartrain_server, 7)
    got = json.loads(
        run_perl(
            geartrain_server,
            PRELUDE
            + r"""
my $c = client();
my @results;
for my $f (qw(empty_string zero nothing)) {
    my $r = $c->do_task($f, "x", {timeout => 10});
    push @results, defined $r ? $$r : undef;
}
# A task set on the same functions afterwards must not stall behind a stranded job.
my $ts = $c->new_task_set;
my %set;
for my $f (qw(empty_string zero nothing echo)) {
    $ts->add_task($f, "again", {on_complete => sub { $set{$f} = ${ $_[0] } }});
}
$ts->wait(timeout => 15);
out([\@results, \%set]);
""",
            timeout=40,
        )
        .ok()
        .stdout
    )
    # undef is Gearman::Worker's failure: do_task returns undef, on_complete is not called.
    assert got == [["", "", None], {"empty_string": "", "zero": "", "echo": "again"}]
    assert Processes.finish(worker, timeout=30).ok().out == "worked 7\n"


def test_php_and_our_client_get_empty_results(
    geartrain_server: ServerProcess, procs: Processes
) -> None:
    worker = start_empty_worker(procs, geartrain_server, 6)
    php = run_php(
        geartrain_server,
        PHP_PRELUDE
        + r"""
$c = client();
$out = [];
foreach (["empty_string", "zero"] as $f) {
    $r = $c->doNormal($f, "x");
    $out[] = [$r, $c->returnCode()];
}
echo json_encode($out);
""",
    ).ok()
    assert json.loads(php.stdout) == [["", 0], ["", 0]]  # 0 = GEARMAN_SUCCESS
    with Client([geartrain_server.address], timeout=15) as client:
        assert client.call("empty_string", b"x") == b""
        assert client.call("zero", b"x") == b""
        with pytest.raises(JobFailed):
            client.call("nothing", b"x")
        assert client.call("echo", b"still alive") == b"still alive"
    assert Processes.finish(worker, timeout=30).ok().out == "worked 6\n"
