"""Fixtures for the TLS tests: certificates, and in-process servers speaking TLS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from geartrain.server.app import Server
from geartrain.server.config import Settings
from tests.interop.helpers import Processes
from tests.support import ServerProcess, start_geartrain
from tests.tls.pki import PKI, ClientFiles, make_pki

StartServer = Callable[..., AbstractAsyncContextManager[Server]]


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return make_pki(tmp_path)


def tls_settings(pki: PKI, **options: Any) -> Settings:
    """Settings for a loopback server on free ports, with TLS from ``pki``."""
    values: dict[str, Any] = {
        "listen": ["127.0.0.1"],
        "port": 0,
        "queue": "none",
        "ssl_certificate": str(pki.server_certificate),
        "ssl_key": str(pki.server_key),
        "ssl_ca_file": str(pki.ca_file),
    }
    values.update(options)
    return Settings(**values)


@pytest.fixture
def tls_server(pki: PKI) -> StartServer:
    """``async with tls_server(ssl=True, ...) as server``: a TLS server, stopped at the end."""

    @asynccontextmanager
    async def start(**options: Any) -> AsyncIterator[Server]:
        server = Server(tls_settings(pki, **options))
        serving = asyncio.create_task(server.serve(install_signal_handlers=False))
        try:
            await server.wait_started()
            yield server
        finally:
            server.request_stop()
            await serving

    return start


@pytest.fixture
def procs() -> Iterator[Processes]:
    """Background programs (workers, real clients); whatever still runs is stopped after."""
    group = Processes()
    yield group
    group.stop_all()


@pytest.fixture
def tls_process(pki: PKI) -> Iterator[Callable[..., ServerProcess]]:
    """Start ``geartrain serve --ssl`` with ``pki``'s files and extra options; stopped after."""
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        server = start_geartrain(args=["--ssl", *pki.server_args(), *args])
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def gearman_environment(pki: PKI, monkeypatch: pytest.MonkeyPatch) -> ClientFiles:
    """libgearman's variables name our CA and a client certificate (CN gearman-client)."""
    client = pki.client("gearman-client")
    monkeypatch.setenv("GEARMAND_CA_CERTIFICATE", str(pki.ca_file))
    monkeypatch.setenv("GEARMAN_CLIENT_PEM", str(client.certificate))
    monkeypatch.setenv("GEARMAN_CLIENT_KEY", str(client.key))
    return client
