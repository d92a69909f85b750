"""Real TLS clients against geartrain (and against ``gearmand --ssl`` where it speaks TLS).

openssl s_client (admin protocol), python gear (client and worker with key, certificate
and CA), Perl Gearman::Client / Gearman::Worker with ``use_ssl`` (IO::Socket::SSL), and
libgearman's ``gearman -S`` / ``gearadmin -S`` where the installed build has TLS.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import geartrain
from tests.interop.helpers import MISSING, Processes, need_perl, run, wait_until
from tests.support import ServerProcess, start_gearmand
from tests.tls.pki import PKI, ClientFiles
from tests.tls.real_clients import (
    gearmand_speaks_tls,
    gearmand_tls_args,
    libgearman_speaks_tls,
    need,
    s_client,
    talk,
)

pytestmark = [
    pytest.mark.interop,
    # gear 0.16 still calls threading.Condition.notifyAll().
    pytest.mark.filterwarnings("ignore:notifyAll:DeprecationWarning"),
    # gear 0.16 builds its context from ssl.PROTOCOL_TLS and turns TLS 1.3 off with
    # ssl.OP_NO_TLSv1_3 (so it speaks TLS 1.2).
    pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLS is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:ssl.OP_NO:DeprecationWarning"),
]


@pytest.fixture(params=["geartrain", "gearmand"])
def tls_any(
    request: pytest.FixtureRequest, pki: PKI, tls_process: Callable[..., ServerProcess]
) -> Iterator[ServerProcess]:
    """A TLS server of each kind; geartrain requires client certificates (gearmand cannot)."""
    if request.param == "geartrain":
        yield tls_process("--ssl-verify-client", "required")
        return
    if not gearmand_speaks_tls(pki):
        pytest.skip(
            "gearmand --ssl answers in plain text here: this gearmand is built without TLS "
            "(Debian's 1.1.20 is; gearmand issue #207)"
        )
    server = start_gearmand(args=gearmand_tls_args(pki))
    yield server
    server.stop()


@pytest.fixture
def client_files(pki: PKI) -> ClientFiles:
    return pki.client("real-client")


def test_openssl_s_client_runs_admin_commands(
    tls_any: ServerProcess, pki: PKI, client_files: ClientFiles
) -> None:
    cert = ["-cert", str(client_files.certificate), "-key", str(client_files.key)]
    output = talk(s_client(tls_any.port, pki, *cert), b"version\nstatus\n", until=b"\n.\n")
    assert b"\n.\n" in output, output
    if tls_any.kind == "geartrain":
        assert f"{geartrain.__version__}\n".encode() in output


def test_openssl_s_client_without_a_certificate_is_refused(
    tls_process: Callable[..., ServerProcess], pki: PKI
) -> None:
    server = tls_process("--ssl-verify-client", "required")
    version = geartrain.__version__.encode()
    output = talk(s_client(server.port, pki), b"version\n", until=version)  # or its exit
    # TLS 1.3: the client's handshake ends before the server has checked its certificate,
    # so s_client learns of the refusal when it reads
    # (an alert, the connection reset, or closed).
    assert any(sign in output for sign in (b"alert", b"errno", b"unexpected eof")), output
    assert version not in output


@pytest.fixture
def gear() -> ModuleType:
    try:
        import gear as module
    except ImportError:
        pytest.skip(f"python gear {MISSING}: pip install gear")
    assert isinstance(module, ModuleType)
    return module


def test_gear_client_and_worker_with_key_certificate_and_ca(
    gear: ModuleType, tls_any: ServerProcess, pki: PKI, client_files: ClientFiles
) -> None:
    files = (str(client_files.key), str(client_files.certificate), str(pki.ca_file))
    worker: Any = gear.Worker("tls-worker")
    client: Any = gear.Client("tls-client")
    try:
        for party in (worker, client):
            party.addServer(tls_any.host, tls_any.port, *files)
            party.waitForServer(timeout=10)
        worker.registerFunction("reverse")
        job = gear.Job(b"reverse", b"over tls")
        client.submitJob(job, timeout=10)
        with ThreadPoolExecutor(max_workers=1) as pool:
            assigned = pool.submit(worker.getJob).result(timeout=10)
        assigned.sendWorkComplete(assigned.arguments[::-1])
        wait_until(lambda: job.complete, timeout=10, what="the job's WORK_COMPLETE")
        assert b"".join(job.data) == b"slt revo"
    finally:
        worker.shutdown()
        client.shutdown()


PERL = r"""
use strict;
use warnings;
use Gearman::Client;
use Gearman::Worker;
my ($host, $port, $ca, $cert, $key) = @ARGV;
my $server = { host => $host, port => $port, use_ssl => 1,
               ca_file => $ca, cert_file => $cert, key_file => $key };
