"""Payloads larger than geartrain used to accept, through the real libgearman clients.

gearmand takes bodies up to 4 GiB and holds each one in memory, twice. geartrain takes the
same sizes by default and keeps every body of 1 MiB or more in a spool file, sending it on
from there. These tests pass an 80 MiB job (above the 64 MiB cap geartrain had) through
Perl's Gearman::Client and Gearman::Worker, and spooled jobs of a few MiB through PHP's
extension and the ``gearman`` tool (libgearman is slow with large bodies on any server), as
clients and workers, against both servers, and check every byte that comes back.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from tests.interop.helpers import (
    Processes,
    gearman,
    gearman_cmd,
    perl_cmd,
    php_cmd,
    run_perl,
    run_php,
)
from tests.interop.test_perl import PRELUDE as PERL_PRELUDE
from tests.interop.test_php import PRELUDE
from tests.interop.wire import wait_workers
from tests.support import ServerProcess

pytestmark = [pytest.mark.interop, pytest.mark.timeout(300)]

#: libgearman (under PHP's extension) grows its buffers slowly: 8 MiB take it seconds.
SIZE = 8 * 1024 * 1024
#: Perl's Gearman::Client is quick with large payloads: it gets one above the old 64 MiB cap.
PERL_SIZE = 80 * 1024 * 1024
#: The ``gearman`` tool reads its standard input in time quadratic in its size (10 MB take
#: it half a minute), so it gets a payload that is spooled but not huge.
TOOL_SIZE = 3 * 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_gearman_tool_background_job_of_3_mib_reaches_its_worker(
    any_server: ServerProcess, procs: Processes, tmp_path: os.PathLike[str]
) -> None:
    data = os.urandom(TOOL_SIZE)
    gearman(any_server, "-b", "-f", "bigsink", stdin=data, timeout=120).ok()
    out = os.path.join(tmp_path, "received")
    # The tool's worker writes the whole job to its command before reading any output, so
    # its command must not answer with much: a `cat` echo of a large job would deadlock.
    worker = procs.spawn(
        gearman_cmd(any_server, "-w", "-c", "1", "-f", "bigsink", "--", "sh", "-c", f"cat > {out}")
    )
    assert Processes.finish(worker, timeout=120).returncode == 0
    with open(out, "rb") as received:
        got = received.read()
    assert (len(got), sha(got)) == (TOOL_SIZE, sha(data))


PHP_WORKER = (
    PRELUDE
    + r"""
$w = worker();
$w->addFunction("bigrev", function ($job) { return strrev($job->workload()); });
$w->work();
"""
)

PHP_CLIENT = (
    PRELUDE
    + r"""
$size = (int)$argv[3];
$data = '';
for ($i = 0; strlen($data) < $size; $i++) { $data .= hash('sha256', "block $i", true); }
$data = substr($data, 0, $size);
$c = client();
$c->setTimeout(120000);
$result = $c->doNormal("bigrev", $data);
echo json_encode([
    "code" => $c->returnCode(),
    "length" => strlen($result),
    "reversed" => $result === strrev($data),
]);
"""
)


def test_gearman_tool_client_round_trips_3_mib_with_a_php_worker(
    any_server: ServerProcess, procs: Processes
) -> None:
    procs.spawn(php_cmd(any_server), stdin=PHP_WORKER.encode())
    wait_workers(any_server, "bigrev")
    data = os.urandom(TOOL_SIZE)
    result = gearman(any_server, "-f", "bigrev", stdin=data, timeout=180).ok()
    assert (len(result.stdout), sha(result.stdout)) == (TOOL_SIZE, sha(data[::-1]))


def test_php_client_and_worker_round_trip_8_mib(
    any_server: ServerProcess, procs: Processes
) -> None:
    procs.spawn(php_cmd(any_server), stdin=PHP_WORKER.encode())
    wait_workers(any_server, "bigrev")
    out = run_php(any_server, PHP_CLIENT, str(SIZE), timeout=180).ok().out
    assert json.loads(out) == {"code": 0, "length": SIZE, "reversed": True}


PERL_WORKER = (
    PERL_PRELUDE
    + r"""
my $w = Gearman::Worker->new(job_servers => [$server]);
$w->register_function(bigrev => sub { return scalar reverse $_[0]->arg; });
my $done = 0;
$w->work(on_complete => sub { $done++ }, stop_if => sub { return $done >= 1; });
"""
)

PERL_CLIENT = (
    PERL_PRELUDE
    + r"""
use Digest::SHA qw(sha256_hex);
my $size = shift @ARGV;
my $data = '';
open(my $random, '<:raw', '/dev/urandom') or die;
read($random, $data, $size) == $size or die;
my $result = client()->do_task(bigrev => \$data, { timeout => 150 });
out({
    length => defined $result ? length($$result) : -1,
    reversed => (defined $result && $$result eq reverse($data)) ? 1 : 0,
});
"""
)


def test_perl_client_and_worker_round_trip_80_mib(
    any_server: ServerProcess, procs: Processes
) -> None:
    procs.spawn(perl_cmd(any_server), stdin=PERL_WORKER.encode())
    wait_workers(any_server, "bigrev")
    out = run_perl(any_server, PERL_CLIENT, str(PERL_SIZE), timeout=180).ok().out
    assert json.loads(out) == {"length": PERL_SIZE, "reversed": 1}
