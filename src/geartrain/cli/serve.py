"""``geartrain serve``: run the job server (gearmand's options, same spellings)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
from typing import Any

import click

from geartrain.server.config import LEVELS, Settings, load_file

logger = logging.getLogger("geartrain.server")

_LOG_FORMAT = "%(levelname)8s %(asctime)s.%(msecs)03d [%(process)d] %(name)s: %(message)s"


@click.command()
@click.option(
    "-c",
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="TOML file holding any of these options (a [server] table or top level).",
)
@click.option(
    "-L",
    "--listen",
    multiple=True,
    help="Address to listen on; repeat for several. Default: every address.",
)
@click.option("-p", "--port", type=int, help="Port (default 4730, or $GEARMAND_PORT).")
@click.option("-b", "--backlog", type=int, help="listen() backlog (default 1024).")
@click.option(
    "-j",
    "--job-retries",
    type=int,
    help="Attempts before a job whose workers fail is dropped (0 = unlimited).",
)
@click.option(
    "-w", "--worker-wakeup", type=int, help="Sleeping workers woken per new job (0 = all)."
)
@click.option("--job-handle-prefix", help="Job handle prefix (default H:<hostname>).")
@click.option(
    "--exceptions",
    is_flag=True,
    default=None,
    help="Forward WORK_EXCEPTION to every client, as if each asked for it.",
)
@click.option(
    "-q",
    "--queue",
    help="Persistent queue URL: sqlite:///FILE (default sqlite:///geartrain.sqlite3), "
    "postgresql://…, mysql://…, redis://…, or none.",
)
@click.option("--queue-prefix", help="Table or key prefix of the persistent queue.")
@click.option(
    "--import-gearmand",
    "import_gearmand",
    help="At start-up, import the jobs of a gearmand queue (URL).",
)
@click.option(
    "--max-packet-size", type=int, help="Largest packet body accepted, in bytes (default 64 MiB)."
)
@click.option(
    "--verbose",
    type=click.Choice(list(LEVELS), case_sensitive=False),
    help="Log level (default NOTICE).",
)
@click.option("-l", "--log-file", help="Log file; 'stderr' (default) or 'none'.")
@click.option("-P", "--pid-file", help="Write the server's pid here; removed at exit.")
@click.option(
    "-d",
    "--daemon",
    is_flag=True,
    default=None,
    help="Run in the background; exits 0 only once the port is listening.",
)
@click.option("--keepalive", is_flag=True, default=None, help="Enable TCP keepalive.")
@click.option("--keepalive-idle", type=int, help="TCP_KEEPIDLE seconds.")
@click.option("--keepalive-interval", type=int, help="TCP_KEEPINTVL seconds.")
@click.option("--keepalive-count", type=int, help="TCP_KEEPCNT probes.")
@click.option(
    "--graceful-timeout",
    type=float,
    help="Seconds a graceful stop (SIGUSR1) waits for running jobs (default 60).",
)
@click.option(
    "--admin-shutdown",
    is_flag=True,
    default=None,
    help="Accept the admin 'shutdown [graceful]' command.",
)
def serve(config_file: str | None, **options: Any) -> None:
    """Run the Gearman job server in the foreground (or with -d in the background)."""
    try:
        settings = _settings(config_file, options)
        settings.validate()
    except (ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from exc
    notify = _daemonize() if settings.daemon else None
    handler = _configure_logging(settings)
    try:
        code = _run(settings, handler, notify)
    finally:
        if settings.pid_file:
            with contextlib.suppress(OSError):
                os.unlink(settings.pid_file)
    sys.exit(code)


def _settings(config_file: str | None, options: dict[str, Any]) -> Settings:
    values: dict[str, Any] = load_file(config_file) if config_file else {}
    for name, value in options.items():
        if value is None or value == ():
            continue
        values[name] = list(value) if name == "listen" else value
    if "port" not in values and os.environ.get("GEARMAND_PORT"):
        values["port"] = int(os.environ["GEARMAND_PORT"])
    return Settings(**values)


class _ReopenableFileHandler(logging.FileHandler):
    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


def _configure_logging(settings: Settings) -> logging.Handler | None:
    level = LEVELS[settings.verbose.upper()]
    root = logging.getLogger()
    root.setLevel(level)
    target = settings.log_file
    handler: logging.Handler
    if target == "none":
        handler = logging.NullHandler()
    elif target in (None, "", "stderr"):
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = _ReopenableFileHandler(target)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT, "%Y-%m-%d %H:%M:%S"))
    root.addHandler(handler)
    return handler


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


def _run(settings: Settings, handler: logging.Handler | None, notify: int | None) -> int:
    _use_uvloop()
    _tune_gc()
    try:
        asyncio.run(_main(settings, handler, notify))
    except StartupError as exc:
        logger.critical("%s", exc)
        if notify is not None:
            _notify(notify, b"error: " + str(exc).encode())
        return 1
    return 0


class StartupError(Exception):
    pass


async def _main(settings: Settings, handler: logging.Handler | None, notify: int | None) -> None:
    from geartrain.server.app import Server

    store = await _open_store(settings)
    server = Server(settings, store)
    if isinstance(handler, _ReopenableFileHandler):
        server.on_reopen_log = handler.reopen
    try:
        await server.start()
    except OSError as exc:
        raise StartupError(f"cannot listen: {exc}") from exc
    except Exception as exc:
        raise StartupError(f"start-up failed: {exc}") from exc
    # Everything alive now (the replayed jobs included) lives long: keep it out of the
    # cyclic collector's scans. Done here, not in Server, because it is process-wide.
    gc.freeze()
    server.install_signal_handlers()
    if settings.pid_file:
        _write_pid_file(settings.pid_file)
    if notify is not None:
        _notify(notify, b"ok")
    await server.serve_until_stopped()


def _write_pid_file(path: str) -> None:
    with open(path, "w") as handle:
        handle.write(f"{os.getpid()}\n")


async def _open_store(settings: Settings) -> Any:
    if settings.queue.lower() in ("none", ""):
        if settings.import_gearmand:
            raise StartupError("--import-gearmand needs a persistent queue (not --queue none)")
        return None
    from geartrain.server.persistence import open_store

    try:
        store = open_store(settings.queue, prefix=settings.queue_prefix)
    except Exception as exc:  # a bad URL or a missing driver: say which
        raise StartupError(f"persistent queue {settings.queue!r}: {exc}") from exc
    if settings.import_gearmand and store is not None:
        from geartrain.server.persistence.gearmand_import import import_into

        try:
            await import_into(store, settings.import_gearmand)
        except Exception as exc:  # bad URL, missing driver, unreachable database
            raise StartupError(f"importing the gearmand queue failed: {exc}") from exc
    return store


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


def _daemonize() -> int:
    """Fork; the parent waits for the child to report that it is listening."""
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        chunks = []
        while chunk := os.read(read_end, 4096):
            chunks.append(chunk)
        message = b"".join(chunks)
        if message == b"ok":
            os._exit(0)
        sys.stderr.write((message or b"error: server exited during start-up").decode() + "\n")
        os._exit(1)
    os.close(read_end)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    return write_end


def _notify(fd: int, message: bytes) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, message)
        os.close(fd)
