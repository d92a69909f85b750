"""The one route table of the HTTP listener.

Order matters: aiohttp tries routes in the order they are added, and gearmand's form
(``/{function}``, any single path) comes last, so it takes every path nothing else
claims, except under ``/v1/``, which is the gateway's. A POST to ``/healthz`` is
therefore a job for a function named ``healthz``, as on gearmand.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiohttp import web

from .errors import HttpError, json_errors
from .gateway import Gateway
from .health import Health
from .openapi import openapi_document

if TYPE_CHECKING:
    from ..app import Server


async def _not_found(request: web.Request) -> web.Response:
    raise HttpError(404, "not_found", f"no such resource: {request.path}")


def build_app(
    server: Server, gateway: Gateway, extra_routes: Iterable[web.RouteDef] = ()
) -> web.Application:
    """The aiohttp application of ``server``'s HTTP listener.

    Args:
        server: the job server the routes act on.
        gateway: the gateway's handlers (the listener ends their waits when it stops).
        extra_routes: routes added before gearmand's catch-all form, such as ``/metrics``.
    """
    health = Health(server)
    document = openapi_document(server.version_string)

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(document)

    app = web.Application(middlewares=[json_errors])
    app.add_routes(
        [
            web.get("/healthz", health.alive, allow_head=False),
            web.get("/readyz", health.ready, allow_head=False),
            web.get("/openapi.json", openapi, allow_head=False),
            web.post("/v1/functions/{function}/jobs", gateway.submit),
            web.get("/v1/functions/{function}/uniques/{unique}", gateway.status_by_unique),
            web.get("/v1/jobs/{handle}", gateway.status, allow_head=False),
            web.delete("/v1/jobs/{handle}", gateway.cancel),
            # /metrics (Prometheus) comes in through extra_routes, here.
            *extra_routes,
            # Paths under /v1/ are the gateway's: a mistyped one is a 404, not a job.
            *(web.route(m, "/v1/{tail:.*}", _not_found) for m in ("GET", "POST", "PUT")),
            web.post("/{function:.+}", gateway.submit_gearmand_form),
            web.put("/{function:.+}", gateway.submit_gearmand_form),
            web.get("/{function:.+}", gateway.submit_gearmand_form, allow_head=False),
        ]
    )
    return app
