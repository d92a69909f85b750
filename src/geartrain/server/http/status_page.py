"""The status page on the HTTP listener: the page, its files, and the JSON it draws.

    GET  /                          the page (static/index.html)
    GET  /static/{name}             its style and script
    GET  /api/status                the picture it draws (see geartrain.server.status)
    GET  /api/jobs?handle=H         one job in detail, or ?function=F&unique=U
    GET  /favicon.ico               404 (so that a browser's request is not a job)

Cancelling goes through the gateway (``DELETE /v1/jobs/{handle}``), so the page and any
other HTTP caller cancel by the same rule.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from aiohttp import web

from ..status import DepthHistory, find_job, job_json, snapshot
from .access import require
from .errors import HttpError

if TYPE_CHECKING:
    from ..app import Server
    from .routes import Extension

#: The page's files, by name, with their content types; nothing else is served.
_FILES = {
    "index.html": "text/html",
    "status.css": "text/css",
    "status.js": "text/javascript",
}
#: A picture of the server is stale at once.
_NO_STORE = {"Cache-Control": "no-store"}


def status_page(server: Server, history: DepthHistory) -> Extension:
    """The listener extension serving ``server``'s status page, charts from ``history``."""
    page = _StatusPage(server, history)

    def extend(app: web.Application) -> None:
        app.router.add_get("/", page.index, allow_head=False)
        app.router.add_get("/static/{name}", page.static, allow_head=False)
        app.router.add_get("/api/status", page.status, allow_head=False)
        app.router.add_get("/api/jobs", page.find_job, allow_head=False)
        # Browsers ask for it unbidden: without this route gearmand's form would take
        # it for a job of a function named "favicon.ico".
        app.router.add_get("/favicon.ico", page.no_icon, allow_head=False)

    return extend


class _StatusPage:
    def __init__(self, server: Server, history: DepthHistory) -> None:
        self.server = server
        self.history = history
        folder = resources.files(__package__) / "static"
        self.files = {name: (folder / name).read_bytes() for name in _FILES}

    async def index(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "index.html" or name not in self.files:
            raise HttpError(404, "not_found", f"no such file: {name}")
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        return web.Response(body=self.files[name], content_type=_FILES[name], charset="utf-8")

    async def no_icon(self, request: web.Request) -> web.Response:
        raise HttpError(404, "not_found", "no icon")

    async def status(self, request: web.Request) -> web.Response:
        require(self.server, request, "read")
        return web.json_response(snapshot(self.server, self.history), headers=_NO_STORE)

    async def find_job(self, request: web.Request) -> web.Response:
        require(self.server, request, "read")
        query = request.query
        handle = query.get("handle", "").encode("utf-8", "surrogateescape")
        function = query.get("function", "").encode("utf-8", "surrogateescape")
        unique = query.get("unique", "").encode("utf-8", "surrogateescape")
        if not handle and not (function and unique):
            raise HttpError(400, "bad_query", "give a handle, or a function and a unique")
        job = find_job(self.server.scheduler, handle, function, unique)
        if job is None:
            raise HttpError(404, "unknown_job", "no such job (it may have ended)")
        return web.json_response(job_json(job), headers=_NO_STORE)
