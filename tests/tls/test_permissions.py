"""Permissions by certificate identity: CN and subjectAltName rules over TLS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from geartrain.admin import AsyncAdminClient
from geartrain.client import AsyncClient
from geartrain.errors import AdminError, ServerError
from geartrain.protocol.constants import ErrorCode
from geartrain.protocol.constants import PacketType as P
from geartrain.server.app import Server
from tests.server.conftest import RawClient
from tests.tls.conftest import StartServer
from tests.tls.pki import PKI, ClientFiles
from tests.tls.test_library_clients import running_worker, tls_address

RULES = """
[[grant]]
identity = {cn = "worker-*"}
work = ["reverse"]

[[grant]]
identity = {dns = "client-*"}
submit = ["reverse"]

[[grant]]
identity = {cn = "ops"}
admin = "write"

[[grant]]
identity = {address = "127.0.0.1"}
admin = "write"
"""


@pytest.fixture
def rules(tmp_path: Path) -> str:
    path = tmp_path / "permissions.toml"
    path.write_text(RULES)
    return str(path)


@asynccontextmanager
async def tls_raw(server: Server, pki: PKI, client: ClientFiles) -> AsyncIterator[RawClient]:
    """A raw Gearman connection over TLS with ``client``'s certificate."""
    context = pki.options(client).context()
    host, port = server.tls_addresses[0]
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    raw = RawClient(reader, writer)
    try:
        yield raw
    finally:
        await raw.close()


async def test_certificate_names_grant_work_and_submit(
    tls_server: StartServer, pki: PKI, rules: str
) -> None:
    worker_tls = pki.options(pki.client("worker-1"))
    client_tls = pki.options(pki.client("client-1"))
    async with tls_server(ssl=True, ssl_verify_client="required", permissions=rules) as server:
        address = tls_address(server)
        async with (
            running_worker(address, worker_tls),
            AsyncClient([address], timeout=10, tls=client_tls) as client,
        ):
            assert await client.call("reverse", "granted") == b"detnarg"
        # The worker's certificate may work, not submit; the client's the other way round.
        async with AsyncClient([address], timeout=10, tls=worker_tls) as impostor:
            with pytest.raises(ServerError) as denied:
                await impostor.call("reverse", "not mine")
        assert denied.value.code == "PERMISSION_DENIED"
        assert "CN=worker-1 may not submit jobs to function 'reverse'" in str(denied.value)
        async with tls_raw(server, pki, pki.client("client-2")) as raw:
            raw.send(P.CAN_DO, b"reverse")
            raw.send(P.ECHO_REQ, data=b"on")
            [(kind, (code, text), _), echo] = await raw.packets(2)
            assert (kind, code) == (P.ERROR, ErrorCode.PERMISSION_DENIED)
            assert b"may not work on function 'reverse'" in text
            assert echo == (P.ECHO_RES, (), b"on")
        assert server.counters.permission_denied == {"submit": 1, "work": 1}


async def test_a_certificate_holder_is_not_judged_by_its_address(
    tls_server: StartServer, pki: PKI, rules: str
) -> None:
    # Both listeners are on 127.0.0.1, which may administer: but only without a certificate.
    async with tls_server(ssl_port=0, ssl_verify_client="optional", permissions=rules) as server:
        host, port = server.addresses[0]
        async with AsyncAdminClient(f"{host}:{port}") as plain:
            await plain.create_function("made-on-loopback")
        tls_address_ = tls_address(server)
        async with AsyncAdminClient(tls_address_, tls=pki.options(pki.client("client-1"))) as c:
            with pytest.raises(AdminError, match="PERMISSION_DENIED"):
                await c.status()
        async with AsyncAdminClient(tls_address_, tls=pki.options(pki.client("ops"))) as ops:
            await ops.create_function("made-by-ops")
        assert {b"made-on-loopback", b"made-by-ops"} <= set(server.scheduler.functions)


async def test_requests_sent_with_the_end_of_the_handshake_are_judged_by_the_certificate(
    tls_server: StartServer, pki: PKI, rules: str
) -> None:
    # A TLS 1.3 client writes right after its Finished: the server may read those requests
    # before the connection knows its certificate. They wait for it, never pass unjudged.
    worker = pki.client("worker-9")
    async with tls_server(ssl=True, ssl_verify_client="required", permissions=rules) as server:
        for _ in range(10):
            async with tls_raw(server, pki, worker) as raw:
                raw.send(P.SUBMIT_JOB_BG, b"reverse", b"", data=b"x")
                raw.send(P.CAN_DO, b"reverse")
                raw.send(P.ECHO_REQ, data=b"done")
                [(kind, (code, text), _), echo] = await raw.packets(2)
                assert (kind, code) == (P.ERROR, ErrorCode.PERMISSION_DENIED)
                assert text.endswith(b",CN=worker-9 may not submit jobs to function 'reverse'")
                assert echo == (P.ECHO_RES, (), b"done")
        # The CAN_DOs were allowed (a worker-* certificate), none of the submits.
        assert server.scheduler.functions[b"reverse"].total == 0
        assert server.counters.permission_denied == {"submit": 10}
