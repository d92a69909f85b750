"""Our client and worker with Perl's pure-Perl Gearman::Client and Gearman::Worker."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from geartrain.client import Client
from geartrain.errors import JobFailed
from geartrain.worker import Job
from tests.client.helpers import worker_thread
from tests.support import ServerProcess

pytestmark = pytest.mark.interop

PERL = shutil.which("perl")

PERL_WORKER = r"""
use strict; use warnings; use Gearman::Worker;
my ($server, $max) = @ARGV;
my ($done, $start) = (0, time);
my $w = Gearman::Worker->new(job_servers => [$server]);
$w->register_function(perl_reverse => sub { return scalar reverse $_[0]->arg; });
$w->register_function(perl_dies => sub { die "bad\n"; });
$w->work(on_complete => sub { $done++ }, on_fail => sub { $done++ },
         stop_if => sub { return $done >= $max || time - $start > 25; });
"""

PERL_CLIENT = r"""
use strict; use warnings; use Gearman::Client;
my ($server) = @ARGV;
my $c = Gearman::Client->new(job_servers => [$server]);
my $r = $c->do_task(py_upper => "perl payload", { timeout => 15 });
print defined $r ? $$r : "undef", "\n";
my $f = $c->do_task(py_fail => "x", { timeout => 15 });
print defined $f ? "defined" : "failed", "\n";
my $h = $c->dispatch_background(py_upper => "bg", { uniq => "perl-bg" });
print defined $h ? "queued" : "not queued", "\n";
"""


def have_perl_gearman() -> bool:
    if PERL is None:
        return False
    proc = subprocess.run(
        [PERL, "-MGearman::Client", "-MGearman::Worker", "-e", "1"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return proc.returncode == 0


@pytest.fixture(autouse=True)
def _need_perl() -> None:
    if not have_perl_gearman():
        pytest.skip("perl with Gearman::Client is not installed (libgearman-client-perl)")


def test_our_client_with_perl_worker(any_server: ServerProcess) -> None:
    assert PERL is not None
    worker = subprocess.Popen(
        [PERL, "-e", PERL_WORKER, f"127.0.0.1:{any_server.port}", "3"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with Client([any_server.address], timeout=20) as client:
            assert client.call("perl_reverse", b"abc") == b"cba"
            assert client.gather([client.submit("perl_reverse", b"xy")]) == [b"yx"]
            with pytest.raises(JobFailed):
                client.call("perl_dies", b"x")
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait(10)


def test_perl_client_with_our_worker(any_server: ServerProcess) -> None:
    assert PERL is not None

    def upper(job: Job) -> bytes:
        return job.payload.upper()

    def fail(job: Job) -> bytes:
        raise ValueError("no")

    # exceptions=False: the ValueError goes out as a plain WORK_FAIL. gearmand 1.1.x
    # would turn a WORK_EXCEPTION into "WORK_FAIL handle\0", which Perl's client
    # rejects ("work_fail for unknown handle") and dies on.
    functions = {"py_upper": upper, "py_fail": fail}
    with worker_thread(any_server.address, functions, exceptions=False):
        proc = subprocess.run(
            [PERL, "-e", PERL_CLIENT, f"127.0.0.1:{any_server.port}"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines() == ["PERL PAYLOAD", "failed", "queued"]
