"""``geartrain certs`` makes files a TLS server and its clients accept as they are."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

from click.testing import CliRunner

import geartrain
from geartrain.admin import AsyncAdminClient
from geartrain.cli.main import cli
from geartrain.server.app import Server
from geartrain.server.config import Settings
from geartrain.tls import TLSOptions


def certs(*args: str) -> None:
    result = CliRunner().invoke(cli, ["certs", *args])
    assert result.exit_code == 0, result.output


async def identity_seen(directory: Path, client: str, server_name: str | None = None) -> str:
    """Serve with the made files (client certificates required); return the CN seen."""
    settings = Settings(
        listen=["127.0.0.1"],
        port=0,
        queue="none",
        ssl=True,
        ssl_certificate=str(directory / "server.pem"),
        ssl_key=str(directory / "server.key"),
        ssl_ca_file=str(directory / "ca.pem"),
        ssl_verify_client="required",
    )
    server = Server(settings)
    serving = asyncio.create_task(server.serve(install_signal_handlers=False))
    try:
        await server.wait_started()
        tls = TLSOptions(
            ca_file=str(directory / "ca.pem"),
            certificate=str(directory / f"{client}.pem"),
            key=str(directory / f"{client}.key"),
            server_name=server_name,
        )
        async with AsyncAdminClient(("127.0.0.1", server.port), tls=tls) as admin:
            assert await admin.version() == geartrain.__version__
            (connection,) = server.connections
            assert connection.identity is not None
            return str(connection.identity.common_name)
    finally:
        server.request_stop()
        await serving


async def test_made_files_serve_and_verify_as_they_are(tmp_path: Path) -> None:
    certs("--out", str(tmp_path), "--client", "worker-1")
    assert await identity_seen(tmp_path, "worker-1") == "worker-1"
    for key in ("ca.key", "server.key", "worker-1.key"):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600


async def test_a_second_run_signs_more_clients_with_the_same_ca(tmp_path: Path) -> None:
    certs("--out", str(tmp_path), "--client", "worker-1")
    ca = (tmp_path / "ca.pem").read_bytes()
    server = (tmp_path / "server.pem").read_bytes()
    certs("--out", str(tmp_path), "--client", "client-2")
    assert (tmp_path / "ca.pem").read_bytes() == ca
    assert (tmp_path / "server.pem").read_bytes() == server  # no --server-name: kept
    assert await identity_seen(tmp_path, "worker-1") == "worker-1"
    assert await identity_seen(tmp_path, "client-2") == "client-2"


async def test_the_server_certificate_carries_the_names_given(tmp_path: Path) -> None:
    certs("--out", str(tmp_path), "--server-name", "gear.example.org", "--client", "c")
    assert await identity_seen(tmp_path, "c", server_name="gear.example.org") == "c"


def test_an_unusable_name_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["certs", "--out", str(tmp_path), "--client", "../x"])
    assert result.exit_code == 1 and "unusable certificate name" in result.output
