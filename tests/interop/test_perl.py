"""Perl's pure-Perl Gearman::Client and Gearman::Worker (CPAN Gearman 2.004).

Scripts are fed to ``perl`` on stdin with the server as the first argument and print JSON.
The Perl worker uses plain GRAB_JOB, waits only 0.5 s for its reply and dies on any reply
other than NOOP/NO_JOB/JOB_ASSIGN (PROTOCOL.md §14), so it is a strict judge of the server.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from tests.interop.helpers import Processes, perl_cmd, run_perl
from tests.interop.wire import Conn, P, wait_workers
from tests.support import ServerProcess

pytestmark = pytest.mark.interop

PRELUDE = r"""
use strict;
use warnings;
use Gearman::Client;
use Gearman::Worker;
use JSON::PP;
use Storable ();
my $server = shift @ARGV;
sub client { return Gearman::Client->new(job_servers => [$server], @_); }
sub out { print JSON::PP->new->canonical->allow_nonref->encode($_[0]); }
"""

# Stops after the number of jobs given as its argument, or after 25 s whatever happens.
WORKER = (
    PRELUDE
    + r"""
my $max = shift @ARGV;
my $done = 0;
my $start = time;
my $w = Gearman::Worker->new(job_servers => [$server]);
$w->register_function(reverse => sub { return scalar reverse $_[0]->arg; });
$w->register_function(dies => sub { die "bad thing\n"; });
$w->register_function(progress => sub {
    my $job = shift;
    $job->set_status(1, 2);
    return "halfway and done";
});
$w->register_function(slow => 1, sub { sleep 4; return "late"; });
$w->work(
    on_complete => sub { $done++ },
    on_fail => sub { $done++ },
    stop_if => sub { return $done >= $max || time - $start > 25; },
);
print "worked $done\n";
"""
)


def perl_json(server: ServerProcess, code: str, *args: str) -> Any:
    result = run_perl(server, PRELUDE + code, *args, timeout=30).ok()
    return json.loads(result.stdout)


def start_perl_worker(
    procs: Processes, server: ServerProcess, jobs: int, function: str = "reverse"
) -> subprocess.Popen[bytes]:
    worker = procs.spawn(perl_cmd(server, str(jobs)), stdin=WORKER.encode())
    wait_workers(server, function)
    return worker


def test_do_task(any_server: ServerProcess, procs: Processes) -> None:
    worker = start_perl_worker(procs, any_server, 1)
    got = perl_json(
        any_server,
        r"""
my $r = client()->do_task("reverse", "Hello World!", {timeout => 10});
out($r ? $$r : undef);
""",
    )
    assert got == "!dlroW olleH"
    assert Processes.finish(worker, timeout=30).ok().out == "worked 1\n"


def test_do_task_with_status(any_server: ServerProcess, procs: Processes) -> None:
    start_perl_worker(procs, any_server, 1)
    got = perl_json(
        any_server,
        r"""
my @seen;
my $r = client()->do_task("progress", "x", {
    timeout => 10,
    on_status => sub { push @seen, [@_] },
});
out([$$r, \@seen]);
""",
    )
    assert got == ["halfway and done", [["1", "2"]]]


def test_dispatch_background_and_get_status(any_server: ServerProcess) -> None:
    handle = perl_json(
        any_server, 'out(client()->dispatch_background("pbg", "payload", {uniq => "pu-1"}));'
    )
    js, sep, server_handle = handle.partition("//")
    assert (js, sep) == (f"127.0.0.1:{any_server.port}", "//")

    status_script = r"""
