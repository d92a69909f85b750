"""The server's lifecycle: start-up, listening, signals and shutdown.

start-up:  open the persistent queue (``settings.queue``) -> import a gearmand queue
           when told -> replay stored jobs -> bind -> ``started``
running:   one Connection per socket, one Scheduler for all
stopping:  SIGTERM/SIGINT stop now; SIGUSR1 stops gracefully (close listeners,
           let running jobs finish within ``graceful_timeout``); then close the
           connections and flush the persistent queue last.

:meth:`Server.serve` runs all three inside any asyncio application; :func:`run` is the
process entry point (``geartrain serve``): it also picks the event loop and tunes the
garbage collector, which are process-wide and so no business of an embedded server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING

from geartrain import __version__
from geartrain.errors import GeartrainError
from geartrain.protocol.spool import SpoolWriter

from .budget import MemoryBudget
from .config import NOTICE, Settings, state_directory
from .connection import Connection, tune_socket
from .counters import ServerCounters
from .dead import DeadLimits
from .permissions import Permissions, PermissionsError, apply_rights
from .persistence.base import QueueStore
from .scheduler import Scheduler
from .tls import Handshake, ServerTLS, TLSConfigError, tls_wanted

if TYPE_CHECKING:
    from .http.site import HttpSite

logger = logging.getLogger(__name__)

#: What each captured signal does; SIGHUP reopens the log files (logrotate's postrotate).
_STOP_SIGNALS: dict[int, bool] = {signal.SIGTERM: False, signal.SIGINT: False, signal.SIGUSR1: True}


class StartupError(GeartrainError):
    """The server could not start: its queue, the gearmand import, or listening failed."""


class Server:
    """A Gearman job server bound to one or more addresses.

    Run it with :meth:`serve` (start, run until stopped, stop), or drive the steps
    yourself with :meth:`start` and :meth:`stop`. See ``docs/embedding.md``.

    Args:
        settings: what to listen on and how to behave; ``settings.queue`` names the
            persistent queue opened at start-up.
        store: a queue store to use instead of the one ``settings.queue`` names (the
            server opens and closes it); None to follow ``settings.queue``.
    """

    def __init__(self, settings: Settings, store: QueueStore | None = None) -> None:
        settings.validate()
        self.settings = settings
        self.store = store
        self._own_store = store is None  # else given: settings.queue is not looked at
        self.version_string = __version__
        self.scheduler = Scheduler(
            handle_prefix=settings.handle_prefix(),
            job_retries=settings.job_retries,
            worker_wakeup=settings.worker_wakeup,
            store=store,
            retry=settings.retry_policies(),
            dead_letter=settings.dead_letter,
            dead_limits=DeadLimits(
                settings.dead_letter_max_jobs,
                settings.dead_letter_max_age,
                settings.dead_letter_max_bytes,
            ),
        )
        #: The memory budget over what the server holds for its peers (``budget.py``).
        self.memory = MemoryBudget(settings.memory_budget())
        self.scheduler.use_memory_budget(self.memory)
        self.spool_directory = settings.spool_path()
        #: Totals kept for the metrics (``geartrain.server.metrics`` reads them).
        self.counters = ServerCounters()
        self.connections: dict[Connection, None] = {}
        self.listeners: list[asyncio.Server] = []
        #: The bound (host, port) pairs, known once started (port 0 gives the real port).
        self.addresses: list[tuple[str, int]] = []
        #: The HTTP listener (``settings.http_port``), None when off or not started.
        self.http: HttpSite | None = None
        #: The HTTP listener's bound (host, port) pairs, as ``addresses``.
        self.http_addresses: list[tuple[str, int]] = []
        #: Those of ``addresses`` that speak TLS (``ssl`` or ``ssl_port``).
        self.tls_addresses: list[tuple[str, int]] = []
        #: The TLS context and handshakes in progress, once started with TLS.
        self.tls: ServerTLS | None = None
        #: The rules of ``settings.permissions``, read when started; None = no file, so
        #: every peer may do everything.
        self.permissions: Permissions | None = None
        #: Set once the server listens (after the replay); ``await server.started.wait()``.
        self.started = asyncio.Event()
        #: Called on SIGHUP; None reopens the root logger's log files.
        self.on_reopen_log: Callable[[], None] | None = None
        self._stopping = asyncio.Event()
        self._graceful = False
        self._ended = asyncio.Event()
        self._failure: BaseException | None = None

    @property
    def port(self) -> int:
        """The first bound port (the real one when ``settings.port`` is 0)."""
        if not self.addresses:
            raise RuntimeError("the server is not listening yet")
        return self.addresses[0][1]

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested (readiness probes then answer 503)."""
        return self._stopping.is_set()

    # -- the whole lifecycle ---------------------------------------------------------

    async def serve(self, *, install_signal_handlers: bool = True) -> None:
        """Start, run until asked to stop, then stop; returns once stopped.

        Args:
            install_signal_handlers: once listening, SIGTERM and SIGINT stop the server,
                SIGUSR1 stops it gracefully and SIGHUP reopens the log files (and rereads
                the TLS and permissions files); the previous handlers come back when it
                returns. Pass False inside an application that handles signals itself
                (stop with :meth:`request_stop`). Only possible in the main thread;
                elsewhere nothing is captured.

        Raises:
            StartupError: the queue could not be opened, the import failed or an
                address could not be bound; nothing is left open.
        """
        try:
            await self.start()
            capture = self._captured_signals if install_signal_handlers else _nothing_captured
            with capture():
                await self._main_loop()
        except BaseException as exc:
            self._failure = exc
            raise
        finally:
            self._ended.set()

    async def wait_started(self) -> None:
        """Wait until :meth:`serve` listens.

        Raises:
            StartupError: :meth:`serve` ended before it listened.
        """
        waiters = [asyncio.ensure_future(e.wait()) for e in (self.started, self._ended)]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if not self.started.is_set():
            raise StartupError(f"the server did not start: {self._failure}")

    async def _main_loop(self) -> None:
        try:
            await self._stopping.wait()
        except asyncio.CancelledError:
            # The embedding application cancelled us: still close and flush the queue.
            await self.stop()
            raise
        await self.stop(graceful=self._graceful)

    def spool_writer(self) -> SpoolWriter:
        """A new spool file for a large body (raises OSError if the disk refuses)."""
        return SpoolWriter(self.spool_directory)

    # -- start ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the queue, import and replay stored jobs, then listen.

        Raises:
            StartupError: as :meth:`serve`; whatever was opened is closed again.
        """
        loop = asyncio.get_running_loop()
        self.scheduler.use_timers(loop.call_later)
        self.memory.use_loop(loop.call_later, self.connections.__len__)
        try:
            self._set_up_tls()
            self._load_permissions()
            await self._open_store()
            await self._replay()
            self._log_budget()
            await self._listen(loop)
            await self._listen_http()
        except StartupError:
            await self._close_after_failure()
            raise
        except Exception as exc:  # a store that cannot open or load: say what failed
            await self._close_after_failure()
            logger.debug("start-up failed", exc_info=True)
            raise StartupError(f"start-up failed: {exc}") from exc
        except BaseException:
            await self._close_after_failure()
            raise
        self.started.set()

    async def _open_store(self) -> None:
        if self._own_store:
            self.store = self.scheduler.store = _build_store(self.settings)
        if self.settings.import_gearmand:
            await _import_gearmand(self.store, self.settings.import_gearmand)
        if self.store is not None:
            await self.store.open()

    async def _replay(self) -> None:
        if self.store is None:
            return
        # Large queued payloads come back from the store into spool files.
        self.store.spool_directory = self.spool_directory
        started = time.monotonic()
        records = await self.store.load()
        self.scheduler.restore(records)
        elapsed = time.monotonic() - started
        self.counters.replay_seconds = elapsed
        self.counters.replayed_jobs = len(records)
        self.scheduler.restore_dead(self.store, await self.store.load_dead())
        if records:
            logger.log(NOTICE, "replayed %d stored jobs in %.2fs", len(records), elapsed)

    def _log_budget(self) -> None:
        memory = self.memory
        if not memory.limit:
            logger.log(NOTICE, "memory budget: none (--max-memory 0)")
            return
        given = "" if self.settings.max_memory is not None else " (a quarter of physical memory)"
        logger.log(
            NOTICE,
            "memory budget: %d MiB%s; reading from adding clients pauses above %d MiB",
            memory.limit >> 20,
            given,
            memory.high >> 20,
        )

    async def _close_after_failure(self) -> None:
        for listener in self.listeners:
            listener.close()
        await self._close_http()
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.close()

    def _set_up_tls(self) -> None:
        if not tls_wanted(self.settings):
            return
        if not isinstance(asyncio.get_running_loop(), asyncio.BaseEventLoop):
            # uvloop starts reading an accepted socket after connection_made returns, even
            # if it paused reading: the ClientHello reaches the accepting protocol instead
            # of start_tls, and the handshake never completes (see tls.Handshake).
            raise StartupError("TLS listeners need asyncio's own event loop, not uvloop")
        try:
            self.tls = ServerTLS(self.settings)  # read now: a bad file must stop start-up
        except TLSConfigError as exc:
            raise StartupError(str(exc)) from exc

    def _load_permissions(self) -> None:
        if self.settings.permissions is None:
            return
        denials = self.counters.permission_denied
        try:
            self.permissions = Permissions.load(self.settings.permissions, denials)
        except PermissionsError as exc:
            raise StartupError(str(exc)) from exc

    async def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        settings = self.settings
        hosts: list[str | None] = list(settings.listen) or [None]
        for host in hosts:
            await self._listen_on(loop, host, settings.port, tls=settings.ssl)
        if settings.ssl_port is not None:
            tls_hosts: list[str | None] = list(settings.ssl_listen) or hosts
            for host in tls_hosts:
                await self._listen_on(loop, host, settings.ssl_port, tls=True)

    async def _listen_on(
        self, loop: asyncio.AbstractEventLoop, host: str | None, port: int, tls: bool
    ) -> None:
        tls_state = self.tls if tls else None

        def accept() -> asyncio.BaseProtocol:
            if tls_state is None:
                return Connection(self)
            return Handshake(tls_state, lambda: Connection(self))

        try:
            listener = await loop.create_server(
                accept, host=host, port=port, backlog=self.settings.backlog, reuse_address=True
            )
        except OSError as exc:
            raise StartupError(f"cannot listen: {exc}") from exc
        self.listeners.append(listener)
        for sock in listener.sockets:
            address = sock.getsockname()
            self.addresses.append((str(address[0]), int(address[1])))
            if tls:
                self.tls_addresses.append(self.addresses[-1])
            kind = "TLS " if tls else ""
            logger.log(NOTICE, "listening %son %s port %d", kind, address[0], address[1])

    async def _listen_http(self) -> None:
        """Start the HTTP listener after the Gearman ones, when a port is set."""
        if self.settings.http_port is None:
            return
        try:
            from .http.site import HttpSite
        except ImportError as exc:
            raise StartupError(
                f"the HTTP listener needs aiohttp ({exc}): pip install 'geartrain[http]'"
            ) from exc
        site = HttpSite(self)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(f"cannot listen for HTTP: {exc}") from exc
        self.http = site
        self.http_addresses = site.addresses

    async def _close_http(self) -> None:
        site, self.http = self.http, None
        if site is not None:
            await site.close()

    def tune_socket(self, sock: socket.socket) -> None:
        s = self.settings
        tune_socket(sock, s.keepalive, s.keepalive_idle, s.keepalive_interval, s.keepalive_count)

    # -- signals ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _captured_signals(self) -> Iterator[None]:
        """Handle the server's signals, then give each back its previous handler.

        signal.signal rather than loop.add_signal_handler: the latter cannot tell us the
        handler it replaces, so an application's own handler would be lost.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()

        def handle(signum: int, frame: FrameType | None) -> None:
            # A Python signal handler runs between two bytecodes of whatever the loop is
            # doing: hand the work to the loop instead of doing it here.
            if signum == signal.SIGHUP:
                loop.call_soon_threadsafe(self._reopen_log)
                loop.call_soon_threadsafe(self.reload_tls)
                loop.call_soon_threadsafe(self.reload_permissions)
            else:
                loop.call_soon_threadsafe(self.request_stop, _STOP_SIGNALS[signum])

        previous = {sig: signal.signal(sig, handle) for sig in [*_STOP_SIGNALS, signal.SIGHUP]}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _reopen_log(self) -> None:
        if self.on_reopen_log is not None:
            self.on_reopen_log()
            logger.log(NOTICE, "log file reopened")
        elif _reopen_log_files():
            logger.log(NOTICE, "log file reopened")

    def reload_tls(self) -> bool:
        """Read the TLS certificate, key and CA files again (SIGHUP does this).

        New connections use the new files; established ones are not disturbed. Files
        that cannot be loaded leave the old ones in use (logged as an error).

        Returns:
            whether new files were taken; False too when the server has no TLS listener.
        """
        return self.tls is not None and self.tls.reload()

    def reload_permissions(self) -> bool:
        """Read the permissions file again (SIGHUP does this); new requests follow it.

        Every connection's rights are resolved anew, and a worker loses its registration
        for functions it may no longer work on. A file that cannot be read or is wrong
        leaves the old rules in use (logged as an error).

        Returns:
            whether new rules were taken; False too when the server has no permissions file.
        """
        if self.permissions is None or self.settings.permissions is None:
            return False
        denials = self.counters.permission_denied
        try:
            permissions = Permissions.load(self.settings.permissions, denials)
        except PermissionsError as exc:
            logger.error("permissions not reloaded, the old rules stay in use: %s", exc)
            return False
        self.permissions = permissions
        for connection in self.connections:
            apply_rights(connection, permissions.rights_for(connection.identity, connection.ip))
        logger.log(NOTICE, "permissions reloaded from %s", permissions.source)
        return True

    # -- stop ------------------------------------------------------------------------

    def request_stop(self, graceful: bool = False) -> None:
        """Ask :meth:`serve` to stop; a second request while stopping gracefully forces it.

        Args:
            graceful: stop accepting connections, then wait up to
                ``settings.graceful_timeout`` seconds for running jobs first.
        """
        if self._stopping.is_set():
            self._graceful = False
        else:
            self._graceful = graceful
        self._stopping.set()

    async def stop(self, graceful: bool = False) -> None:
        """Close the listeners and connections, then flush and close the queue.

        Args:
            graceful: wait for running jobs first (see :meth:`request_stop`).
        """
        for listener in self.listeners:
            listener.close()
        if self.tls is not None:
            self.tls.abort_pending()
        if graceful:
            logger.log(NOTICE, "graceful stop: not accepting connections; waiting for running jobs")
            await self._wait_for_running_jobs()
        # Before the connections go: HTTP requests waiting for jobs are ended first.
        await self._close_http()
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
            if self._stopping.is_set() and not self._graceful:
                break  # a second signal asked for a stop now
            await asyncio.sleep(0.05)
        left = self._running_jobs()
        if left:
            logger.warning("graceful stop: %d jobs still running; stopping anyway", left)

    def _running_jobs(self) -> int:
        return sum(f.running for f in self.scheduler.functions.values())


