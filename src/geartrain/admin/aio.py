"""asyncio admin client, the same commands as :class:`geartrain.admin.AdminClient`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from geartrain.client.servers import Address
from geartrain.errors import ConnectionLost, GeartrainError, GeartrainTimeout

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
from .sync import TIMEOUT, resolve


class AsyncAdminClient:
    """Administrative commands against one job server, for asyncio.

    Arguments and errors are those of :class:`geartrain.admin.AdminClient`.
    Commands on one client are serialised; use several clients for parallelism.
    """

    def __init__(self, server: str | Address | None = None, *, timeout: float = TIMEOUT) -> None:
        self.address = resolve(server)
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._protocol = AdminProtocol()
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> AsyncAdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection (reopened by the next command)."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def send(self, line: str | bytes, shape: Shape) -> AdminReply:
        """Send any command and return its raw reply (``ERR`` is not raised here)."""
        async with self._lock:
            reply = self._protocol.command(line, shape)
            await self._exchange(reply)
            return reply

    async def status(self) -> list[FunctionStatus]:
        """``status``."""
        return parse_status((await self.send("status", Shape.LIST)).check().lines)

    async def priority_status(self) -> list[PriorityStatus]:
        """``prioritystatus``."""
        return parse_priority_status((await self.send("prioritystatus", Shape.LIST)).check().lines)

    async def workers(self) -> list[WorkerInfo]:
        """``workers``."""
        return parse_workers((await self.send("workers", Shape.LIST)).check().lines)

    async def jobs(self) -> list[JobInfo]:
        """``show jobs``."""
        return parse_jobs((await self.send("show jobs", Shape.LIST)).check().lines)

    async def unique_jobs(self) -> list[str]:
        """``show unique jobs``."""
        return parse_unique_jobs((await self.send("show unique jobs", Shape.LIST)).check().lines)

    async def cancel_job(self, handle: str) -> None:
        """``cancel job HANDLE``."""
        (await self.send(f"cancel job {check_word(handle)}", Shape.OK)).check()

    async def create_function(self, function: str) -> None:
        """``create function NAME``."""
        (await self.send(f"create function {check_word(function)}", Shape.OK)).check()

    async def drop_function(self, function: str) -> None:
        """``drop function NAME``."""
        (await self.send(f"drop function {check_word(function)}", Shape.OK)).check()

    async def maxqueue(self, function: str, *limits: int) -> None:
        """``maxqueue NAME [N | H N L]``."""
        (await self.send(maxqueue_command(check_word(function), limits), Shape.OK)).check()

    async def version(self) -> str:
        """``version``."""
        return (await self.send("version", Shape.VALUE)).check().value.decode()

    async def verbose(self) -> str:
        """``verbose``."""
        return (await self.send("verbose", Shape.VALUE)).check().value.decode()

    async def getpid(self) -> int:
        """``getpid``."""
        return int((await self.send("getpid", Shape.VALUE)).check().value)

    async def ping(self) -> float:
        """Round-trip time in seconds of an ECHO_REQ on the admin connection."""
        token = os.urandom(8).hex().encode()
        async with self._lock:
            started = time.perf_counter()
            reply = self._protocol.ping(token)
            await self._exchange(reply)
        reply.check()
        if reply.value != token:
            raise ConnectionLost("echo returned other data")
        return time.perf_counter() - started

    async def _exchange(self, reply: AdminReply) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self._io(reply)
        except TimeoutError:
            await self._reset()
            raise GeartrainTimeout("no admin reply in time") from None
        except OSError as exc:
            await self._reset()
            raise ConnectionLost(str(exc)) from exc
        except GeartrainError:
            await self._reset()
            raise

    async def _io(self, reply: AdminReply) -> None:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(*self.address)
        assert self._reader is not None
        self._writer.write(self._protocol.data_to_send())
        while not reply.done:
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionLost("server closed the admin connection")
            self._protocol.receive_data(data)

    async def _reset(self) -> None:
        await self.close()
        self._protocol = AdminProtocol()
