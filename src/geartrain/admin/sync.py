"""Blocking admin client: one connection, one command at a time."""

from __future__ import annotations

import socket
import time
from typing import TypeVar

from geartrain.client.servers import Address
from geartrain.client.transport import connect
from geartrain.errors import ConnectionLost, GeartrainTimeout
from geartrain.tls import ClientTLS, TLSArgument

from . import core
from .core import TIMEOUT, resolve

# TIMEOUT and resolve lived here first and stay importable from here.
__all__ = ["TIMEOUT", "AdminClient", "resolve"]

T = TypeVar("T")


class AdminClient:
    """Administrative commands against one job server.

    Args:
        server: ``host[:port]`` or ``(host, port)``; None reads the environment
            like the client does.
        timeout: seconds for connecting and for each reply.
        tls: speak TLS: :class:`geartrain.tls.TLSOptions` or an ``ssl.SSLContext``;
            None = plain TCP.

    Every method raises :class:`geartrain.errors.AdminError` when the server
    answers ``ERR``, :class:`ConnectionLost` when the connection breaks and
    :class:`GeartrainTimeout` when no reply comes in time.
    """

    def __init__(
        self,
        server: str | Address | None = None,
        *,
        timeout: float = TIMEOUT,
        tls: TLSArgument = None,
    ) -> None:
        self.address = resolve(server)
        self.timeout = timeout
        self.tls = ClientTLS.of(tls)
        self._sock: socket.socket | None = None
        self._protocol = core.AdminProtocol()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (reopened by the next command)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def send(self, line: str | bytes, shape: core.Shape) -> core.AdminReply:
        """Send any command and return its raw reply (``ERR`` is not raised here)."""
        reply = self._protocol.command(line, shape)
        self._exchange(reply)
        return reply

    # -- commands -----------------------------------------------------------------

    def status(self) -> list[core.FunctionStatus]:
        """``status``: every known function with its job and worker counts."""
        return self._run(core.STATUS)

    def priority_status(self) -> list[core.PriorityStatus]:
        """``prioritystatus``: queued jobs per priority for every function."""
        return self._run(core.PRIORITY_STATUS)

    def workers(self) -> list[core.WorkerInfo]:
        """``workers``: every connection and the functions it registered."""
        return self._run(core.WORKERS)

    def jobs(self) -> list[core.JobInfo]:
        """``show jobs``: every job the server holds."""
        return self._run(core.JOBS)

    def unique_jobs(self) -> list[str]:
        """``show unique jobs``: the unique id of every job."""
        return self._run(core.UNIQUE_JOBS)

    def cancel_job(self, handle: str) -> None:
        """``cancel job HANDLE``: waiting clients get WORK_FAIL."""
        self._run(core.cancel_job(handle))

    def create_function(self, function: str) -> None:
        """``create function NAME``: make a function known with no jobs or workers."""
        self._run(core.create_function(function))

    def drop_function(self, function: str) -> None:
        """``drop function NAME``: forget a function that has no workers or running jobs."""
        self._run(core.drop_function(function))

    def maxqueue(self, function: str, *limits: int) -> None:
        """``maxqueue``: no limit argument resets; one applies to all priorities; or H N L."""
        self._run(core.maxqueue(function, limits))

    def version(self) -> str:
        """``version``: the server's version string."""
        return self._run(core.VERSION)

    def verbose(self) -> str:
        """``verbose``: the server's log level name."""
        return self._run(core.VERBOSE)

    def getpid(self) -> int:
        """``getpid``: the server's process id."""
        return self._run(core.GETPID)

    def ping(self) -> float:
        """Round-trip time in seconds of an ECHO_REQ on the admin connection."""
        token = core.ping_token()
        started = time.perf_counter()
        reply = self._protocol.ping(token)
        self._exchange(reply)
        core.check_echo(reply, token)
        return time.perf_counter() - started

    # -- internals ----------------------------------------------------------------

    def _run(self, command: core.Command[T]) -> T:
        return command.parse(self.send(command.line, command.shape).check())

    def _exchange(self, reply: core.AdminReply) -> None:
        try:
            self._io(reply)
        except (ConnectionLost, GeartrainTimeout):
            # The stream is out of step with the pending replies: start afresh.
            self._reset()
            raise

    def _io(self, reply: core.AdminReply) -> None:
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
                self._sock = connect(self.address, self.tls, self.timeout)
            except TimeoutError:
                raise GeartrainTimeout(f"cannot connect to {self.address}") from None
            except OSError as exc:
                raise ConnectionLost(f"cannot connect to {self.address}: {exc}") from exc
        return self._sock

    def _reset(self) -> None:
        self.close()
        self._protocol = core.AdminProtocol()