@contextlib.contextmanager
def _nothing_captured() -> Iterator[None]:
    yield


def _reopen_log_files() -> bool:
    """Reopen the root logger's log files (renamed by logrotate); tell whether there were any."""
    reopened = False
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            fresh = open(  # noqa: SIM115 - the handler owns it from here
                handler.baseFilename, "a", encoding=handler.encoding, errors=handler.errors
            )
            old = handler.setStream(fresh)
            if old is not None:
                old.close()
            reopened = True
    return reopened


# -- the persistent queue ------------------------------------------------------------------


def _build_store(settings: Settings) -> QueueStore | None:
    """The store ``settings.queue`` names, not opened yet; None for ``none``."""
    url = settings.queue_url()
    if url.strip().lower() in ("none", ""):
        logger.log(NOTICE, "no persistent queue: background jobs live in memory only")
        return None
    from .persistence import open_store

    if settings.queue is None:  # the default file: its directory may not exist yet
        try:
            state_directory().mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"cannot create the state directory: {exc}") from exc
    try:
        store = open_store(url, prefix=settings.queue_prefix)
    except Exception as exc:  # a bad URL or a missing driver: say which
        raise StartupError(f"persistent queue {url!r}: {exc}") from exc
    logger.log(NOTICE, "persistent queue: %s", _without_password(url))
    return store


