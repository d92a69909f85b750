"""New certificate files are taken on SIGHUP (or reload_tls) for new connections only."""

from __future__ import annotations

import signal
import ssl
from pathlib import Path

import pytest

import geartrain
from geartrain.admin import AdminClient, AsyncAdminClient
from geartrain.errors import ConnectionLost
from tests.interop.helpers import wait_until
from tests.support import start_geartrain
from tests.tls.conftest import StartServer
from tests.tls.pki import PKI, make_pki


def reissue(pki: PKI, directory: Path) -> PKI:
    """A new CA and server certificate, written over ``pki``'s server files."""
    fresh = make_pki(directory)
    pki.server_certificate.write_bytes(fresh.server_certificate.read_bytes())
    pki.server_key.write_bytes(fresh.server_key.read_bytes())
    return fresh


async def test_reload_takes_new_files_for_new_connections_only(
    tls_server: StartServer, pki: PKI, tmp_path_factory: pytest.TempPathFactory
) -> None:
    async with tls_server(ssl=True) as server:
        address = server.tls_addresses[0]
        async with AsyncAdminClient(address, tls=pki.options()) as established:
            assert await established.version() == geartrain.__version__
            fresh = reissue(pki, tmp_path_factory.mktemp("fresh"))
            assert server.reload_tls()
            async with AsyncAdminClient(address, tls=fresh.options()) as new:
                assert await new.version() == geartrain.__version__
            async with AsyncAdminClient(address, tls=pki.options(), timeout=5) as old:
                with pytest.raises((ConnectionLost, ssl.SSLError)):
                    await old.version()
            # the connection made before the reload carries on
            assert await established.version() == geartrain.__version__


async def test_a_reload_with_broken_files_keeps_the_old_ones(
    tls_server: StartServer, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    async with tls_server(ssl=True) as server:
        pki.server_certificate.write_text("not a certificate\n")
        assert not server.reload_tls()
        async with AsyncAdminClient(server.tls_addresses[0], tls=pki.options()) as admin:
            assert await admin.version() == geartrain.__version__
    assert "TLS files not reloaded, the old ones stay in use" in caplog.text


def test_sighup_reloads_the_files_named_by_gearmands_variables(
    pki: PKI, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEARMAND_SERVER_PEM", str(pki.server_certificate))
    monkeypatch.setenv("GEARMAND_SERVER_KEY", str(pki.server_key))
    server = start_geartrain(args=["--ssl"])
    try:
        with AdminClient(server.address, tls=pki.options(), timeout=10) as established:
            assert established.version() == geartrain.__version__
            fresh = reissue(pki, tmp_path_factory.mktemp("fresh"))
            server.proc.send_signal(signal.SIGHUP)

            def fresh_accepted() -> bool:
                try:
                    with AdminClient(server.address, tls=fresh.options(), timeout=5) as new:
                        return new.version() == geartrain.__version__
                except (ConnectionLost, ssl.SSLError):
                    return False

            wait_until(fresh_accepted, timeout=10, what="the reissued certificate in use")
            assert established.version() == geartrain.__version__
    finally:
        assert server.stop() == 0
