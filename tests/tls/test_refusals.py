"""Peers the TLS listener must turn away: each gets a clear outcome, is logged, and leaves
every other connection undisturbed."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import random
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

import geartrain
from geartrain.admin import AsyncAdminClient
from geartrain.errors import ConnectionLost
from geartrain.server.app import Server
from geartrain.server.metrics import exposition
from geartrain.tls import TLSOptions
from tests.tls.conftest import StartServer
from tests.tls.pki import PKI

#: Seconds any refused peer may take to be shown the door, far above what it takes.
BOUND = 10.0
NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture(autouse=True)
def _notices(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="geartrain.server.tls")


@asynccontextmanager
async def bystander(server: Server, tls: TLSOptions) -> AsyncIterator[AsyncAdminClient]:
    """An admin connection opened before the refusals and checked after them."""
    host, port = server.tls_addresses[0]
    async with AsyncAdminClient((host, port), tls=tls, timeout=BOUND) as admin:
        assert await admin.version() == geartrain.__version__
        yield admin
        assert await admin.version() == geartrain.__version__


async def refused_admin(server: Server, tls: TLSOptions) -> str:
    """Try one admin command with ``tls``; return the client's error."""
    async with AsyncAdminClient(server.tls_addresses[0], tls=tls, timeout=BOUND) as admin:
        with pytest.raises((ConnectionLost, ssl.SSLError, OSError)) as failure:
            await admin.version()
    return str(failure.value)