async def _import_gearmand(store: QueueStore | None, source: str) -> None:
    if store is None:
        raise StartupError("--import-gearmand needs a persistent queue (not --queue none)")
    from .persistence.gearmand_import import import_into

    try:
        await import_into(store, source)
    except Exception as exc:  # bad URL, missing driver, unreachable database
        raise StartupError(f"importing the gearmand queue failed: {exc}") from exc


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


# -- the process entry point -----------------------------------------------------------------


def run(
    settings: Settings,
    *,
    install_signal_handlers: bool = True,
    on_started: Callable[[Server], object] | None = None,
) -> None:
    """Run a server in this process until it is stopped (``geartrain serve`` calls this).

    Uses uvloop when installed (unless a listener speaks TLS) and tunes the garbage
    collector for a long-lived server (both process-wide), then runs :meth:`Server.serve`
    in a new event loop.

    Args:
        settings: the server's settings; ``settings.queue`` is opened at start-up.
        install_signal_handlers: as for :meth:`Server.serve`.
        on_started: called with the server once it listens (a pid file, a daemon's
            parent waiting to exit).

    Raises:
        StartupError: the server could not start.
    """
    if tls_wanted(settings):
        # TLS handshakes never complete on uvloop (see Server._set_up_tls): asyncio's own
        # loop serves a server with a TLS listener.
        logger.info("TLS listeners: using asyncio's event loop, not uvloop")
    else:
        _use_uvloop()
    _tune_gc()
    asyncio.run(_run(Server(settings), install_signal_handlers, on_started))


async def _run(
    server: Server, signals: bool, on_started: Callable[[Server], object] | None
) -> None:
    serving = asyncio.create_task(server.serve(install_signal_handlers=signals))
    with contextlib.suppress(StartupError):  # serving raises it below, with its cause
        await server.wait_started()
    if server.started.is_set():
        # Everything alive now (the replayed jobs included) lives long: keep it out of
        # the cyclic collector's scans.
        gc.freeze()
        if on_started is not None:
            on_started(server)
    await serving


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


def _tune_gc() -> None:
    """Collect young objects every 50k allocations instead of every 700.

    A busy server allocates a few long-lived objects per job (the job, its client
    list); with the default threshold the collector re-scans the growing job table
    so often that background submission costs three times as much CPU (measured
    with the in-process submit benchmark: ~9 -> ~3 µs per job). Jobs are freed by
    reference counting; the collector is only needed for the rare cycles (closed
    connections), which it still finds.
    """
    gc.set_threshold(50_000, 50, 100)
