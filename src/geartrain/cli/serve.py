"""``geartrain serve``: run the job server (gearmand's options, same spellings)."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import pwd
import resource
import sys
from typing import Any

import click

from geartrain import __version__, _build
from geartrain.server.config import (
    LEVELS,
    NOTICE,
    Settings,
    load_file,
    parse_size,
    state_directory,
)
from geartrain.server.permissions import Permissions
from geartrain.server.tls import server_context, tls_wanted

from . import tls_options
from .gearmand_options import IGNORED, expand_option_files, gearmand_queue
from .version import version_option

logger = logging.getLogger("geartrain.server")

#: The port of gearmand's HTTP module when ``-r http`` comes without ``--http-port``.
GEARMAND_HTTP_PORT = 8080

_LOG_FORMAT = "%(levelname)8s %(asctime)s.%(msecs)03d [%(process)d] %(name)s: %(message)s"


class _GearmandCommand(click.Command):
    """Reads gearmand's option files (``@FILE``, ``--config-file FILE``) before parsing."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            args = expand_option_files(args)
        except ValueError as exc:
            raise click.UsageError(str(exc), ctx) from exc
        return super().parse_args(ctx, args)


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A number of bytes, optionally with a K, M, G or T suffix (an option's callback:
    click's ParamType is generic only in its newer releases, which the oldest allowed
    version is not)."""
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


def _gearmand_params() -> list[click.Parameter]:
    """gearmand's options that have no counterpart of ours (see gearmand_options)."""
    return [
        click.Option(["-t", "--threads"], type=int, help="gearmand's I/O threads (ignored)."),
        click.Option(["-R", "--round-robin"], is_flag=True, default=None, help="(always on)"),
        click.Option(["--hashtable-buckets"], type=int, help="(ignored)"),
        click.Option(
            ["-r", "--protocol"],
            multiple=True,
            help="gearmand protocol module: http turns on the HTTP listener (port 8080 "
            "unless --http-port says otherwise).",
        ),
        click.Option(["--libsqlite3-db"], help="-q libsqlite3: the SQLite file."),
        click.Option(["--libsqlite3-table"], help="-q libsqlite3: table prefix."),
        click.Option(["--store-queue-on-shutdown"], is_flag=True, default=None, help="(always)"),
        click.Option(["--libpq-conninfo"], help="-q Postgres: libpq connection string."),
        click.Option(["--libpq-table"], help="-q Postgres: table prefix."),
        click.Option(["--mysql-host"], help="-q MySQL: host."),
        click.Option(["--mysql-port"], type=int, help="-q MySQL: port."),
        click.Option(["--mysql-user"], help="-q MySQL: user."),
        click.Option(["--mysql-password"], help="-q MySQL: password."),
        click.Option(["--mysql-db"], help="-q MySQL: database."),
        click.Option(["--mysql-table"], help="-q MySQL: table prefix."),
        click.Option(["--redis-server"], help="-q redis: host."),
        click.Option(["--redis-port"], type=int, help="-q redis: port."),
        click.Option(["--redis-password"], help="-q redis: password."),
        click.Option(["--redis-prefix"], help="-q redis: key prefix."),
        click.Option(["--libmemcached-servers"], help="(ignored: no memcached queue)"),
        click.Option(["--libmemcached-prefix"], help="(ignored: no memcached queue)"),
        click.Option(
            ["--check-args"], is_flag=True, hidden=True, help="Check the options and exit."
        ),
    ]


#: Added to ``serve`` below; folded into our settings by _apply_gearmand_options.
_GEARMAND_PARAMS = _gearmand_params()
_GEARMAND_ONLY = [p.name for p in _GEARMAND_PARAMS if p.name and p.name != "check_args"]


