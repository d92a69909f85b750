"""asyncio admin client, the same commands as :class:`geartrain.admin.AdminClient`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TypeVar

from geartrain.client.servers import Address
from geartrain.client.transport import open_stream
from geartrain.errors import ConnectionLost, GeartrainError, GeartrainTimeout
from geartrain.tls import ClientTLS, TLSArgument

from . import core

T = TypeVar("T")


class AsyncAdminClient:
    """Administrative commands against one job server, for asyncio.

    Arguments and errors are those of :class:`geartrain.admin.AdminClient`.
    Commands on one client are serialised; use several clients for parallelism.
    """

    def __init__(
        self,
        server: str | Address | None = None,
        *,
        timeout: float = core.TIMEOUT,
        tls: TLSArgument = None,
    ) -> None:
        self.address = core.resolve(server)
        self.timeout = timeout
        self.tls = ClientTLS.of(tls)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._protocol = core.AdminProtocol()
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

    async def send(self, line: str | bytes, shape: core.Shape) -> core.AdminReply:
        """Send any command and return its raw reply (``ERR`` is not raised here)."""
        async with self._lock:
            reply = self._protocol.command(line, shape)
            await self._exchange(reply)
            return reply

    async def status(self) -> list[core.FunctionStatus]:
        """``status``."""
        return await self._run(core.STATUS)

    async def priority_status(self) -> list[core.PriorityStatus]:
        """``prioritystatus``."""
        return await self._run(core.PRIORITY_STATUS)

    async def workers(self) -> list[core.WorkerInfo]:
        """``workers``."""
        return await self._run(core.WORKERS)

    async def jobs(self) -> list[core.JobInfo]:
        """``show jobs``."""
        return await self._run(core.JOBS)

    async def unique_jobs(self) -> list[str]:
        """``show unique jobs``."""
        return await self._run(core.UNIQUE_JOBS)

    async def cancel_job(self, handle: str) -> None:
        """``cancel job HANDLE``."""
        await self._run(core.cancel_job(handle))

    async def create_function(self, function: str) -> None:
        """``create function NAME``."""
        await self._run(core.create_function(function))

    async def drop_function(self, function: str) -> None:
        """``drop function NAME``."""
        await self._run(core.drop_function(function))

    async def maxqueue(self, function: str, *limits: int) -> None:
        """``maxqueue NAME [N | H N L]``."""
        await self._run(core.maxqueue(function, limits))

    async def version(self) -> str:
        """``version``."""
        return await self._run(core.VERSION)

    async def verbose(self) -> str:
        """``verbose``."""
        return await self._run(core.VERBOSE)

    async def getpid(self) -> int:
        """``getpid``."""
        return await self._run(core.GETPID)

    async def ping(self) -> float:
        """Round-trip time in seconds of an ECHO_REQ on the admin connection."""
        token = core.ping_token()
        async with self._lock:
            started = time.perf_counter()
            reply = self._protocol.ping(token)
            await self._exchange(reply)
        core.check_echo(reply, token)
        return time.perf_counter() - started

    async def _run(self, command: core.Command[T]) -> T:
        return command.parse((await self.send(command.line, command.shape)).check())

    async def _exchange(self, reply: core.AdminReply) -> None:
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

    async def _io(self, reply: core.AdminReply) -> None:
        if self._writer is None:
            self._reader, self._writer = await open_stream(self.address, self.tls)
        assert self._reader is not None
        self._writer.write(self._protocol.data_to_send())
        while not reply.done:
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionLost("server closed the admin connection")
            self._protocol.receive_data(data)

    async def _reset(self) -> None:
        await self.close()
        self._protocol = core.AdminProtocol()