my $s = client()->get_status($ARGV[0]);
out($s ? [$s->known ? 1 : 0, $s->running ? 1 : 0, $s->progress, $s->percent] : "none");
"""
    assert perl_json(any_server, status_script, handle) == [1, 0, ["0", "0"], None]
    with Conn(any_server) as worker:
        worker.register(b"pbg")
        assigned = worker.grab_next()
        assert assigned == [server_handle.encode(), b"pbg", b"pu-1", b"payload"]
        worker.send(P.WORK_STATUS, server_handle.encode(), b"3", b"4")
        worker.sync()
        assert perl_json(any_server, status_script, handle) == [1, 1, ["3", "4"], 0.75]
        worker.send(P.WORK_COMPLETE, server_handle.encode(), b"")
        worker.sync()
    assert perl_json(any_server, status_script, handle) == [0, 0, ["0", "0"], None]


def test_background_uniq_coalesces(any_server: ServerProcess) -> None:
    got = perl_json(
        any_server,
        r"""
my $c = client();
out([map { $c->dispatch_background("co", "data $_", {uniq => "same"}) } 1 .. 3]);
""",
    )
    assert len(got) == 3 and len(set(got)) == 1


def test_priorities(any_server: ServerProcess) -> None:
    perl_json(
        any_server,
        r"""
my $c = client();
out([
    $c->dispatch_background("pp", "low", {uniq => "1", priority => "low"}),
    $c->dispatch_background("pp", "normal", {uniq => "2"}),
    $c->dispatch_background("pp", "high", {uniq => "3", priority => "high"}),
]);
""",
    )
    with Conn(any_server) as worker:
        worker.register(b"pp")
        order = [worker.grab_next()[-1] for _ in range(3)]
    assert order == [b"high", b"normal", b"low"]


def test_task_set(any_server: ServerProcess, procs: Processes) -> None:
    start_perl_worker(procs, any_server, 3)
    got = perl_json(
        any_server,
        r"""
my $ts = client()->new_task_set;
my %results;
for my $word (qw(alpha beta gamma)) {
    $ts->add_task("reverse", $word, {
        uniq => $word,
        on_complete => sub { $results{$word} = ${ $_[0] } },
    });
}
$ts->wait(timeout => 15);
out(\%results);
""",
    )
    assert got == {"alpha": "ahpla", "beta": "ateb", "gamma": "ammag"}


def test_work_fail_reaches_perl_client(any_server: ServerProcess, procs: Processes) -> None:
    client = procs.spawn(
        perl_cmd(any_server),
        stdin=(
            PRELUDE
            + r"""
my @seen;
my $r = client()->do_task("pfail", "x", {timeout => 10, on_fail => sub { push @seen, "fail" }});
out([defined $r ? 1 : 0, \@seen]);
"""
        ).encode(),
    )
    with Conn(any_server) as worker:
        worker.register(b"pfail")
        handle = worker.grab_next()[0]
        worker.send(P.WORK_FAIL, handle)
        worker.sync()
    assert json.loads(Processes.finish(client).ok().stdout) == [0, ["fail"]]


def test_worker_exception_then_fail(any_server: ServerProcess, procs: Processes) -> None:
    """A dying job makes the Perl worker send WORK_EXCEPTION and then WORK_FAIL (§14).

    gearmand answers the WORK_FAIL with ERROR JOB_NOT_FOUND, which the worker takes as the reply
    to its next GRAB_JOB and dies. geartrain must ignore the second result quietly so the worker
    lives on and serves the next job.
    """
    worker = start_perl_worker(procs, any_server, 2, "dies")
    got = perl_json(
        any_server,
        r"""
my @seen;
my $r = client(exceptions => 1)->do_task("dies", "x", {
    timeout => 10,
    on_exception => sub { push @seen, "exception: " . ${ Storable::thaw($_[0]) } },
    on_fail => sub { push @seen, "fail" },
});
out([defined $r ? 1 : 0, \@seen]);
""",
    )
    assert got == [0, ["exception: bad thing\n"]]

    if any_server.kind == "gearmand":
        died = Processes.finish(worker, timeout=15)
        assert died.returncode != 0
        assert "unexpected packet type: error" in died.err
        return
    time.sleep(1.0)  # the worker has sent its next GRAB_JOB by now
    assert worker.poll() is None, Processes.finish(worker).err
    follow_up = 'my $r = client()->do_task("reverse", "abc", {timeout => 10}); out($$r);'
    assert perl_json(any_server, follow_up) == "cba"
    assert Processes.finish(worker, timeout=30).ok().out == "worked 2\n"


def test_exceptions_off_gives_fail(any_server: ServerProcess, procs: Processes) -> None:
    """Without OPTION_REQ exceptions the client must see a plain failure (§7.4, §7.5).

    gearmand converts the exception to WORK_FAIL "handle\\0"; the stray zero makes the Perl
    client croak on an unknown handle. geartrain sends the bare handle.
    """
    start_perl_worker(procs, any_server, 1, "dies")
    script = (
        PRELUDE
        + r"""
