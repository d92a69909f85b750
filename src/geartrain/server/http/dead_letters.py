"""The dead-letter queue over HTTP, as the admin ``dead ...`` commands give it.

    GET    /v1/dead[?function=F]       dead jobs, oldest first, and the queue's totals
    GET    /v1/dead/{key}              one dead job with every attempt (key: id or handle)
    POST   /v1/dead/{key}/requeue      submit it again as a new background job
    DELETE /v1/dead/{key}              purge it

A dead job's payload is not sent back here (it may be large); its size is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..dead import decode_attempts, requeue_dead
from ..persistence.base import DeadJob
from ..status import text as _text
from .access import require
from .errors import HttpError

if TYPE_CHECKING:
    from ..app import Server
    from .routes import Extension


def dead_letters(server: Server) -> Extension:
    """The listener extension serving ``server``'s dead-letter queue under ``/v1/dead``."""
    routes = _DeadLetters(server)

    def extend(app: web.Application) -> None:
        app.router.add_get("/v1/dead", routes.list_dead, allow_head=False)
        app.router.add_get("/v1/dead/{key}", routes.show, allow_head=False)
        app.router.add_post("/v1/dead/{key}/requeue", routes.requeue)
        app.router.add_delete("/v1/dead/{key}", routes.purge)

    return extend


def _summary(dead: DeadJob) -> dict[str, Any]:
    count, attempts = decode_attempts(dead.attempts)
    return {
        "id": dead.id,
        "handle": _text(dead.handle),
        "function": _text(dead.function),
        "unique": _text(dead.unique),
        "attempts": count,
        "died": dead.died,
        "last_outcome": attempts[-1].outcome if attempts else None,
    }


class _DeadLetters:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.scheduler = server.scheduler

    def _find(self, request: web.Request) -> DeadJob:
        key = request.match_info["key"]
        dead = self.scheduler.expire_dead().find(key.encode("utf-8", "surrogateescape"))
        if dead is None:
            raise HttpError(404, "unknown_dead_job", f"no dead job {key!r} (id or handle)")
        return dead

    async def list_dead(self, request: web.Request) -> web.Response:
        require(self.server, request, "read")
        function = request.query.get("function")
        queue = self.scheduler.expire_dead()
        wanted = None if function is None else function.encode("utf-8", "surrogateescape")
        jobs = [_summary(dead) for dead in queue.of_function(wanted)]
        return web.json_response(
            {"jobs": jobs, "total": len(queue), "bytes": queue.bytes, "dropped": queue.dropped}
        )

    async def show(self, request: web.Request) -> web.Response:
        require(self.server, request, "read")
        dead = self._find(request)
        _, attempts = self._attempts(dead)
        return web.json_response(
            {
                **_summary(dead),
                "priority": ("high", "normal", "low")[dead.priority],
                "size": len(dead.data),
                "history": attempts,
            }
        )

    @staticmethod
    def _attempts(dead: DeadJob) -> tuple[int, list[dict[str, Any]]]:
        count, attempts = decode_attempts(dead.attempts)
        return count, [
            {"time": a.time, "worker": a.worker, "outcome": a.outcome, "text": a.text}
            for a in attempts
        ]

    async def requeue(self, request: web.Request) -> web.Response:
        require(self.server, request, "write")
        dead = self._find(request)
        result = requeue_dead(self.scheduler, dead)
        if isinstance(result, tuple):
            raise HttpError(503, "queue_error", result[1].decode("utf-8", "replace"))
        return web.json_response({"id": dead.id, "handle": _text(result.handle)}, status=202)

    async def purge(self, request: web.Request) -> web.Response:
        require(self.server, request, "write")
        dead = self._find(request)
        self.scheduler.expire_dead().forget(dead.id)
        return web.json_response({"id": dead.id, "purged": True})
