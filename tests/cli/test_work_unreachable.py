"""``geartrain work`` pointed where nothing listens: it says so on stderr and keeps trying."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

from geartrain.client import Client
from tests.support import free_port, start_geartrain


def read_stderr(proc: subprocess.Popen[bytes], seconds: float) -> bytes:
    """What the process wrote on stderr within ``seconds`` (it keeps running)."""
    assert proc.stderr is not None
    out = b""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([proc.stderr], [], [], remaining)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            out += chunk
    return out


def test_work_reports_a_server_it_cannot_reach_and_serves_once_it_is_up() -> None:
    port = free_port()  # nobody listens there yet
    proc = subprocess.Popen(
        [sys.executable, "-m", "geartrain", "work", "-p", str(port), "-f", "echo", "-c", "1"],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        # Long enough for several attempts (0.5 s backoff, doubling): one line, not one each.
        said = read_stderr(proc, 2.5)
        assert (
            said
            == (
                f"geartrain work: cannot connect to 127.0.0.1:{port}: "
                "[Errno 111] Connection refused; retrying\n"
            ).encode()
        )
        assert proc.poll() is None, "gave up instead of retrying"
        server = start_geartrain(port=port)
        try:
            with Client([server.address], timeout=30) as client:
                assert client.call("echo", b"at last") == b"at last"
            assert proc.wait(20) == 0
        finally:
            server.stop()
        assert proc.stderr is not None
        rest = proc.stderr.read().decode()
        assert rest.startswith(f"geartrain work: connected to 127.0.0.1:{port} after ")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