my @seen;
my $r = client()->do_task("dies", "x", {
    timeout => 10,
    on_exception => sub { push @seen, "exception" },
    on_fail => sub { push @seen, "fail" },
});
out([defined $r ? 1 : 0, \@seen]);
"""
    )
    result = run_perl(any_server, script, timeout=30)
    if any_server.kind == "gearmand":
        assert result.returncode != 0
        assert "Got work_fail for unknown handle: H:" in result.err
        return
    assert json.loads(result.ok().stdout) == [0, ["fail"]]


def test_worker_timeout_registration(any_server: ServerProcess, procs: Processes) -> None:
    """register_function with a timeout sends CAN_DO_TIMEOUT; the server shows the function."""
    start_perl_worker(procs, any_server, 1, "slow")
    with Conn(any_server) as conn:
        workers = conn.admin("workers").decode()
    line = next(x for x in workers.splitlines() if " slow" in x)
    # The Perl worker names itself with 30 random lowercase letters (SET_CLIENT_ID).
    client_id = line.split(" ")[2]
    assert len(client_id) == 30 and client_id.isalpha() and client_id.islower()


SESSION = r"""
my $c = client(exceptions => 1);
my @log;
my $r = $c->do_task("reverse", "Hello", {timeout => 10});
push @log, $$r;
my @status;
$r = $c->do_task("progress", "x", {timeout => 10, on_status => sub { push @status, [@_] }});
push @log, [$$r, \@status];
my $ts = $c->new_task_set;
my %results;
for my $word (qw(one two)) {
    $ts->add_task("reverse", $word, {on_complete => sub { $results{$word} = ${ $_[0] } }});
}
$ts->wait(timeout => 10);
push @log, \%results;
my $h = $c->dispatch_background("nobody", "x", {uniq => "perl-bg"});
my $s = $c->get_status($h);
push @log, [$s->known ? 1 : 0, $s->running ? 1 : 0, $s->percent];
push @log, $c->dispatch_background("nobody", "y", {uniq => "perl-bg"}) eq $h ? "same" : "new";
out(\@log);
"""


def test_perl_session_same_as_gearmand(server_pair: dict[str, ServerProcess]) -> None:
    """One Perl client session against a Perl worker: identical results on both servers."""
    seen = {}
    for kind, server in server_pair.items():
        procs = Processes()
        try:
            start_perl_worker(procs, server, 4)
            seen[kind] = perl_json(server, SESSION)
        finally:
            procs.stop_all()
    assert seen["gearmand"][0] == "olleH"  # the session really ran
    assert seen["geartrain"] == seen["gearmand"]


def test_job_server_status(any_server: ServerProcess, procs: Processes) -> None:
    """Gearman::Client's admin helper parses ``status`` lines."""
    start_perl_worker(procs, any_server, 1)
    with Conn(any_server) as conn:
        conn.submit(b"perl_status", b"", b"x", P.SUBMIT_JOB_BG)
    got = perl_json(any_server, "out(client()->get_job_server_status);")
    assert got == {
        f"127.0.0.1:{any_server.port}": {
            "perl_status": {"queued": "1", "running": "0", "capable": "0"},
            "reverse": {"queued": "0", "running": "0", "capable": "1"},
            "dies": {"queued": "0", "running": "0", "capable": "1"},
            "progress": {"queued": "0", "running": "0", "capable": "1"},
            "slow": {"queued": "0", "running": "0", "capable": "1"},
        }
    }
