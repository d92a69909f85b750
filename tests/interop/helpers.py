"""Helpers for the interop tests: real client programs, scripts and raw Gearman sockets.

Every subprocess gets a timeout and every wait loop has a deadline, so a server that hangs
makes a test fail instead of stalling the suite. The packet constants here are written out
independently of ``geartrain.protocol`` on purpose: these tests check the server against the
wire format the real clients use, not against our own codec.
"""

from __future__ import annotations

import functools
import re
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

import pytest

from tests.support import ServerProcess

T = TypeVar("T")

# Skip reasons for a missing client all contain this text; with CI set, tests/conftest.py turns
# such skips of interop tests into failures so that CI proves every client really ran.
MISSING = "not installed"

REQ = b"\0REQ"
RES = b"\0RES"


class P(IntEnum):
    """Gearman packet type numbers (PROTOCOL.md §3)."""

    CAN_DO = 1
    CANT_DO = 2
    RESET_ABILITIES = 3
    PRE_SLEEP = 4
    NOOP = 6
    SUBMIT_JOB = 7
    JOB_CREATED = 8
    GRAB_JOB = 9
    NO_JOB = 10
    JOB_ASSIGN = 11
    WORK_STATUS = 12
    WORK_COMPLETE = 13
    WORK_FAIL = 14
    GET_STATUS = 15
    ECHO_REQ = 16
    ECHO_RES = 17
    SUBMIT_JOB_BG = 18
    ERROR = 19
    STATUS_RES = 20
    SUBMIT_JOB_HIGH = 21
    SET_CLIENT_ID = 22
    CAN_DO_TIMEOUT = 23
    ALL_YOURS = 24
    WORK_EXCEPTION = 25
    OPTION_REQ = 26
    OPTION_RES = 27
    WORK_DATA = 28
    WORK_WARNING = 29
    GRAB_JOB_UNIQ = 30
    JOB_ASSIGN_UNIQ = 31
    SUBMIT_JOB_HIGH_BG = 32
    SUBMIT_JOB_LOW = 33
    SUBMIT_JOB_LOW_BG = 34
    SUBMIT_JOB_SCHED = 35
    SUBMIT_JOB_EPOCH = 36
    SUBMIT_REDUCE_JOB = 37
    SUBMIT_REDUCE_JOB_BACKGROUND = 38
    GRAB_JOB_ALL = 39
    JOB_ASSIGN_ALL = 40
    GET_STATUS_UNIQUE = 41
    STATUS_RES_UNIQUE = 42


# --------------------------------------------------------------------------- waiting


def wait_until(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate!r}")
        time.sleep(interval)


# --------------------------------------------------------------------------- tools present


