"""The one route table of the HTTP listener.

Order matters: aiohttp tries routes in the order they are added, and gearmand's form
(``/{function}``, any single path) comes last, so it takes every path nothing else
claims, except under ``/v1/``, which is the gateway's. A path an earlier route has under
other methods is answered 405: ``POST /healthz`` is not a job for a function ``healthz``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from aiohttp import hdrs, web

from .errors import Handler, HttpError, json_errors
from .gateway import Gateway
from .health import Health
from .openapi import openapi_document

if TYPE_CHECKING:
    from ..app import Server


#: What gearmand's form accepts (a GET submits an empty workload).
_GEARMAND_METHODS = frozenset({"GET", "POST", "PUT"})
_ANY_METHOD = frozenset(hdrs.METH_ALL)


async def _not_found(request: web.Request) -> web.Response:
    raise HttpError(404, "not_found", f"no such resource: {request.path}")


async def _claimed(request: web.Request) -> set[str]:
    """The methods the routes before this catch-all accept for the request's path."""
    allowed: set[str] = set()
    own = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is own:
            break
        _, methods = await resource.resolve(request)
        allowed |= methods
    return allowed


def _unless_claimed(handler: Handler, methods: frozenset[str]) -> Handler:
    """``handler`` for ``methods`` on paths no earlier route has; 405 otherwise.

    Registered for every method, so that a 405 lists exactly the methods of the resource
    the path names: without this a catch-all would take ``POST /healthz`` or ``PUT
    /v1/jobs/H:x:1`` (a resource that exists, with other methods), and aiohttp's own 405
    would list the catch-all's methods for every path.
    """

    async def guarded(request: web.Request) -> web.StreamResponse:
        allowed = await _claimed(request)
        if not allowed and request.method in methods:
            return await handler(request)
        raise web.HTTPMethodNotAllowed(request.method, allowed or methods)

    return guarded


#: Adds routes of its own to the listener's application (a status page, ``/metrics``).
Extension = Callable[[web.Application], None]


def build_app(
    server: Server, gateway: Gateway, extensions: Iterable[Extension] = ()
) -> web.Application:
    """The aiohttp application of ``server``'s HTTP listener.

    Args:
        server: the job server the routes act on.
        gateway: the gateway's handlers (the listener ends their waits when it stops).
        extensions: called in order with the application after the gateway's routes are
            added and before gearmand's catch-all form, so that their paths win over it.
    """
    health = Health(server)
    document = openapi_document(server.version_string)

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(document)

    not_found = _unless_claimed(_not_found, _ANY_METHOD)
    gearmand_form = _unless_claimed(gateway.submit_gearmand_form, _GEARMAND_METHODS)
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
        ]
    )
    # /metrics (Prometheus) and any other listener feature come in here.
    for extend in extensions:
        extend(app)
    app.add_routes(
        [
            # Paths under /v1/ are the gateway's: a mistyped one is a 404, not a job.
            web.route("*", "/v1/{tail:.*}", not_found),
            web.route("*", "/{function:.+}", gearmand_form),
        ]
    )
    return app
