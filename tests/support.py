"""Helpers shared by the test suite: free ports and real server processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def admin_command(port: int, line: bytes, host: str = "127.0.0.1", end: bytes = b".\n") -> bytes:
    """Send one admin command and return its reply: a list (status, workers, ...) by default,
    or with ``end=b"\\n"`` a one-line value (version, verbose)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(line + b"\n")
        reply = b""
        while not reply.endswith(end):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


def wait_for_port(
    host: str, port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout}s")


@dataclass
class ServerProcess:
    """A job server running as a child process on 127.0.0.1."""

    kind: str  # "geartrain" or "gearmand"
    port: int
    proc: subprocess.Popen[bytes]
    host: str = "127.0.0.1"
    log_path: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


GEARMAND = shutil.which("gearmand") or (
    "/usr/sbin/gearmand" if os.path.exists("/usr/sbin/gearmand") else None
)


def start_geartrain(
    args: Sequence[str] = (),
    port: int | None = None,
    log_path: str | None = None,
    queue: str = "none",
) -> ServerProcess:
    """Start ``geartrain serve`` on 127.0.0.1 and wait until it accepts connections."""
    port = port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "geartrain",
        "serve",
        "-L",
        "127.0.0.1",
        "-p",
        str(port),
        "--queue",
        queue,
        *args,
    ]
    if log_path:
        with open(log_path, "ab") as log:  # the child keeps its own copy of the fd
            proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    else:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )
    server = ServerProcess("geartrain", port, proc, log_path=log_path or "")
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
    except BaseException:
        server.kill()
        raise
    return server


def start_gearmand(
    args: Sequence[str] = (), port: int | None = None, log_path: str | None = None
) -> ServerProcess:
    """Start the real C gearmand (Debian's gearman-job-server) on 127.0.0.1.

    Each gets a pid file in a private temporary directory: gearmand deletes its pid
    file when it exits, so pointing it at /dev/null would delete /dev/null.
    """
    if GEARMAND is None:
        raise RuntimeError("gearmand is not installed (apt-get install gearman-job-server)")
    port = port or free_port()
    piddir = tempfile.mkdtemp(prefix="gearmand-pid-")
    cmd = [
        GEARMAND,
        "-L",
        "127.0.0.1",
        "-p",
        str(port),
        "--threads=0",
        "-l",
        log_path or "none",
        f"--pid-file={piddir}/gearmand.pid",
        *args,
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    server = ServerProcess(
        "gearmand", port, proc, log_path=log_path or "", extra={"piddir": piddir}
    )
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
    except BaseException:
        server.kill()
        raise
    finally:
        weakref.finalize(server, shutil.rmtree, piddir, ignore_errors=True)
    return server
