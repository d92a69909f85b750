"""Start and stop the job servers under test, each on a free port of 127.0.0.1.

A server command is a template with ``{port}`` (and optionally ``{tmp}``, a
private directory removed afterwards) that runs the server in the foreground.
It is started directly, without a shell, in its own session, so the PID we
sample is the server itself and stopping the session leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

GEARMAND_ARGS = "-L 127.0.0.1 -p {port} --threads=0 -q builtin -l none --hashtable-buckets=100003"
GEARTRAIN_ARGS = "-m geartrain serve -L 127.0.0.1 -p {port}"


#: geartrain refuses packets over 64 MiB by default (gearmand has no cap); rows with
#: bigger payloads start it with a cap that fits them.
BIG_PACKET_ARGS = "--max-packet-size 536870912"


@dataclass
class ServerSpec:
    name: str
    command: str  # template: {port}, {tmp}
    big_args: str = ""  # appended for payloads over 64 MiB
    goals: bool = True  # the goals apply (not to variants shown for information)

    def command_for(self, payload_size: int) -> str:
        if self.big_args and payload_size > 64 << 20:
            return f"{self.command} {self.big_args}"
        return self.command


def default_specs(sqlite: bool) -> list[ServerSpec]:
    """gearmand (when installed) as the reference, then geartrain."""
    specs = []
    gearmand = shutil.which("gearmand") or (
        "/usr/sbin/gearmand" if os.access("/usr/sbin/gearmand", os.X_OK) else None
    )
    if gearmand:
        specs.append(ServerSpec("gearmand", f"{gearmand} {GEARMAND_ARGS}"))
    python = shlex.quote(sys.executable)
    geartrain = f"{python} {GEARTRAIN_ARGS}"
    specs.append(ServerSpec("geartrain", f"{geartrain} --queue none", BIG_PACKET_ARGS))
    if sqlite:
        cmd = f"{geartrain} --queue sqlite:///{{tmp}}/q.db"
        specs.append(ServerSpec("geartrain-sqlite", cmd, BIG_PACKET_ARGS, goals=False))
    return specs


def version_of(spec: ServerSpec) -> str:
    """The server's own version string, or '?'."""
    argv = shlex.split(spec.command)
    if "geartrain" in argv:
        argv = [*argv[: argv.index("geartrain") + 1], "--version"]
    else:
        argv = [*argv[:1], "--version"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Server:
    """One running server process."""

    def __init__(
        self, spec: ServerSpec, log_path: str, payload_size: int = 0, start_timeout: float = 20.0
    ) -> None:
        self.spec = spec
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="geartrain-bench-")
        command = spec.command_for(payload_size)
        argv = shlex.split(command.format(port=self.port, tmp=self.tmp))
        with open(log_path, "ab") as log:
            log.write(f"\n=== {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        self.pid = self.proc.pid
        deadline = time.monotonic() + start_timeout
        while not _listening(self.port):
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"{spec.name} exited with {self.proc.returncode}; see {log_path}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{spec.name} did not listen within {start_timeout:.0f} s")
            time.sleep(0.02)
        time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # the session we created, and only it
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def running(spec: ServerSpec, log_path: str, payload_size: int = 0) -> Iterator[Server]:
    server = Server(spec, log_path, payload_size)
    try:
        yield server
    finally:
        server.stop()
