"""The status page's routes on the HTTP listener: the page, its files, and its JSON.

    GET  /                          the page
    GET  /static/{status.css,.js}   its style and script
    GET  /api/status                the picture it draws (see geartrain.server.status)
    GET  /api/jobs?handle=H         one job, or ?function=F&unique=U
    POST /api/jobs/{handle}/cancel  cancel a job, as the admin ``cancel job`` does

Errors are JSON, ``{"error": {"code": ..., "message": ...}}``, with a 4xx status.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from aiohttp import web

from geartrain.server.status import DepthHistory, find_job, job_json, snapshot

if TYPE_CHECKING:
    from geartrain.server.app import Server

#: The page's files, by name, with their content types; nothing else is served.
_FILES = {
    "index.html": "text/html",
    "status.css": "text/css",
    "status.js": "text/javascript",
}
#: The page changes only with a new version; the JSON never stays valid.
_NO_STORE = {"Cache-Control": "no-store"}


def add_status_routes(app: web.Application, server: Server, history: DepthHistory) -> None:
    """Serve the status page of ``server`` from ``app``, with ``history`` for its charts."""
    page = _StatusPage(server, history)
    app.router.add_get("/", page.index)
    app.router.add_get("/static/{name}", page.static)
    app.router.add_get("/api/status", page.status)
    app.router.add_get("/api/jobs", page.find_job)
    app.router.add_post("/api/jobs/{handle}/cancel", page.cancel_job)


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class _StatusPage:
    def __init__(self, server: Server, history: DepthHistory) -> None:
        self.server = server
        self.history = history
        folder = resources.files(__package__)
        self.files = {name: (folder / name).read_bytes() for name in _FILES}

    async def index(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "index.html" or name not in self.files:
            return json_error(404, "NOT_FOUND", f"no such file: {name}")
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        return web.Response(body=self.files[name], content_type=_FILES[name], charset="utf-8")

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(snapshot(self.server, self.history), headers=_NO_STORE)

    async def find_job(self, request: web.Request) -> web.Response:
        query = request.query
        handle = query.get("handle", "").encode()
        function = query.get("function", "").encode()
        unique = query.get("unique", "").encode()
        if not handle and not (function and unique):
            return json_error(400, "BAD_QUERY", "give a handle, or a function and a unique")
        job = find_job(self.server.scheduler, handle, function, unique)
        if job is None:
            return json_error(404, "UNKNOWN_JOB", "no such job in the server")
        return web.json_response(job_json(job), headers=_NO_STORE)

    async def cancel_job(self, request: web.Request) -> web.Response:
        handle = request.match_info["handle"]
        if not self.server.scheduler.cancel(handle.encode()):
            return json_error(404, "UNKNOWN_JOB", f"no such job: {handle}")
        return web.json_response({"cancelled": handle})
