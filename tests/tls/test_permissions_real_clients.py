"""Real clients with certificates against a permissions file: one permitted and one denied case
each, and what each client makes of the ERROR PERMISSION_DENIED it is sent.

* python ``gear``: a denied submit is logged ("Received ERROR packet: b'PERMISSION_DENIED'")
  and ``submitJob`` raises ``GearmanError`` (no server took the job); a denied CAN_DO is
  logged by the worker, whose ERROR handler then fails (it expects no reply to CAN_DO) and
  drops the connection as lost; it is never given the function's jobs.
* Perl ``Gearman::Client``: ``do_task`` dies with ``Unimplemented packet type: error
  [PERMISSION_DENIED\0<text>]`` for a denied submit.
* Perl ``Gearman::Worker``: CAN_DO has no reply, so it reads the ERROR as the answer to its
  GRAB_JOB and dies with ``unexpected packet type: error [PERMISSION_DENIED -- ...]``.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from geartrain.admin import AdminClient
from tests.interop.helpers import MISSING, need_perl, run, wait_until
from tests.support import ServerProcess
from tests.tls.pki import PKI, ClientFiles
from tests.tls.test_real_clients import PERL, gear

__all__ = ["gear"]  # the fixture, shared with the TLS client tests

pytestmark = [
    pytest.mark.interop,
    pytest.mark.filterwarnings("ignore:notifyAll:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLS is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:ssl.OP_NO:DeprecationWarning"),
]

RULES = """
[[grant]]
identity = {cn = "worker"}
work = ["reverse"]

[[grant]]
identity = {cn = "client"}
submit = ["reverse"]

[[grant]]
identity = {cn = "both"}
submit = ["reverse"]
work = ["reverse"]

[[grant]]
identity = {cn = "ops"}
admin = "read"
"""


@pytest.fixture
def guarded(pki: PKI, tmp_path: Path, tls_process: Callable[..., ServerProcess]) -> ServerProcess:
    """``geartrain serve --ssl`` requiring client certificates, with RULES."""
    rules = tmp_path / "permissions.toml"
    rules.write_text(RULES)
    return tls_process("--ssl-verify-client", "required", "--permissions", str(rules))


def files(pki: PKI, who: ClientFiles) -> tuple[str, str, str]:
    """gear's addServer order: key, certificate, CA."""
    return (str(who.key), str(who.certificate), str(pki.ca_file))


def test_gear_permitted_and_denied(
    gear: ModuleType, guarded: ServerProcess, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    worker: Any = gear.Worker("permitted-worker")
    client: Any = gear.Client("permitted-client")
    outsider: Any = gear.Client("outsider")
    denied_worker: Any = gear.Worker("denied-worker")
    parties = [
        (worker, pki.client("worker")),
        (client, pki.client("client")),
        (outsider, pki.client("outsider")),
        (denied_worker, pki.client("outsider-worker")),
    ]
    try:
        for party, who in parties:
            party.addServer(guarded.host, guarded.port, *files(pki, who))
            party.waitForServer(timeout=10)
        worker.registerFunction("reverse")
        job = gear.Job(b"reverse", b"permitted")
        client.submitJob(job, timeout=10)
        with ThreadPoolExecutor(max_workers=1) as pool:
            assigned = pool.submit(worker.getJob).result(timeout=10)
        assigned.sendWorkComplete(assigned.arguments[::-1])
        wait_until(lambda: job.complete, timeout=10, what="the permitted job's result")
        assert b"".join(job.data) == b"dettimrep"

        with caplog.at_level(logging.ERROR), pytest.raises(gear.GearmanError):
            outsider.submitJob(gear.Job(b"reverse", b"denied"), timeout=10)
        assert "Received ERROR packet: b'PERMISSION_DENIED'" in caplog.text
        assert "CN=outsider may not submit jobs to function 'reverse'" in caplog.text

        denied_worker.registerFunction("reverse")  # answered by an ERROR, logged by gear
        wait_until(
            lambda: "CN=outsider-worker may not work on function 'reverse'" in caplog.text,
            timeout=10,
            what="gear's log of the denied CAN_DO",
        )
        ops = pki.options(pki.client("ops"))
        with AdminClient(f"{guarded.host}:{guarded.port}", tls=ops, timeout=10) as admin:
            registered = [w for w in admin.workers() if "reverse" in w.functions]
        assert [w.client_id for w in registered] == ["permitted-worker"]
    finally:
        for party, _ in parties:
            party.shutdown()


PERL_CLIENT = r"""
use strict;
use warnings;
use Gearman::Client;
my ($host, $port, $ca, $cert, $key) = @ARGV;
my $c = Gearman::Client->new(job_servers => [{ host => $host, port => $port, use_ssl => 1,
    ca_file => $ca, cert_file => $cert, key_file => $key }]);
my $r = $c->do_task("reverse", "denied", {timeout => 10});
print $r ? "result: $$r\n" : "no result\n";  # not reached: the ERROR makes it die
"""

PERL_WORKER = r"""
use strict;
use warnings;
use Gearman::Worker;
my ($host, $port, $ca, $cert, $key) = @ARGV;
my $w = Gearman::Worker->new(job_servers => [{ host => $host, port => $port, use_ssl => 1,
    ca_file => $ca, cert_file => $cert, key_file => $key }]);
$w->register_function(reverse => sub { return "never" });
my $start = time;
$w->work(stop_if => sub { return time - $start > 3; });
print "worker stopped\n";
"""


def perl_with_ssl() -> str:
    perl = need_perl()
    if subprocess.run([perl, "-MIO::Socket::SSL", "-e1"], check=False).returncode != 0:
        pytest.skip(f"Perl IO::Socket::SSL {MISSING}: apt-get install libio-socket-ssl-perl")
    return perl


def perl_args(server: ServerProcess, pki: PKI, who: ClientFiles) -> list[str]:
    return [server.host, str(server.port), str(pki.ca_file), str(who.certificate), str(who.key)]


def test_perl_permitted_and_denied(guarded: ServerProcess, pki: PKI) -> None:
    perl = perl_with_ssl()
    # PERL (the TLS client test's script) runs a worker and a client on one certificate.
    permitted = run(
        [perl, "-", *perl_args(guarded, pki, pki.client("both"))], stdin=PERL.encode(), timeout=40
    )
    assert permitted.stdout == b"result: slt revo\n", permitted.stderr

    outsider = perl_args(guarded, pki, pki.client("outsider"))
    denied = run([perl, "-", *outsider], stdin=PERL_CLIENT.encode(), timeout=40)
    assert denied.returncode != 0 and not denied.stdout
    assert b"Unimplemented packet type: error [PERMISSION_DENIED\0" in denied.stderr
    assert b"CN=outsider may not submit jobs to function 'reverse']" in denied.stderr

    worker = run([perl, "-", *outsider], stdin=PERL_WORKER.encode(), timeout=40)
    assert worker.returncode != 0
    assert b"unexpected packet type: error [PERMISSION_DENIED -- " in worker.stderr, worker.stderr
    assert b"CN=outsider may not work on function 'reverse'" in worker.stderr