@click.command(cls=_GearmandCommand, context_settings={"help_option_names": ["-h", "--help"]})
@version_option()
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
@click.option(
    "--http-port",
    type=int,
    help="Also serve HTTP on this port: health checks (/healthz, /readyz), the HTTP/JSON "
    "gateway (/v1/...) and gearmand's -r http form. Off by default; needs geartrain[http].",
)
@click.option(
    "--http-listen",
    multiple=True,
    help="Address of the HTTP listener; repeat for several. Default: the --listen addresses.",
)
@click.option(
    "--http-job-timeout",
    type=float,
    help="Longest an HTTP request waits for its foreground job, in seconds (a request may "
    "ask for less with ?timeout=); default 0, no limit.",
)
@click.option("-b", "--backlog", type=int, help="listen() backlog (default 1024).")
@click.option(
    "-j",
    "--job-retries",
    type=int,
    help="Attempts before a job whose workers fail is dropped (0 = unlimited).",
)
@click.option(
    "--retry",
    multiple=True,
    metavar="GLOB=ATTEMPTS[,OPTION=VALUE...]",
    help="Retry failed background jobs of the functions matching GLOB, at most ATTEMPTS "
    "runs; options backoff=exponential|fixed, min=SECONDS, max=SECONDS, "
    "on=fail,exception,lost,timeout. Repeatable; the first match wins.",
)
@click.option(
    "--dead-letter",
    is_flag=True,
    default=None,
    help="Keep background jobs that fail with no --retry policy as dead jobs too.",
)
@click.option(
    "--dead-letter-max-jobs", type=int, help="Dead jobs kept at most (default 10000; 0 = any)."
)
@click.option(
    "--dead-letter-max-age",
    type=float,
    help="Seconds a dead job is kept at most (default 604800, a week; 0 = forever).",
)
@click.option(
    "--dead-letter-max-bytes",
    type=int,
    help="Bytes of dead jobs kept at most (default 64 MiB; 0 = any).",
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
    "--queue-type",
    "queue",
    help="Persistent queue URL: sqlite:///FILE (default: geartrain.sqlite3 in the state "
    "directory), postgresql://…, mysql://…, redis://…, or none; or a gearmand queue type "
    "(builtin, libsqlite3, Postgres, MySQL, redis) with its options below.",
)
@click.option("--queue-prefix", help="Table or key prefix of the persistent queue.")
@click.option(
    "--import-gearmand",
    "import_gearmand",
    help="At start-up, import the jobs of a gearmand queue (URL).",
)
@click.option(
    "--max-packet-size",
    type=int,
    help="Largest packet body accepted, in bytes (default 4 GiB - 1, the protocol's limit).",
)
@click.option(
    "--spool-threshold",
    type=int,
    help="Bodies of this many bytes or more are kept in a spool file, not in memory "
    "(default 1 MiB).",
)
@click.option(
    "--max-memory",
    metavar="SIZE",
    callback=_size,
    help="Memory budget over what the server holds for peers (job payloads in memory, "
    "unsent output, bodies being received), in bytes or with K, M, G: above 90 % of it "
    "reading pauses on clients that add to it, below 70 % it resumes. Default a quarter "
    "of physical memory; 0 = no budget.",
)
@click.option(
    "--spool-directory",
    help="Directory of the spool files (default: spool beside the SQLite queue file, or in "
    "the state directory). Files there are unlinked as soon as they are made.",
)
@click.option(
    "--verbose",
    type=click.Choice(list(LEVELS), case_sensitive=False),
    help="Log level (default NOTICE).",
)
@click.option("-v", "more_verbose", count=True, help="One log level more per -v (-vv: DEBUG).")
@click.option(
    "-l",
    "--log-file",
    help="Log file; 'stderr' (default in the foreground) or 'none'. With -d the default is "
    "geartrain.log in the state directory.",
)
@click.option("--syslog", is_flag=True, default=None, help="Also log to syslog.")
@click.option("-P", "--pid-file", help="Write the server's pid here; removed at exit.")
@click.option(
    "-d",
    "--daemon",
    is_flag=True,
    default=None,
    help="Run in the background; exits 0 only once the port is listening.",
)
@click.option("-u", "--user", help="Run as this user (privileges are dropped first).")
@click.option("-f", "--file-descriptors", type=int, help="Raise the open-files limit to this.")
@click.option("--coredump", is_flag=True, default=None, help="Leave a core file on a crash.")
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
@click.option(
    "--permissions",
    help="Permissions file (TOML): which certificate identities and addresses may submit "
    "to, work on and administer what; read again on SIGHUP. Default: none, everyone may "
    "do everything.",
)
def serve(config_file: str | None, **options: Any) -> None:
    """Run the Gearman job server in the foreground (or with -d in the background).

    Every option of gearmand 1.1 is accepted, also from a gearmand option file
    (--config-file FILE or @FILE). Options also come from the environment as
    GEARTRAIN_<OPTION> (GEARTRAIN_PORT=4731).
    """
    check_only = options.pop("check_args")
    try:
        http_module = any(p.lower() == "http" for p in options.get("protocol") or ())
        notices = _apply_gearmand_options(options)
        settings = _settings(config_file, options)
        if http_module and settings.http_port is None:
            settings.http_port = GEARMAND_HTTP_PORT
        settings.validate()
        if settings.user:
            _become(settings.user)
        _set_limits(settings)
        if tls_wanted(settings):
            # As the user we run as, who rereads them on SIGHUP; before any fork.
            server_context(settings)
        if settings.permissions:
            Permissions.load(settings.permissions)  # as the user who rereads it on SIGHUP
        if check_only:
            return
        _default_log_file(settings)
        # Before forking, so that a log file that cannot be opened is reported here.
        _configure_logging(settings)
    except (ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from exc
    notify = _daemonize() if settings.daemon else None
    logger.log(NOTICE, "geartrain %s, %s build", __version__, _build.build())
    for notice in notices:
        logger.log(NOTICE, "%s", notice)
    try:
        code = _run(settings, notify)
    finally:
        if settings.pid_file:
            with contextlib.suppress(OSError):
                os.unlink(settings.pid_file)
    sys.exit(code)


def _apply_gearmand_options(options: dict[str, Any]) -> list[str]:
    """Fold gearmand's spellings into ours; return the notices to log at start-up.

    Removes gearmand's own options from ``options``, leaving only Settings fields.
    """
    gearmand = {name: options.pop(name) for name in _GEARMAND_ONLY}
    notices = [IGNORED[name] for name in IGNORED if gearmand.get(name) not in (None, (), False)]
    for protocol in gearmand["protocol"]:
        if protocol.lower() != "http":
            raise ValueError(f"unknown protocol module {protocol!r} (gearmand has only http)")
    queue = options.get("queue")
    if queue is not None and "://" not in queue and queue.lower() != "none":
        plugin = gearmand_queue(queue, gearmand)
        options["queue"] = plugin.url
        if plugin.prefix and options.get("queue_prefix") is None:
            options["queue_prefix"] = plugin.prefix
        if plugin.import_from and options.get("import_gearmand") is None:
            options["import_gearmand"] = plugin.import_from
    steps = options.pop("more_verbose")
    if steps:
        names = list(LEVELS)
        current = names.index((options.get("verbose") or "NOTICE").upper())
        options["verbose"] = names[min(current + steps, len(names) - 1)]
    return notices


def _settings(config_file: str | None, options: dict[str, Any]) -> Settings:
    values: dict[str, Any] = load_file(config_file) if config_file else {}
    for name, value in options.items():
        if value is None or value == ():
            continue
        values[name] = (
            list(value) if name in ("listen", "http_listen", "ssl_listen", "retry") else value
        )
    if "port" not in values and os.environ.get("GEARMAND_PORT"):
        values["port"] = int(os.environ["GEARMAND_PORT"])
    tls_options.server_environment(values)
    return Settings(**values)


def _become(user: str) -> None:
    """Switch to ``user`` (gearmand's -u), before any file is opened or created."""
    _import_before_switching()
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"-u {user}: no such user") from None
    if os.geteuid() == entry.pw_uid:
        return
    if os.geteuid() != 0:
        raise ValueError(f"-u {user}: must be root to switch users")
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    # The state directory and anything else found through HOME are now the user's.
    os.environ.update(HOME=entry.pw_dir, USER=user, LOGNAME=user)
    os.environ.pop("XDG_STATE_HOME", None)


