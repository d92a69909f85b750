"""Starting and stopping the HTTP listener on the server's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from ..config import NOTICE
from ..status import DepthHistory
from .dead_letters import dead_letters
from .gateway import Gateway
from .metrics_route import metrics_route
from .routes import build_app
from .status_page import status_page

if TYPE_CHECKING:
    from ..app import Server

logger = logging.getLogger(__name__)

#: Seconds a stopping listener gives requests still being answered before cancelling
#: them. Requests waiting for a job are told to end first (503, or a stream cut short);
#: this bounds the rest, such as a response being written to a slow client.
SHUTDOWN_TIMEOUT = 2.0
#: Seconds an idle keep-alive connection is kept open (aiohttp's default is 75).
KEEPALIVE_TIMEOUT = 75.0


class HttpSite:
    """The HTTP listener of one server: one aiohttp runner, one TCP site per address.

    Args:
        server: the job server; its settings give the port (``http_port``) and the
            addresses (``http_listen``, else ``listen``).
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self._runner: web.AppRunner | None = None
        self._gateway = Gateway(server)
        #: Each function's recent depth, for the status page's charts.
        self.history = DepthHistory(server.scheduler)
        self._sampler: asyncio.Task[None] | None = None
        #: The bound (host, port) pairs once started.
        self.addresses: list[tuple[str, int]] = []

    async def start(self) -> None:
        """Bind every address; on failure nothing stays bound.

        Raises:
            OSError: an address could not be bound.
        """
        settings = self.server.settings
        assert settings.http_port is not None
        runner = web.AppRunner(
            build_app(
                self.server,
                self._gateway,
                [
                    metrics_route(self.server),
                    status_page(self.server, self.history),
                    dead_letters(self.server),
                ],
            ),
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            # A client that goes away cancels its handler, which detaches its peer.
            handler_cancellation=True,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
        )
        await runner.setup()
        self._runner = runner
        hosts: list[str | None] = list(settings.http_listen or settings.listen) or [None]
        try:
            for host in hosts:
                site = web.TCPSite(
                    runner,
                    host,
                    settings.http_port,
                    backlog=settings.backlog,
                    reuse_address=True,
                )
                await site.start()
        except BaseException:
            await self.close()
            raise
        for address in runner.addresses:
            self.addresses.append((str(address[0]), int(address[1])))
            logger.log(NOTICE, "HTTP listening on %s port %d", address[0], address[1])
        self._sampler = asyncio.create_task(self.history.run(), name="geartrain-depth-history")

    async def close(self) -> None:
        """Stop listening and end the requests in progress (idempotent)."""
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        runner, self._runner = self._runner, None
        if runner is not None:
            self._gateway.stop()
            await runner.cleanup()
