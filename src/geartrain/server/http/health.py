"""``/healthz`` and ``/readyz``, for load balancers and Kubernetes probes.

Alive means the event loop answers. Ready means the server takes jobs: it listens (which
it does only once the persistent queue is replayed), it is not stopping, and its
persistent queue answers a ping.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ..app import Server

#: Seconds a readiness probe waits for the persistent queue; probes themselves usually
#: give up after one second (Kubernetes' default timeoutSeconds), so this stays below.
PING_TIMEOUT = 0.8


class Health:
    """The two probes of one server."""

    def __init__(self, server: Server) -> None:
        self.server = server

    async def alive(self, request: web.Request) -> web.Response:
        """``GET /healthz``: 200 while the process serves requests."""
        return web.json_response({"status": "alive"})

    async def ready(self, request: web.Request) -> web.Response:
        """``GET /readyz``: 200 when jobs can be taken, else 503 with the reason."""
        reason = await self._not_ready()
        if reason is None:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "unavailable", "reason": reason}, status=503)

    async def _not_ready(self) -> str | None:
        server = self.server
        if not server.started.is_set():
            return "starting: the persistent queue is being replayed"
        if server.stopping:
            return "stopping"
        store = server.store
        if store is None:
            return None
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                await store.ping()
        except TimeoutError:
            return "the persistent queue did not answer in time"
        except Exception as exc:  # a store of the embedder's may raise anything
            return f"the persistent queue is unreachable: {exc}"
        return None
