"""``GET /metrics``: the server's Prometheus metrics, built at scrape time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..metrics import exposition
from .access import require

if TYPE_CHECKING:
    from ..app import Server
    from .routes import Extension


def metrics_route(server: Server) -> Extension:
    """The listener extension serving ``server``'s metrics at ``/metrics``."""

    async def metrics(request: web.Request) -> web.Response:
        require(server, request, "read")
        body, content_type = exposition(server)
        return web.Response(body=body, headers={"Content-Type": content_type})

    def extend(app: web.Application) -> None:
        app.router.add_get("/metrics", metrics, allow_head=False)

    return extend