my $pid = fork();
if ($pid == 0) {
    my $w = Gearman::Worker->new(job_servers => [$server]);
    $w->register_function(reverse => sub { return scalar reverse $_[0]->arg; });
    my $done = 0;
    my $start = time;
    $w->work(on_complete => sub { $done++ },
             stop_if => sub { return $done >= 1 || time - $start > 20; });
    exit 0;
}
my $c = Gearman::Client->new(job_servers => [$server]);
my $r = $c->do_task("reverse", "over tls", {timeout => 15});
waitpid($pid, 0);
print $r ? "result: $$r\n" : "no result\n";
"""


def test_perl_client_and_worker_with_use_ssl(
    tls_any: ServerProcess, pki: PKI, client_files: ClientFiles
) -> None:
    perl = need_perl()
    if subprocess.run([perl, "-MIO::Socket::SSL", "-e1"], check=False).returncode != 0:
        pytest.skip(f"Perl IO::Socket::SSL {MISSING}: apt-get install libio-socket-ssl-perl")
    args = [tls_any.host, str(tls_any.port), str(pki.ca_file)]
    args += [str(client_files.certificate), str(client_files.key)]
    result = run([perl, "-", *args], stdin=PERL.encode(), timeout=40)
    assert result.stdout == b"result: slt revo\n", result.stderr


def test_libgearman_gearman_and_gearadmin_with_s(
    tls_any: ServerProcess, gearman_environment: ClientFiles, procs: Processes
) -> None:
    gearman = need("gearman", "gearman-tools")
    gearadmin = need("gearadmin", "gearman-tools")
    if not libgearman_speaks_tls():
        pytest.skip(
            "this libgearman sends plain text with -S: it is built without TLS "
            "(so is Debian's gearman-tools 1.1.20)"
        )
    at = ["-h", tls_any.host, "-p", str(tls_any.port)]
    worker = procs.spawn([gearman, "-S", *at, "-w", "-c", "1", "-f", "reverse", "rev"])
    result = run([gearman, "-S", *at, "-f", "reverse", "over tls"], timeout=20)
    assert result.stdout == b"slt revo\n" and result.returncode == 0, result.stderr
    procs.finish(worker)
    version = run([gearadmin, "-S", *at, "--server-version"], timeout=20)
    assert version.returncode == 0 and version.stdout.strip(), version.stderr


def test_a_libgearman_without_tls_is_turned_away_by_a_tls_port(
    tls_process: Callable[..., ServerProcess],
    gearman_environment: ClientFiles,
    tmp_path: Path,
) -> None:
    """What users of Debian's gearman-tools see: -S is accepted, plain text goes out, and
    the TLS port refuses it with a logged reason instead of hanging."""
    gearadmin = need("gearadmin", "gearman-tools")
    if libgearman_speaks_tls():
        pytest.skip("this libgearman speaks TLS: test_libgearman_gearman_and_gearadmin_with_s")
    log = tmp_path / "server.log"
    server = tls_process("--log-file", str(log))
    result = run([gearadmin, "-S", "-h", server.host, "-p", str(server.port), "--status"])
    assert result.returncode != 0 and b"\n.\n" not in result.stdout

    def refusal_logged() -> bool:
        # Plain text where a ClientHello should be: OpenSSL's words for it.
        return "failed: WRONG_VERSION_NUMBER" in log.read_text()

    wait_until(refusal_logged, what="the server's log of the refused handshake")
