"""libgearman's ``gearman`` and ``gearadmin`` (plain TCP) under address rules: what each shows
for a denial. Debian's libgearman has no TLS, so these clients are known by their address.

* ``gearman`` (client): ``GEARMAN_SERVER_ERROR PERMISSION_DENIED:<text>`` on stderr, and
  exit status 0 (as for every server error).
* ``gearman -w`` (worker): CAN_DO has no reply, so libgearman reads the ERROR as the answer
  to its GRAB_JOB: ``gearman_worker_grab_job(GEARMAN_UNEXPECTED_PACKET)``; it is never given
  a job of the function.
* ``gearadmin``: ``Error: PERMISSION_DENIED <text with + for spaces>`` on stderr, exit 0.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.helpers import Processes, gearadmin, gearman, gearman_cmd, wait_until
from tests.support import ServerProcess, admin_command, start_geartrain

pytestmark = pytest.mark.interop

RULES = """
[[grant]]
identity = {address = "127.0.0.1"}
submit = ["open-*"]
work = ["open-*"]
admin = "read"
"""


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[ServerProcess]:
    rules = tmp_path / "permissions.toml"
    rules.write_text(RULES)
    server = start_geartrain(args=["--permissions", str(rules)])
    yield server
    server.stop()


def test_gearman_client_permitted_and_denied(guarded: ServerProcess, procs: Processes) -> None:
    procs.spawn(gearman_cmd(guarded, "-w", "-f", "open-reverse", "-c", "1", "--", "rev"))
    wait_until(
        lambda: b"open-reverse" in admin_command(guarded.port, b"status"),
        timeout=10,
        what="the worker's registration",
    )
    permitted = gearman(guarded, "-f", "open-reverse", "-s", "hello")
    assert permitted.stdout.strip() == b"olleh", permitted.stderr
    for mode in ("-s", "-b"):  # foreground, background
        denied = gearman(guarded, "-f", "secret", mode, "hello")
        assert b"GEARMAN_SERVER_ERROR" in denied.stderr, denied.stderr
        assert (
            b"PERMISSION_DENIED:address 127.0.0.1 may not submit jobs to function 'secret'"
            in denied.stderr
        )
        assert not denied.stdout


def test_gearman_worker_denied_is_given_nothing(guarded: ServerProcess, tmp_path: Path) -> None:
    errors = tmp_path / "worker.err"
    with errors.open("wb") as sink:
        worker = subprocess.Popen(
            gearman_cmd(guarded, "-w", "-f", "secret", "--", "cat"),
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        wait_until(
            lambda: b"GEARMAN_UNEXPECTED_PACKET" in errors.read_bytes(),
            timeout=10,
            what="libgearman's report of the ERROR",
        )
        permitted = gearman(guarded, "-f", "open-x", "-b", "job")
        assert (permitted.returncode, permitted.stderr) == (0, b"")
        assert b"secret" not in admin_command(guarded.port, b"workers")
        assert b"secret" not in admin_command(guarded.port, b"status")
    finally:
        worker.terminate()
        worker.wait(10)


def test_gearadmin_reads_but_may_not_change(guarded: ServerProcess) -> None:
    assert gearadmin(guarded, "--status").stdout == b".\n"
    denied = gearadmin(guarded, "--create-function", "open-2")
    assert denied.stderr.strip() == (
        b"Error: PERMISSION_DENIED "
        b"address+127.0.0.1+may+not+run+'create+function+open-2'+(needs+admin+write)"
    )
    assert b"open-2" not in admin_command(guarded.port, b"status")
