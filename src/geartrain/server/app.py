"""The server's lifecycle: start-up, listening, signals and shutdown.

start-up:  open the persistent queue -> replay stored jobs -> bind -> ready
running:   one Connection per socket, one Scheduler for all
stopping:  SIGTERM/SIGINT stop now; SIGUSR1 stops gracefully (close listeners,
           let running jobs finish within ``graceful_timeout``); then close the
           connections and flush the persistent queue last.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Callable

from geartrain import __version__
from geartrain.protocol.spool import SpoolWriter

from .config import NOTICE, Settings
from .connection import Connection, tune_socket
from .jobs import JobState
from .persistence.base import QueueStore
from .scheduler import Scheduler

logger = logging.getLogger(__name__)


class Server:
    """A Gearman job server bound to one or more addresses."""

    def __init__(self, settings: Settings, store: QueueStore | None = None) -> None:
        settings.validate()
        self.settings = settings
        self.store = store
        self.version_string = __version__
        self.scheduler = Scheduler(
            handle_prefix=settings.handle_prefix(),
            job_retries=settings.job_retries,
            worker_wakeup=settings.worker_wakeup,
            store=store,
        )
        self.spool_directory = settings.spool_path()
        self.connections: dict[Connection, None] = {}
        self.listeners: list[asyncio.Server] = []
        self.addresses: list[tuple[str, int]] = []
        self.on_reopen_log: Callable[[], None] | None = None
        self._stopping: asyncio.Event | None = None
        self._graceful = False

    def spool_writer(self) -> SpoolWriter:
        """A new spool file for a large body (raises OSError if the disk refuses)."""
        return SpoolWriter(self.spool_directory)

    # -- start ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the queue, replay stored jobs, then listen. Raises on failure."""
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self.scheduler.use_timers(loop.call_later)
        if self.store is not None:
            await self.store.open()
            # Large queued payloads come back from the store into spool files.
            self.store.spool_directory = self.spool_directory
            started = time.monotonic()
            records = await self.store.load()
            self.scheduler.restore(records)
            if records:
                logger.log(
                    NOTICE,
                    "replayed %d stored jobs in %.2fs",
                    len(records),
                    time.monotonic() - started,
                )
            del records
        await self._listen(loop)

    async def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        hosts: list[str | None] = list(self.settings.listen) or [None]
        for host in hosts:
            listener = await loop.create_server(
                lambda: Connection(self),
                host=host,
                port=self.settings.port,
                backlog=self.settings.backlog,
                reuse_address=True,
            )
            self.listeners.append(listener)
            for sock in listener.sockets:
                address = sock.getsockname()
                self.addresses.append((str(address[0]), int(address[1])))
                logger.log(NOTICE, "listening on %s port %d", address[0], address[1])

    def tune_socket(self, sock: socket.socket) -> None:
        s = self.settings
        tune_socket(sock, s.keepalive, s.keepalive_idle, s.keepalive_interval, s.keepalive_count)

    # -- run and stop ------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop, SIGUSR1 stops gracefully, SIGHUP reopens the log (main thread)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGUSR1, self.request_stop, True)
        loop.add_signal_handler(signal.SIGHUP, self._reopen_log)

    def _reopen_log(self) -> None:
        if self.on_reopen_log is not None:
            self.on_reopen_log()
            logger.log(NOTICE, "log file reopened")

    def request_stop(self, graceful: bool = False) -> None:
        """Ask the server to stop; a second request while stopping gracefully forces it."""
        if self._stopping is None:
            return
        if self._stopping.is_set():
            self._graceful = False
        else:
            self._graceful = graceful
        self._stopping.set()

    async def serve_until_stopped(self) -> None:
        """Serve until :meth:`request_stop` (or a signal) asks to stop, then :meth:`stop`."""
        assert self._stopping is not None
        await self._stopping.wait()
        await self.stop(graceful=self._graceful)

    async def stop(self, graceful: bool = False) -> None:
        """Close the listeners, let running jobs finish first if ``graceful`` (within the
        settings' ``graceful_timeout``), drop every connection, then close the queue."""
        for listener in self.listeners:
            listener.close()
        if graceful:
            logger.log(NOTICE, "graceful stop: not accepting connections; waiting for running jobs")
            await self._wait_for_running_jobs()
        for conn in list(self.connections):
            conn.abort()
        for listener in self.listeners:
            await listener.wait_closed()
        if self.store is not None:
            await self.store.close()
        logger.log(NOTICE, "stopped")

    async def _wait_for_running_jobs(self) -> None:
        deadline = time.monotonic() + self.settings.graceful_timeout
        while self._running_jobs() and time.monotonic() < deadline:
            if self._stopping is not None and not self._graceful:
                break  # a second signal asked for a stop now
            await asyncio.sleep(0.05)
        left = self._running_jobs()
        if left:
            logger.warning("graceful stop: %d jobs still running; stopping anyway", left)

    def _running_jobs(self) -> int:
        return sum(f.running for f in self.scheduler.functions.values())

    def queued_jobs(self) -> int:
        return sum(1 for job in self.scheduler.jobs.values() if job.state is not JobState.ENDED)
