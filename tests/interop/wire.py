"""Raw Gearman sockets for byte-exact checks, and admin-protocol shortcuts.

The packet constants are written out independently of ``geartrain.protocol`` on purpose: these
tests check the server against the wire format the real clients use, not against our codec.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from enum import IntEnum

from tests.interop.helpers import wait_until
from tests.support import ServerProcess

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
        fields: dict[int, int] = {P.JOB_ASSIGN: 2, P.JOB_ASSIGN_UNIQ: 3, P.JOB_ASSIGN_ALL: 4}
        nargs = fields[got]
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