def need_program(name: str, package: str) -> str:
    """Path of an installed program, or skip the test naming the Debian package to install."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} {MISSING}: apt-get install {package}")
    return path


@functools.cache
def _php_has_gearman() -> bool:
    php = shutil.which("php")
    if php is None:
        return False
    probe = subprocess.run(
        [php, "-r", 'exit(extension_loaded("gearman") ? 0 : 1);'],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return probe.returncode == 0


def need_php() -> str:
    php = need_program("php", "php-cli php-gearman")
    if not _php_has_gearman():
        pytest.skip(f"PHP gearman extension {MISSING}: apt-get install php-gearman")
    return php


@functools.cache
def _perl_has(module: str) -> bool:
    perl = shutil.which("perl")
    if perl is None:
        return False
    probe = subprocess.run(
        [perl, f"-M{module}", "-e", "1"], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


def need_perl() -> str:
    perl = need_program("perl", "perl libgearman-client-perl")
    for module in ("Gearman::Client", "Gearman::Worker"):
        if not _perl_has(module):
            pytest.skip(f"Perl {module} {MISSING}: apt-get install libgearman-client-perl")
    return perl


# --------------------------------------------------------------------------- subprocesses


@dataclass
class Result:
    """What a finished program printed and returned."""

    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def ok(self) -> Result:
        """Assert a zero exit status and return self (for chaining)."""
        assert self.returncode == 0, (
            f"exit {self.returncode}\nstdout: {self.out}\nstderr: {self.err}"
        )
        return self


def run(cmd: Sequence[str], stdin: bytes = b"", timeout: float = 20.0) -> Result:
    """Run a program to completion with ``stdin`` as input; fail the test on timeout."""
    try:
        done = subprocess.run(
            list(cmd), input=stdin, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{' '.join(cmd)} did not finish within {timeout}s; "
            f"stdout={exc.stdout!r} stderr={exc.stderr!r}"
        )
    return Result(done.returncode, done.stdout, done.stderr)


class Processes:
    """Background programs started by one test; all are stopped when the test ends."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, cmd: Sequence[str], stdin: bytes | None = None) -> subprocess.Popen[bytes]:
        """Start ``cmd``; ``stdin`` (for example a script) is written and then closed."""
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._procs.append(proc)
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
            proc.stdin = None  # communicate() must not flush the closed pipe later
        return proc

    @staticmethod
    def finish(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> Result:
        """Wait for a spawned program to exit by itself and collect its output."""
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=5)
            pytest.fail(
                f"{proc.args!r} did not exit within {timeout}s; stdout={out!r} stderr={err!r}"
            )
        return Result(proc.returncode, out, err)

    def stop_all(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate(timeout=5)


# --------------------------------------------------------------------------- real clients


def gearadmin(server: ServerProcess, *options: str, timeout: float = 15.0) -> Result:
    tool = need_program("gearadmin", "gearman-tools")
    return run([tool, "-h", server.host, "-p", str(server.port), *options], timeout=timeout)


def gearman_cmd(server: ServerProcess, *args: str) -> list[str]:
    """Command line of the ``gearman`` CLI pointed at ``server`` (client or worker mode)."""
    tool = need_program("gearman", "gearman-tools")
    return [tool, "-h", server.host, "-p", str(server.port), *args]


def gearman(server: ServerProcess, *args: str, stdin: bytes = b"", timeout: float = 15.0) -> Result:
    return run(gearman_cmd(server, *args), stdin=stdin, timeout=timeout)


def php_cmd(server: ServerProcess, *args: str) -> list[str]:
    """``php`` reading its script from stdin; the script sees $argv = [-, host, port, args...]."""
    return [need_php(), "--", server.host, str(server.port), *args]


def perl_cmd(server: ServerProcess, *args: str) -> list[str]:
    """``perl`` reading its script from stdin; the script sees @ARGV = (host:port, args...)."""
    return [need_perl(), "-", f"{server.host}:{server.port}", *args]


def run_php(server: ServerProcess, code: str, *args: str, timeout: float = 20.0) -> Result:
    return run(php_cmd(server, *args), stdin=code.encode(), timeout=timeout)


def run_perl(server: ServerProcess, code: str, *args: str, timeout: float = 20.0) -> Result:
    return run(perl_cmd(server, *args), stdin=code.encode(), timeout=timeout)


# --------------------------------------------------------------------------- raw sockets


def packet(ptype: int, *fields: bytes, magic: bytes = REQ) -> bytes:
    """One binary packet; ``fields`` are joined with single zero bytes (PROTOCOL.md §2.1)."""
    body = b"\0".join(fields)
    return magic + struct.pack(">II", ptype, len(body)) + body


class Conn:
    """A blocking Gearman connection for byte-exact checks."""

    def __init__(self, server: ServerProcess | tuple[str, int], timeout: float = 5.0) -> None:
        address = server.address if isinstance(server, ServerProcess) else server
        self.sock = socket.create_connection(address, timeout=timeout)
        self.timeout = timeout
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, ptype: int, *fields: bytes) -> None:
        self.sock.sendall(packet(ptype, *fields))

    def _fill(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def read_exact(self, n: int, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"wanted {n} bytes, have {self.buf!r}")
            self._fill(remaining)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def recv(self, timeout: float | None = None) -> tuple[int, bytes]:
        """Next packet from the server as (type, body); it must carry the response magic."""
        header = self.read_exact(12, timeout)
        magic, ptype, size = header[:4], *struct.unpack(">II", header[4:])
        assert magic == RES, f"bad magic in {header!r}"
        return ptype, self.read_exact(size, timeout)

    def expect(self, ptype: int, timeout: float | None = None) -> bytes:
        got, body = self.recv(timeout)
        assert got == ptype, f"expected {P(ptype).name}, got {_name(got)} {body!r}"
        return body

    def request(self, ptype: int, *fields: bytes, reply: int) -> bytes:
        self.send(ptype, *fields)
        return self.expect(reply)

    def sync(self) -> None:
        """Round-trip an ECHO so that everything sent before it has been processed."""
        assert self.request(P.ECHO_REQ, b"sync", reply=P.ECHO_RES) == b"sync"

    def submit(
        self, function: bytes, unique: bytes, data: bytes, ptype: int = P.SUBMIT_JOB
    ) -> bytes:
        """Submit a job and return its handle from JOB_CREATED."""
        return self.request(ptype, function, unique, data, reply=P.JOB_CREATED)

    def register(self, *functions: bytes, client_id: bytes | None = None) -> None:
        """SET_CLIENT_ID (optional) and CAN_DO for each function, then sync."""
        if client_id is not None:
            self.send(P.SET_CLIENT_ID, client_id)
        for function in functions:
            self.send(P.CAN_DO, function)
        self.sync()

    def nothing_pending(self, wait: float = 0.3) -> bool:
        """True when the server sends nothing within ``wait`` seconds."""
        if self.buf:
            return False
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return True
        self.buf += chunk
        return False

    def closed_by_server(self, wait: float = 3.0) -> bool:
        """True when the server closes the connection (drains what it sends first)."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
            if not chunk:
                return True
            self.buf += chunk
        return False

    def admin(self, line: bytes | str, ending: bytes = b"\r\n") -> bytes:
        """Send one admin line and return its complete reply (shapes of PROTOCOL.md §12.1)."""
        if isinstance(line, str):
            line = line.encode()
        self.send_raw(line + ending)
        return self.read_admin_reply()

    def read_admin_reply(self) -> bytes:
        deadline = time.monotonic() + self.timeout
        while True:
            end = _admin_reply_end(self.buf)
            if end:
                reply, self.buf = self.buf[:end], self.buf[end:]
                return reply
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"incomplete admin reply {self.buf!r}")
            self._fill(remaining)

    # Worker shortcuts -------------------------------------------------------------------

    def grab(self, ptype: int = P.GRAB_JOB_UNIQ) -> tuple[int, list[bytes]]:
        """GRAB and split the assignment; returns (reply type, fields) - fields empty for NO_JOB."""
        self.send(ptype)
        got, body = self.recv()
        if got == P.NO_JOB:
            return got, []
        nargs = {P.JOB_ASSIGN: 2, P.JOB_ASSIGN_UNIQ: 3, P.JOB_ASSIGN_ALL: 4}[got]
        return got, body.split(b"\0", nargs)

    def grab_next(self, ptype: int = P.GRAB_JOB_UNIQ, timeout: float = 10.0) -> list[bytes]:
        """GRAB until a job is assigned (polling, bounded); returns the assignment's fields."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kind, assigned = self.grab(ptype)
            if kind != P.NO_JOB:
                return assigned
            time.sleep(0.05)
        raise TimeoutError(f"no job assigned within {timeout}s")


def _admin_reply_end(buf: bytes) -> int:
    """Length of the first complete admin reply in ``buf``, or 0."""
    if buf.startswith((b"OK", b"ERR")):
        return buf.find(b"\n") + 1
    if buf.startswith(b".\n"):
        return 2
    end = buf.find(b"\n.\n")
    return end + 3 if end >= 0 else 0


def _name(ptype: int) -> str:
    try:
        return P(ptype).name
    except ValueError:
        return str(ptype)


def admin(server: ServerProcess, line: str) -> bytes:
    """One admin command on a fresh connection."""
    with Conn(server) as conn:
        return conn.admin(line)


def status(server: ServerProcess) -> dict[str, tuple[int, int, int]]:
    """Parsed ``status``: function -> (total, running, workers)."""
    table: dict[str, tuple[int, int, int]] = {}
    for line in admin(server, "status").decode().splitlines():
        if line == ".":
            break
        name, total, running, workers = line.rsplit("\t", 3)
        table[name] = (int(total), int(running), int(workers))
    return table


def wait_workers(
    server: ServerProcess, function: str, count: int = 1, timeout: float = 15.0
) -> None:
    """Wait until ``function`` has at least ``count`` registered workers."""

    def registered() -> bool:
        return status(server).get(function, (0, 0, 0))[2] >= count

    wait_until(registered, timeout, what=f"{count} worker(s) for {function!r}")


def wait_jobs(server: ServerProcess, function: str, total: int, timeout: float = 15.0) -> None:
    """Wait until ``status`` counts exactly ``total`` jobs for ``function``."""

    def counted() -> bool:
        return status(server).get(function, (0, 0, 0))[0] == total

    wait_until(counted, timeout, what=f"{total} job(s) for {function!r}")


def server_alive(server: ServerProcess) -> None:
    """Assert that the server still answers on a new connection (binary and text)."""
    assert server.proc.poll() is None, f"{server.kind} exited with {server.proc.returncode}"
    with Conn(server) as conn:
        assert conn.request(P.ECHO_REQ, b"still-alive", reply=P.ECHO_RES) == b"still-alive"
        assert conn.admin("status").endswith(b".\n")


# --------------------------------------------------------------------------- normalising


_HANDLE = re.compile(rb"H:[^\s\x00]*:\d+")


def normalise_handles(data: bytes, seen: dict[bytes, bytes] | None = None) -> bytes:
    """Replace job handles by ``<H1>``, ``<H2>`` … in order of first appearance.

    ``seen`` carries names across calls; pre-filling it names handles by submission order,
    which is what to do when the text lists them in an order that differs between servers.

    Handles embed the host name (gearmand: ``H:<uname -n>:N``) and are opaque to clients, so only
    their identity matters when two servers are compared.
    """
    table = {} if seen is None else seen

    def repl(match: re.Match[bytes]) -> bytes:
        return table.setdefault(match.group(0), b"<H%d>" % (len(table) + 1))

    return _HANDLE.sub(repl, data)