async def closed_within_bound(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends before it closes; fails if it does not close in time."""
    received = b""
    async with asyncio.timeout(BOUND):
        while chunk := await reader.read(65536):
            received += chunk
    return received


@pytest.mark.parametrize(
    ("client_name", "validity", "logged"),
    [
        (
            "expired",
            (NOW - datetime.timedelta(days=30), NOW - datetime.timedelta(days=1)),
            "expired",
        ),
        (
            "early",
            (NOW + datetime.timedelta(days=1), NOW + datetime.timedelta(days=30)),
            "not yet valid",
        ),
    ],
)
async def test_a_client_certificate_out_of_its_validity_is_refused(
    tls_server: StartServer,
    pki: PKI,
    caplog: pytest.LogCaptureFixture,
    client_name: str,
    validity: tuple[datetime.datetime, datetime.datetime],
    logged: str,
) -> None:
    good = pki.options(pki.client("good"))
    bad = pki.client(client_name, not_before=validity[0], not_after=validity[1])
    async with (
        tls_server(ssl=True, ssl_verify_client="required") as server,
        bystander(server, good),
    ):
        await refused_admin(server, pki.options(bad))
    assert "TLS handshake with 127.0.0.1 port" in caplog.text
    assert logged in caplog.text


async def test_a_client_certificate_from_another_ca_is_refused(
    tls_server: StartServer, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = pki.client("stranger", ca=trustme.CA())
    async with (
        tls_server(ssl=True, ssl_verify_client="optional") as server,
        bystander(server, pki.options()),
    ):
        await refused_admin(server, pki.options(stranger))
    assert "unable to get local issuer certificate" in caplog.text


async def test_no_client_certificate_where_one_is_required(
    tls_server: StartServer, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        tls_server(ssl=True, ssl_verify_client="required") as server,
        bystander(server, pki.options(pki.client("good"))),
    ):
        await refused_admin(server, pki.options())
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in caplog.text


async def test_optional_client_certificates_let_anonymous_clients_in(
    tls_server: StartServer, pki: PKI
) -> None:
    async with (
        tls_server(ssl=True, ssl_verify_client="optional") as server,
        bystander(server, pki.options()),
    ):
        assert [c.identity for c in server.connections] == [None]


async def test_a_client_that_trusts_another_ca_refuses_the_server(
    tls_server: StartServer, pki: PKI, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other_ca = tmp_path_factory.mktemp("other") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    async with tls_server(ssl=True) as server, bystander(server, pki.options()):
        error = await refused_admin(server, TLSOptions(ca_file=str(other_ca)))
    assert "certificate verify failed" in error


async def test_plain_tcp_to_a_tls_port_is_closed_and_logged(
    tls_server: StartServer, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    async with tls_server(ssl=True) as server, bystander(server, pki.options()):
        reader, writer = await asyncio.open_connection(*server.tls_addresses[0])
        writer.write(b"version\n")
        assert b"OK" not in await closed_within_bound(reader)
        writer.close()
    assert "WRONG_VERSION_NUMBER" in caplog.text or "wrong version number" in caplog.text


async def test_garbage_on_a_tls_port_is_closed_and_logged(
    tls_server: StartServer, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    # Garbage that reads as the start of a long TLS record is waited for until the
    # handshake timeout; anything else is refused at once.
    async with (
        tls_server(ssl=True, ssl_handshake_timeout=1.0) as server,
        bystander(server, pki.options()),
    ):
        for _ in range(3):
            reader, writer = await asyncio.open_connection(*server.tls_addresses[0])
            writer.write(b"\x16\x03\x01" + os.urandom(4096))
            await closed_within_bound(reader)
            writer.close()
    assert caplog.text.count("TLS handshake with 127.0.0.1") >= 3


async def test_a_handshake_that_never_finishes_is_cut_off(
    tls_server: StartServer, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        tls_server(ssl=True, ssl_handshake_timeout=0.5) as server,
        bystander(server, pki.options()),
    ):
        reader, writer = await asyncio.open_connection(*server.tls_addresses[0])
        assert await closed_within_bound(reader) == b""  # we never said hello
        writer.close()
        assert server.tls is not None and not server.tls.pending
    assert "taking longer than 0.5 seconds" in caplog.text


async def test_tls_to_a_plain_port_fails_within_the_connect_timeout(
    tls_server: StartServer, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with tls_server(ssl_port=0) as server:
        plain = next(a for a in server.addresses if a not in server.tls_addresses)
        async with bystander(server, pki.options()):
            async with AsyncAdminClient(plain, tls=pki.options(), timeout=2) as admin:
                with pytest.raises((ConnectionLost, ssl.SSLError, OSError, TimeoutError)):
                    await admin.version()
            async with AsyncAdminClient(plain, timeout=BOUND) as admin:  # plain still works
                assert await admin.version() == geartrain.__version__
    # The ClientHello is no Gearman packet: the server answers ERROR and closes, which the
    # client reports as a failed handshake.
    assert "bad input from 127.0.0.1" in caplog.text and "INVALID_MAGIC" in caplog.text
    assert "WRONG_VERSION_NUMBER" in caplog.text


def client_hello(pki: PKI) -> bytes:
    """The first bytes a real TLS client sends (made in memory, no socket)."""
    context = pki.options().context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def mutations(hello: bytes, count: int) -> list[bytes]:
    """Truncated and bit-flipped ClientHellos, the same for every run (fixed seed)."""
    rng = random.Random(11)
    cuts = [hello[: rng.randrange(1, len(hello))] for _ in range(count // 2)]
    flips = []
    for _ in range(count - len(cuts)):
        damaged = bytearray(hello)
        for _ in range(rng.randrange(1, 8)):
            damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        flips.append(bytes(damaged))
    return cuts + flips


async def test_damaged_client_hellos_are_cut_off_and_the_server_carries_on(
    tls_server: StartServer, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    attempts = mutations(client_hello(pki), 40)

    async def attempt(data: bytes) -> None:
        reader, writer = await asyncio.open_connection(*server.tls_addresses[0])
        writer.write(data)
        await closed_within_bound(reader)  # refused at once, or at the handshake timeout
        writer.close()

    async with (
        tls_server(ssl=True, ssl_handshake_timeout=1.0) as server,
        bystander(server, pki.options()),
    ):
        await asyncio.gather(*(attempt(data) for data in attempts))
        assert server.tls is not None and not server.tls.pending
        assert len(server.connections) == 1  # the bystander, nothing else got in
        body, _ = exposition(server)
        [failures] = [
            sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
            if sample.name == "geartrain_tls_handshake_failures_total"
        ]
        assert failures == server.tls.handshake_failures >= len(attempts)
    assert caplog.text.count("TLS handshake with 127.0.0.1") >= len(attempts)
