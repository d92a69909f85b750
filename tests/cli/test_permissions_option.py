"""``geartrain serve --permissions`` and ``permissions =`` in the config file; SIGHUP rereads it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.interop.helpers import wait_until
from tests.support import admin_command, start_geartrain

ADMIN_READ = '[[grant]]\nidentity = {address = "127.0.0.1"}\nadmin = "read"\n'


def test_serve_refuses_a_broken_permissions_file_before_starting(tmp_path: Path) -> None:
    rules = tmp_path / "permissions.toml"
    rules.write_text('[[grant]]\nidentity = {cn = "x"}\nadmin = "root"\n')
    command = [sys.executable, "-m", "geartrain", "serve", "--queue", "none", "--check-args"]
    result = subprocess.run(
        [*command, "--permissions", str(rules)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert f'{rules}: grant #1: admin must be "none", "read" or "write"' in result.stderr


def test_the_config_files_permissions_are_reread_on_sighup(tmp_path: Path) -> None:
    rules = tmp_path / "permissions.toml"
    rules.write_text("[default]\n")  # nobody may do anything
    config = tmp_path / "geartrain.toml"
    config.write_text(f'[server]\npermissions = "{rules}"\n')
    log = tmp_path / "server.log"
    server = start_geartrain(args=["-c", str(config)], log_path=str(log))
    try:
        denied = admin_command(server.port, b"status", end=b"\n")
        assert denied.startswith(b"ERR PERMISSION_DENIED address+127.0.0.1+may+not+run+'status'")
        rules.write_text(ADMIN_READ)
        server.proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: admin_command(server.port, b"status") == b".\n",
            timeout=10,
            what="admin read granted by the reloaded file",
        )
        rules.write_text("[[grant]]\nidentity = {address = 'not an address'}\n")
        server.proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: "permissions not reloaded, the old rules stay in use" in log.read_text(),
            timeout=10,
            what="the broken file's error in the log",
        )
        assert admin_command(server.port, b"status") == b".\n"  # the old rules stand
    finally:
        assert server.stop() == 0
    text = log.read_text()
    assert "'not an address' is not an address or CIDR" in text
    assert "permission denied: address 127.0.0.1 (from 127.0.0.1) may not run 'status'" in text
