"""The route table: extensions come before gearmand's catch-all form."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from geartrain.server.app import Server
from geartrain.server.config import Settings
from geartrain.server.http.gateway import Gateway
from geartrain.server.http.routes import build_app


async def test_an_extensions_route_wins_over_gearmands_form() -> None:
    server = Server(Settings(listen=["127.0.0.1"], port=0, queue="none"))

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="gearman_up 1\n")

    def add_metrics(app: web.Application) -> None:
        app.router.add_get("/metrics", metrics)

    app = build_app(server, Gateway(server), [add_metrics])
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/metrics")
        assert response.status == 200 and await response.text() == "gearman_up 1\n"
        response = await client.post("/metrics")  # not a job for a function "metrics"
        assert response.status == 405 and response.headers["Allow"] == "GET,HEAD"
        assert not server.scheduler.jobs
