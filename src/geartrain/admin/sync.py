"""Blocking admin client: one connection, one command at a time."""

from __future__ import annotations

import os
import socket
import time

from geartrain.client.servers import Address, parse_address
from geartrain.errors import ConnectionLost, GeartrainTimeout

from .core import (
    AdminProtocol,
    AdminReply,
    FunctionStatus,
    JobInfo,
    PriorityStatus,
    Shape,
    WorkerInfo,
    check_word,
    maxqueue_command,
    parse_jobs,
    parse_priority_status,
    parse_status,
    parse_unique_jobs,
    parse_workers,
)

#: Seconds to wait for a connection or a reply.
TIMEOUT = 10.0


def resolve(server: str | Address | None) -> Address:
    """An admin target: an address, ``host[:port]``, or the first of ``GEARMAN_SERVERS``."""
    if server is None:
        spec = os.environ.get("GEARMAN_SERVERS") or os.environ.get("GEARMAN_SERVER") or ""
        server = spec.split(",")[0] or "127.0.0.1"
    if isinstance(server, str):
        return parse_address(server)
    return (server[0], int(server[1]))


class AdminClient:
    """Administrative commands against one job server.

    Args:
        server: ``host[:port]`` or ``(host, port)``; None reads the environment
            like the client does.
        timeout: seconds for connecting and for each reply.

    Every method raises :class:`geartrain.errors.AdminError` when the server
    answers ``ERR``, :class:`ConnectionLost` when the connection breaks and
    :class:`GeartrainTimeout` when no reply comes in time.
    """

    def __init__(self, server: str | Address | None = None, *, timeout: float = TIMEOUT) -> None:
        self.address = resolve(server)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._protocol = AdminProtocol()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (reopened by the next command)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def send(self, line: str | bytes, shape: Shape) -> AdminReply:
        """Send any command and return its raw reply (``ERR`` is not raised here)."""
        reply = self._protocol.command(line, shape)
        self._exchange(reply)
        return reply

    # -- commands -----------------------------------------------------------------

    def status(self) -> list[FunctionStatus]:
        """``status``: every known function with its job and worker counts."""
        return parse_status(self.send("status", Shape.LIST).check().lines)

    def priority_status(self) -> list[PriorityStatus]:
        """``prioritystatus``: queued jobs per priority for every function."""
        return parse_priority_status(self.send("prioritystatus", Shape.LIST).check().lines)

    def workers(self) -> list[WorkerInfo]:
        """``workers``: every connection and the functions it registered."""
        return parse_workers(self.send("workers", Shape.LIST).check().lines)

    def jobs(self) -> list[JobInfo]:
        """``show jobs``: every job the server holds."""
        return parse_jobs(self.send("show jobs", Shape.LIST).check().lines)

    def unique_jobs(self) -> list[str]:
        """``show unique jobs``: the unique id of every job."""
        return parse_unique_jobs(self.send("show unique jobs", Shape.LIST).check().lines)

    def cancel_job(self, handle: str) -> None:
        """``cancel job HANDLE``: waiting clients get WORK_FAIL."""
        self.send(f"cancel job {check_word(handle)}", Shape.OK).check()

    def create_function(self, function: str) -> None:
        """``create function NAME``: make a function known with no jobs or workers."""
        self.send(f"create function {check_word(function)}", Shape.OK).check()

    def drop_function(self, function: str) -> None:
        """``drop function NAME``: forget a function that has no workers or running jobs."""
        self.send(f"drop function {check_word(function)}", Shape.OK).check()

    def maxqueue(self, function: str, *limits: int) -> None:
        """``maxqueue``: no limit argument resets; one applies to all priorities; or H N L."""
        self.send(maxqueue_command(check_word(function), limits), Shape.OK).check()

    def version(self) -> str:
        """``version``: the server's version string."""
        return self.send("version", Shape.VALUE).check().value.decode()

    def verbose(self) -> str:
        """``verbose``: the server's log level name."""
        return self.send("verbose", Shape.VALUE).check().value.decode()

    def getpid(self) -> int:
        """``getpid``: the server's process id."""
        return int(self.send("getpid", Shape.VALUE).check().value)

    def ping(self) -> float:
        """Round-trip time in seconds of an ECHO_REQ on the admin connection."""
        token = os.urandom(8).hex().encode()
        started = time.perf_counter()
        reply = self._protocol.ping(token)
        self._exchange(reply)
        reply.check()
        if reply.value != token:
            raise ConnectionLost("echo returned other data")
        return time.perf_counter() - started

    # -- internals ----------------------------------------------------------------

    def _exchange(self, reply: AdminReply) -> None:
        try:
            self._io(reply)
        except (ConnectionLost, GeartrainTimeout):
            # The stream is out of step with the pending replies: start afresh.
            self._reset()
            raise

    def _io(self, reply: AdminReply) -> None:
        sock = self._connect()
        deadline = time.monotonic() + self.timeout
        try:
            sock.sendall(self._protocol.data_to_send())
            while not reply.done:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                data = sock.recv(65536)
                if not data:
                    raise ConnectionLost("server closed the admin connection")
                self._protocol.receive_data(data)
        except TimeoutError:
            raise GeartrainTimeout("no admin reply in time") from None
        except OSError as exc:
            raise ConnectionLost(str(exc)) from exc

    def _connect(self) -> socket.socket:
        if self._sock is None:
            try:
                self._sock = socket.create_connection(self.address, timeout=self.timeout)
            except TimeoutError:
                raise GeartrainTimeout(f"cannot connect to {self.address}") from None
            except OSError as exc:
                raise ConnectionLost(f"cannot connect to {self.address}: {exc}") from exc
        return self._sock

    def _reset(self) -> None:
        self.close()
        self._protocol = AdminProtocol()
