"""In-process servers on free ports, and a raw protocol client to poke them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, Protocol

import pytest

from geartrain.protocol.codec import Decoder, Packet, as_bytes, encode_request
from geartrain.protocol.constants import RES
from geartrain.server.app import Server, StartupError
from geartrain.server.config import Settings
from geartrain.server.persistence.base import QueueStore


class RawClient:
    """A bare Gearman connection: send packets or admin lines, read replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = Decoder(expect=RES, text=False)
        self.pending: list[Packet] = []

    def send(self, ptype: int, *args: bytes, data: bytes = b"") -> None:
        self.writer.write(encode_request(ptype, *args, data=data))

    def send_raw(self, raw: bytes) -> None:
        self.writer.write(raw)

    async def packet(self, wait: float = 5.0) -> Packet:
        async with asyncio.timeout(wait):
            while not self.pending:
                chunk = await self.reader.read(1 << 20)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                for event in self.decoder.feed(chunk):
                    assert isinstance(event, Packet), event
                    self.pending.append(event)
        return self.pending.pop(0)

    async def packets(
        self, count: int, wait: float = 5.0
    ) -> list[tuple[int, tuple[bytes, ...], bytes]]:
        out = []
        for _ in range(count):
            p = await self.packet(wait)
            out.append((p.type, p.args, as_bytes(p.data)))
        return out

    async def admin(self, line: bytes, wait: float = 5.0) -> bytes:
        """Send an admin line; read one reply (a list ends with '.\\n')."""
        self.writer.write(line + b"\r\n")
        buf = b""
        async with asyncio.timeout(wait):
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    return buf
                buf += chunk
                if buf.startswith((b"OK", b"ERR")) and buf.endswith(b"\n"):
                    return buf
                if buf == b".\n" or buf.endswith(b"\n.\n"):
                    return buf

    async def closed(self, wait: float = 5.0) -> bool:
        async with asyncio.timeout(wait):
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    return True
                for event in self.decoder.feed(chunk):
                    if isinstance(event, Packet):
                        self.pending.append(event)

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError):
            await self.writer.wait_closed()


class Connect(Protocol):
    """The ``connect`` fixture: a new :class:`RawClient` to the test's server, or to another."""

    async def __call__(self, target: Server | None = None) -> RawClient: ...


@asynccontextmanager
async def running_server(store: QueueStore | None = None, **options: Any) -> AsyncIterator[Server]:
    """A server on a free loopback port, run by Server.serve as an application would."""
    settings = Settings(listen=["127.0.0.1"], port=0, queue="none", **options)
    async with serving(Server(settings, store)) as server:
        yield server


@asynccontextmanager
async def serving(server: Server) -> AsyncIterator[Server]:
    """Run ``server.serve()`` in a task for the block; stop it and wait for it after."""
    task = asyncio.create_task(server.serve(install_signal_handlers=False))
    try:
        await server.wait_started()
    except StartupError:
        await task  # raises the failure itself, with its cause
        raise
    try:
        yield server
    finally:
        server.request_stop()
        await task


ServerFactory = Callable[..., Any]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with running_server(job_handle_prefix="H:test") as srv:
        yield srv


@pytest.fixture
async def connect(server: Server) -> AsyncIterator[Connect]:
    clients: list[RawClient] = []

    async def factory(target: Server | None = None) -> RawClient:
        host, port = (target or server).addresses[0]
        reader, writer = await asyncio.open_connection(host, port)
        client = RawClient(reader, writer)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()
