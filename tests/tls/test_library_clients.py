"""The asyncio client, worker and admin client over TLS, with certificates checked both ways."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

import geartrain
from geartrain.admin import AsyncAdminClient
from geartrain.client import AsyncClient, Client
from geartrain.server.app import Server
from geartrain.tls import TLSOptions
from geartrain.worker import AsyncWorker, Job, Worker
from tests.support import ServerProcess
from tests.tls.conftest import StartServer
from tests.tls.pki import PKI


async def reverse(job: Job) -> bytes:
    return job.payload[::-1]


@asynccontextmanager
async def running_worker(address: str, tls: TLSOptions | None) -> AsyncIterator[AsyncWorker]:
    worker = AsyncWorker([address], tls=tls)
    worker.register("reverse", reverse)
    working = asyncio.create_task(worker.work(handle_signals=False))
    try:
        yield worker
    finally:
        worker.stop()
        await working


def tls_address(server: Server) -> str:
    host, port = server.tls_addresses[0]
    return f"{host}:{port}"


async def test_a_job_round_trips_over_tls_with_client_certificates_required(
    tls_server: StartServer, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="geartrain.server.connection")
    worker_tls = pki.options(pki.client("worker-1"))
    client_tls = pki.options(pki.client("client-1"))
    async with tls_server(ssl=True, ssl_verify_client="required") as server:
        address = tls_address(server)
        async with (
            running_worker(address, worker_tls),
            AsyncClient([address], timeout=10, tls=client_tls) as client,
        ):
            assert await client.call("reverse", "over tls") == b"slt revo"
            identities = {c.identity.common_name for c in server.connections if c.identity}
            assert identities == {"worker-1", "client-1"}
            names = {n for c in server.connections if c.identity for n in c.identity.names}
            assert names == {"worker-1", "client-1"}
    assert "CN=client-1" in caplog.text and "CN=worker-1" in caplog.text


async def test_admin_commands_over_tls(tls_server: StartServer, pki: PKI) -> None:
    async with (
        tls_server(ssl=True) as server,
        AsyncAdminClient(tls_address(server), tls=pki.options()) as admin,
    ):
        assert await admin.version() == geartrain.__version__


async def test_plain_and_tls_listeners_side_by_side(tls_server: StartServer, pki: PKI) -> None:
    async with tls_server(ssl_port=0) as server:
        plain = [a for a in server.addresses if a not in server.tls_addresses]
        assert len(plain) == 1 and len(server.tls_addresses) == 1
        host, port = plain[0]
        async with (
            running_worker(f"{host}:{port}", None),
            AsyncClient([tls_address(server)], timeout=10, tls=pki.options()) as client,
        ):
            # submitted over TLS, worked over plain TCP: one scheduler behind both
            assert await client.call("reverse", "mixed") == b"dexim"


async def test_a_large_spooled_payload_crosses_tls_both_ways(
    tls_server: StartServer, pki: PKI
) -> None:
    payload = os.urandom(3 * 1024 * 1024)  # above the spool threshold below: kept in a file
    async with tls_server(ssl=True, spool_threshold=65536) as server:
        address = tls_address(server)
        async with (
            running_worker(address, pki.options()),
            AsyncClient([address], timeout=30, tls=pki.options()) as client,
        ):
            assert await client.call("reverse", payload) == payload[::-1]


async def test_the_server_name_can_differ_from_the_address(
    tls_server: StartServer, pki: PKI
) -> None:
    async with tls_server(ssl=True) as server:
        _, port = server.tls_addresses[0]
        options = pki.options(server_name="localhost")
        async with AsyncAdminClient(("127.0.0.1", port), tls=options) as admin:
            assert await admin.version() == geartrain.__version__
        wrong = pki.options(server_name="elsewhere.example")
        async with AsyncAdminClient(("127.0.0.1", port), tls=wrong, timeout=5) as admin:
            with pytest.raises(Exception, match="certificate"):
                await admin.version()


def test_the_blocking_client_and_worker_over_tls(
    tls_process: Callable[..., ServerProcess], pki: PKI
) -> None:
    server = tls_process("--ssl-verify-client", "required", "--spool-threshold", "65536")
    address = f"{server.host}:{server.port}"
    worker = Worker([address], tls=pki.options(pki.client("blocking-worker")))
    worker.register("reverse", lambda job: job.payload[::-1])
    working = threading.Thread(target=worker.work, kwargs={"max_jobs": 2, "max_time": 60})
    working.start()
    try:
        with Client([address], timeout=30, tls=pki.options(pki.client("blocking-client"))) as c:
            assert c.call("reverse", "small") == b"llams"
            # many TLS records in one read: what select cannot see must still be delivered
            payload = os.urandom(3 * 1024 * 1024)
            assert c.call("reverse", payload) == payload[::-1]
    finally:
        working.join(30)
        worker.close()
    assert not working.is_alive() and worker.jobs_done == 2