def _import_before_switching() -> None:
    """Import what the server imports on demand while the interpreter is surely readable.

    The interpreter's library may not be readable by the user we switch to (a Python
    installed under root's home): the server itself must not depend on reading it later.
    """
    import concurrent.futures.thread  # noqa: F401 - asyncio resolves names in a thread
    import encodings.idna  # noqa: F401 - asyncio and uvloop encode host names with it
    import logging.handlers  # noqa: F401 - --syslog

    import geartrain.server.app
    import geartrain.server.persistence  # noqa: F401

    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401


#: Without -f, the open-files limit is raised to the hard limit, up to this many.
_MAX_DEFAULT_OPEN_FILES = 1 << 20


def _set_limits(settings: Settings) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if settings.file_descriptors:
        wanted = settings.file_descriptors
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
        except (ValueError, OSError) as exc:
            raise ValueError(f"-f {wanted}: cannot raise the open-files limit: {exc}") from exc
    elif soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        # Every connection and every queued spooled job holds a descriptor. The soft limit
        # (1024 under systemd) is kept low for programs using select(); the hard one is
        # there for programs like this one to raise it to.
        target = min(hard, _MAX_DEFAULT_OPEN_FILES) if hard != resource.RLIM_INFINITY else 0
        target = target or _MAX_DEFAULT_OPEN_FILES
        if target > soft:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if settings.coredump:
        _, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def _default_log_file(settings: Settings) -> None:
    """A daemon has no terminal: without -l it logs to geartrain.log in the state directory."""
    if settings.daemon and settings.log_file is None:
        directory = state_directory()
        directory.mkdir(parents=True, exist_ok=True)
        settings.log_file = str(directory / "geartrain.log")


