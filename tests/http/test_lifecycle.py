"""The HTTP listener's place in the server's start and stop."""

from __future__ import annotations

import asyncio
import socket
import sys

import aiohttp
import pytest

from geartrain.server.app import Server, StartupError
from geartrain.server.config import Settings

from .conftest import base_url, http_server, until


async def test_off_by_default_and_addresses_recorded_when_on() -> None:
    async with http_server(http_port=None) as server:
        assert server.http is None and server.http_addresses == []
    async with http_server() as server:
        ((host, port),) = server.http_addresses
        assert host == "127.0.0.1" and port > 0 and port != server.port


async def test_http_listen_binds_its_own_addresses() -> None:
    async with http_server(http_listen=["127.0.0.1", "127.0.0.1"]) as server:
        # Two sites, each on its own free port; the Gearman listener is unaffected.
        assert len(server.http_addresses) == 2
        assert server.addresses[0][0] == "127.0.0.1"


async def test_a_busy_http_port_is_a_startup_error_and_nothing_stays_open() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(listen=["127.0.0.1"], port=0, http_port=port, queue="none")
        server = Server(settings)
        with pytest.raises(StartupError, match="cannot listen for HTTP"):
            await server.start()
    assert all(not listener.is_serving() for listener in server.listeners)
    assert server.http is None


async def test_without_aiohttp_the_http_port_is_a_clear_startup_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [m for m in sys.modules if m.startswith("geartrain.server.http")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # import aiohttp now fails
    server = Server(Settings(listen=["127.0.0.1"], port=0, http_port=0, queue="none"))
    with pytest.raises(StartupError, match=r"pip install 'geartrain\[http\]'"):
        await server.start()
    assert all(not listener.is_serving() for listener in server.listeners)


async def test_stop_ends_requests_still_waiting_for_jobs() -> None:
    async with aiohttp.ClientSession() as client:
        async with http_server() as server:
            url = f"{base_url(server)}/v1/functions/nobody/jobs"
            waiting = asyncio.create_task(client.post(url, data=b"x"))
            await until(lambda: bool(server.scheduler.jobs))
        # The server stopped: the request was answered rather than hold the stop.
        async with asyncio.timeout(10):
            (outcome,) = await asyncio.gather(waiting, return_exceptions=True)
        assert isinstance(outcome, aiohttp.ClientResponse), outcome
        assert outcome.status == 503
        assert (await outcome.json())["error"]["code"] == "stopping"
        outcome.release()
