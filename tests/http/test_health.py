"""``/healthz`` and ``/readyz``: alive, ready, and unavailable with a reason."""

from __future__ import annotations

import aiohttp
import pytest

from geartrain.server.app import Server
from geartrain.server.persistence.memory import MemoryBacking, MemoryStore

from .conftest import base_url, http_server


async def test_alive_and_ready_without_a_persistent_queue() -> None:
    async with http_server() as server, aiohttp.ClientSession() as client:
        async with client.get(f"{base_url(server)}/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "alive"}
        async with client.get(f"{base_url(server)}/readyz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ready"}


async def test_ready_follows_the_persistent_queue() -> None:
    backing = MemoryBacking()
    store = MemoryStore(backing)
    async with http_server(store=store) as server, aiohttp.ClientSession() as client:
        url = f"{base_url(server)}/readyz"
        async with client.get(url) as response:
            assert response.status == 200
        store.break_connection()  # the queue's connection is gone: not ready
        async with client.get(url) as response:
            assert response.status == 503
            answer = await response.json()
        assert answer["status"] == "unavailable"
        assert "persistent queue is unreachable" in answer["reason"]
        async with client.get(f"{base_url(server)}/healthz") as response:
            assert response.status == 200  # still alive: only readiness depends on the queue


async def test_not_ready_once_stopping(monkeypatch: pytest.MonkeyPatch) -> None:
    async with http_server() as server, aiohttp.ClientSession() as client:
        # A graceful stop keeps serving for a while; it is seen as the stopping flag.
        monkeypatch.setattr(Server, "stopping", property(lambda self: True))
        async with client.get(f"{base_url(server)}/readyz") as response:
            assert response.status == 503
            assert (await response.json())["reason"] == "stopping"
        monkeypatch.undo()