def _configure_logging(settings: Settings) -> None:
    """Log to the chosen target; the server reopens a log file on SIGHUP."""
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
        handler = logging.FileHandler(target)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT, "%Y-%m-%d %H:%M:%S"))
    root.addHandler(handler)
    if settings.syslog:
        root.addHandler(_syslog_handler())


#: The local syslog socket; tests point it elsewhere.
SYSLOG_SOCKET = os.environ.get("GEARTRAIN_SYSLOG_SOCKET", "/dev/log")


def _syslog_handler() -> logging.Handler:
    handler = logging.handlers.SysLogHandler(
        address=SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_USER
    )
    # As gearmand: ident, then the message; the level goes into the priority.
    handler.setFormatter(logging.Formatter("geartrain[%(process)d]: %(name)s: %(message)s"))
    return handler


def _run(settings: Settings, notify: int | None) -> int:
    from geartrain.server.app import Server, StartupError, run

    def started(server: Server) -> None:
        if settings.pid_file:
            _write_pid_file(settings.pid_file)
        if notify is not None:
            _notify(notify, b"ok")

    try:
        run(settings, on_started=started)
    except StartupError as exc:
        logger.critical("%s", exc)
        if notify is not None:
            _notify(notify, b"error: " + str(exc).encode())
        return 1
    return 0


def _write_pid_file(path: str) -> None:
    with open(path, "w") as handle:
        handle.write(f"{os.getpid()}\n")


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


serve.params.extend(tls_options.server_params())
serve.params.extend(_GEARMAND_PARAMS)


def _environment_names() -> None:
    """GEARTRAIN_<OPTION> (as documented) and GEARTRAIN_SERVE_<OPTION> (click's own) both work.

    <OPTION> is each long spelling (GEARTRAIN_CONFIG for --config, GEARTRAIN_QUEUE_TYPE for
    --queue-type) as well as the parameter's own name.
    """
    for param in serve.params:
        # Not -V: a GEARTRAIN_VERSION left in the environment must not stop the server.
        if isinstance(param, click.Option) and param.name and not (param.hidden or param.is_eager):
            spellings = [o[2:] for o in param.opts if o.startswith("--")]
            names = dict.fromkeys(n.replace("-", "_").upper() for n in [*spellings, param.name])
            param.envvar = [f"GEARTRAIN_{name}" for name in names]
            param.envvar.append(f"GEARTRAIN_SERVE_{param.name.upper()}")


_environment_names()
