"""The geartrain commands over TLS: -S, libgearman's variables, and serve's own checks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import geartrain
from tests.interop.helpers import Processes
from tests.support import ServerProcess, start_geartrain
from tests.tls.pki import PKI, ClientFiles

GEARTRAIN = [sys.executable, "-m", "geartrain"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GEARTRAIN, *args], capture_output=True, text=True, timeout=30, check=False
    )


def at(server: ServerProcess) -> list[str]:
    return ["-h", server.host, "-p", str(server.port)]


def test_submit_work_and_admin_speak_tls_with_gearmans_variables(
    tls_process: Callable[..., ServerProcess],
    gearman_environment: ClientFiles,
    procs: Processes,
) -> None:
    server = tls_process("--ssl-verify-client", "required")
    worker = procs.spawn(
        [*GEARTRAIN, "work", "-S", *at(server), "-f", "upper", "-c", "1", "--", "tr", "a-z", "A-Z"]
    )
    submitted = run("submit", "-S", *at(server), "-f", "upper", "over tls")
    assert (submitted.returncode, submitted.stdout) == (0, "OVER TLS"), submitted.stderr
    assert procs.finish(worker).returncode == 0
    version = run("admin", "-S", *at(server), "version")
    assert (version.returncode, version.stdout) == (0, f"{geartrain.__version__}\n")


def test_without_s_the_commands_do_not_reach_a_tls_server(
    tls_process: Callable[..., ServerProcess], gearman_environment: ClientFiles
) -> None:
    server = tls_process()
    plain = run("admin", *at(server), "--timeout", "3", "version")
    assert plain.returncode != 0 and geartrain.__version__ not in plain.stdout


def test_the_client_checks_the_servers_name(
    tls_process: Callable[..., ServerProcess], gearman_environment: ClientFiles
) -> None:
    server = tls_process()
    wrong = run("admin", "-S", "--ssl-server-name", "elsewhere.example", *at(server), "version")
    assert wrong.returncode != 0 and "certificate" in wrong.stderr
    unchecked = run(
        "admin",
        "-S",
        "--ssl-no-verify",
        "--ssl-server-name",
        "elsewhere.example",
        *at(server),
        "version",
    )
    assert unchecked.stdout == f"{geartrain.__version__}\n", unchecked.stderr


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--ssl"], "TLS needs a certificate"),
        (["--ssl-port", "0", "--ssl-certificate", "{tmp}/missing.pem"], "cannot load the TLS"),
        (
            ["--ssl", "--ssl-certificate", "{server}", "--ssl-verify-client", "required"],
            "needs --ssl-ca-file",
        ),
        (["--ssl-min-version", "TLSv1.1"], "Invalid value"),
    ],
)
def test_serve_refuses_unusable_tls_before_starting(
    pki: PKI, tmp_path: Path, args: list[str], error: str
) -> None:
    values = {"tmp": str(tmp_path), "server": str(pki.server_certificate)}
    result = run("serve", "--queue", "none", "--check-args", *[a.format(**values) for a in args])
    assert result.returncode == 2 and error in result.stderr, result.stderr


def test_serve_reads_tls_options_from_its_config_file(
    pki: PKI, tmp_path: Path, gearman_environment: ClientFiles, procs: Processes
) -> None:
    config = tmp_path / "geartrain.toml"
    config.write_text(
        "[server]\n"
        f'ssl = true\nssl-certificate = "{pki.server_certificate}"\n'
        f'ssl-key = "{pki.server_key}"\nssl-ca-file = "{pki.ca_file}"\n'
        'ssl-verify-client = "required"\nssl-min-version = "TLSv1.3"\n'
    )
    server = start_geartrain(args=["-c", str(config)])
    try:
        version = run("admin", "-S", *at(server), "version")
        assert version.stdout == f"{geartrain.__version__}\n", version.stderr
    finally:
        server.stop()
