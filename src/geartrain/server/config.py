"""Server settings: every default documented where it is defined.

Precedence: defaults < TOML config file < environment (GEARTRAIN_*) < command line.
The command line layer is applied by ``geartrain serve``; this module knows the
defaults and the file format.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pwd
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geartrain.protocol.codec import DEFAULT_SPOOL_AT
from geartrain.protocol.constants import DEFAULT_MAX_PACKET_SIZE, DEFAULT_PORT

from .budget import default_budget
from .dead import DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES, DEFAULT_MAX_JOBS
from .retry import RetryPolicies, parse_policies, policy_text

#: gearmand's NOTICE level (start-up, shutdown, one line per dropped job) between
#: logging's INFO and WARNING.
NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")

#: gearmand's level names, most severe first, and the logging level each maps to.
LEVELS = {
    "FATAL": logging.CRITICAL,
    "ALERT": logging.CRITICAL,
    "CRITICAL": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "NOTICE": NOTICE,
    "INFO": logging.INFO,
    "DEBUG": logging.DEBUG,
}


@dataclass(slots=True)
class Settings:
    """Everything a server is told: ``geartrain serve`` builds one from its options.

    Every field has the default ``geartrain serve`` uses; pass only what differs, e.g.
    ``Settings(listen=["127.0.0.1"], port=0, queue="none")`` for a server on a free
    loopback port keeping background jobs in memory. :class:`~geartrain.Server` reads
    ``queue`` (opened at start-up), the listening and job options; the logging, daemon,
    user and limit fields are acted on by ``geartrain serve`` only.
    """

    #: Addresses to listen on; empty = every address (IPv4 and IPv6), like gearmand.
    listen: list[str] = field(default_factory=list)
    #: TCP port (IANA-assigned Gearman port).
    port: int = DEFAULT_PORT
    #: listen() backlog; gearmand's 32 is too small for connection bursts.
    backlog: int = 1024
    #: Attempts before a job whose workers keep dying or timing out fails; 0 = unlimited.
    job_retries: int = 0
    #: Sleeping workers NOOPed per newly runnable job; 0 = all of them.
    worker_wakeup: int = 0
    #: Job handle prefix; None = ``H:<hostname>`` as gearmand.
    job_handle_prefix: str | None = None
    #: Treat every client as if it sent OPTION_REQ exceptions.
    exceptions: bool = False
    #: Persistent queue URL: sqlite:///file, postgresql://, mysql://, redis://, or none.
    #: None = the SQLite file ``geartrain.sqlite3`` in :func:`state_directory`.
    queue: str | None = None
    #: Table/key prefix for the persistent queue.
    queue_prefix: str = "geartrain"
    #: Largest packet body accepted: by default what the protocol allows (4 GiB - 1),
    #: as gearmand. Bigger packets get ERROR ARGUMENT_TOO_LARGE and a close.
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
    #: Bodies of at least this many bytes are received into a spool file and sent on
    #: from it, never held in memory.
    spool_threshold: int = DEFAULT_SPOOL_AT
    #: Where spool files go (each is unlinked as soon as it is made, so nothing is left
    #: behind). None = ``spool`` beside the SQLite queue file, or in the state directory.
    spool_directory: str | None = None
    #: The memory budget in bytes over what the server holds for others (in-memory job
    #: payloads, unsent output, bodies being received): above 90 % of it the server stops
    #: reading from clients that add to it, below 70 % it reads them again. None = a
    #: quarter of the machine's physical memory; 0 = no budget.
    max_memory: int | None = None
    #: Port of the HTTP listener (health checks, the HTTP/JSON gateway, gearmand's ``-r
    #: http`` form); None = no HTTP listener. Needs the ``http`` extra (aiohttp).
    http_port: int | None = None
    #: Addresses the HTTP listener binds; empty = the same as ``listen``.
    http_listen: list[str] = field(default_factory=list)
    #: Longest an HTTP request waits for its foreground job, in seconds; a request may ask
    #: for less. 0 = as long as the client waits (a proxy in front usually gives up first).
    http_job_timeout: float = 0.0
    #: Log level name (gearmand's names); NOTICE logs start-up and shutdown.
    verbose: str = "NOTICE"
    #: Log file; None or "stderr" = standard error, "none" = no log.
    log_file: str | None = None
    pid_file: str | None = None
    daemon: bool = False
    #: SO_KEEPALIVE and its tuning, applied to accepted sockets (not only the
    #: listener, unlike gearmand 1.1: issue #386). -1 or 0 = kernel default.
    keepalive: bool = False
    keepalive_idle: int = -1
    keepalive_interval: int = -1
    keepalive_count: int = -1
    #: Seconds a graceful stop (SIGUSR1) waits for running jobs before it gives up.
    graceful_timeout: float = 60.0
    #: Accept the admin ``shutdown`` command (off: gearmand removed it in 1.1.15).
    admin_shutdown: bool = False
    #: Retry policies of failed background jobs, ``GLOB=ATTEMPTS[,backoff=...][,min=S]
    #: [,max=S][,on=...]``, first match wins (see docs/retries.md); none = a failed job
    #: ends, as on gearmand.
    retry: list[str] = field(default_factory=list)
    #: Keep background jobs that fail with no retry policy as dead jobs too (jobs that
    #: exhaust a policy are always kept).
    dead_letter: bool = False
    #: Bounds of the dead-letter queue (0 = none); the oldest dead jobs go first.
    dead_letter_max_jobs: int = DEFAULT_MAX_JOBS
    dead_letter_max_age: float = DEFAULT_MAX_AGE
    dead_letter_max_bytes: int = DEFAULT_MAX_BYTES
    #: Import the jobs of a gearmand queue at start-up (URL, see persistence docs).
    import_gearmand: str | None = None
    #: Run as this user: privileges are dropped first thing, as gearmand does.
    user: str | None = None
    #: Raise the open-files limit to this many (0 = leave it).
    file_descriptors: int = 0
    #: Also log to syslog (the local syslog socket, as gearmand's --syslog).
    syslog: bool = False
    #: Let fatal signals leave a core file (raises the core size limit).
    coredump: bool = False
    #: gearmand's --ssl: every listener on ``port`` speaks TLS only (no plain port left).
    ssl: bool = False
    #: A TLS listener on this port beside the plain one on ``port``; None = none.
    ssl_port: int | None = None
    #: Addresses of the ``ssl_port`` listener; empty = the same as ``listen``.
    ssl_listen: list[str] = field(default_factory=list)
    #: The server's certificate chain, PEM (it may hold the key too); read again on SIGHUP.
    ssl_certificate: str | None = None
    #: The certificate's private key, PEM; None = in ``ssl_certificate``.
    ssl_key: str | None = None
    #: CA certificates that sign client certificates, PEM (needed to verify clients).
    ssl_ca_file: str | None = None
    #: Client certificates: none (not asked for, as gearmand), optional (checked when
    #: sent) or required (a handshake without a valid one fails).
    ssl_verify_client: str = "none"
    #: Oldest TLS version accepted: TLSv1.2 or TLSv1.3.
    ssl_min_version: str = "TLSv1.2"
    #: Seconds a peer has to finish its TLS handshake before it is disconnected; a
    #: handshake is a few round trips, so 10 s allows for slow links and little else.
    ssl_handshake_timeout: float = 10.0
    #: Permissions file (TOML): who may submit to, work on and administer what; read
    #: again on SIGHUP. None = no file: every peer may do everything, as in gearmand.
    permissions: str | None = None

    def queue_url(self) -> str:
        """The persistent queue to use, the default one resolved.

        Returns:
            ``queue``, or the SQLite URL of ``geartrain.sqlite3`` in the state directory.
        """
        if self.queue is not None:
            return self.queue
        return f"sqlite:///{state_directory() / 'geartrain.sqlite3'}"

    def spool_path(self) -> Path:
        """The spool directory, the default resolved (it is made when first needed)."""
        if self.spool_directory is not None:
            return Path(self.spool_directory)
        url = self.queue_url()
        if url.startswith("sqlite:///"):
            return Path(url.removeprefix("sqlite:///").split("?")[0]).parent / "spool"
        return state_directory() / "spool"

    def memory_budget(self) -> int:
        """The memory budget in bytes, the default resolved (0 = none)."""
        if self.max_memory is not None:
            return self.max_memory
        return default_budget()

    def handle_prefix(self) -> bytes:
        prefix = self.job_handle_prefix
        if prefix is None:
            prefix = "H:" + socket.gethostname()
        return prefix.encode()

    def validate(self) -> None:
        """Check the values that cannot be checked by their type.

        Raises:
            ValueError: a value is out of range; the message names it.
        """
        if self.verbose.upper() not in LEVELS:
            raise ValueError(f"unknown log level {self.verbose!r}; use one of {list(LEVELS)}")
        if not 0 <= self.port < 65536:  # 0 = any free port (tests)
            raise ValueError(f"port {self.port} out of range")
        if self.http_port is not None and not 0 <= self.http_port < 65536:
            raise ValueError(f"http-port {self.http_port} out of range")
        if not 0 <= self.http_job_timeout < float("inf"):
            raise ValueError("http-job-timeout must be 0 (no limit) or a number of seconds")
        if len(self.handle_prefix()) >= 52:
            raise ValueError("job handle prefix too long: handles must stay under 64 bytes")
        if self.job_retries < 0 or self.worker_wakeup < 0:
            raise ValueError("job-retries and worker-wakeup must be 0 or more")
        if not 1024 <= self.max_packet_size <= DEFAULT_MAX_PACKET_SIZE:
            raise ValueError(
                f"max-packet-size must be between 1024 and {DEFAULT_MAX_PACKET_SIZE} bytes"
            )
        if self.max_memory is not None and self.max_memory < 0:
            raise ValueError("max-memory must be 0 (no budget) or a number of bytes")
        if self.spool_threshold < 65536:
            raise ValueError("spool-threshold must be at least 65536 bytes")
        if min(self.dead_letter_max_jobs, self.dead_letter_max_age, self.dead_letter_max_bytes) < 0:
            raise ValueError("dead-letter bounds must be 0 (none) or more")
        self.retry_policies()
        self._validate_tls()

    def _validate_tls(self) -> None:
        if self.ssl_verify_client not in ("none", "optional", "required"):
            raise ValueError("ssl-verify-client must be none, optional or required")
        if self.ssl_min_version not in ("TLSv1.2", "TLSv1.3"):
            raise ValueError("ssl-min-version must be TLSv1.2 or TLSv1.3")
        if self.ssl_port is not None and not 0 <= self.ssl_port < 65536:
            raise ValueError(f"ssl-port {self.ssl_port} out of range")
        if self.ssl_handshake_timeout <= 0:
            raise ValueError("ssl-handshake-timeout must be more than 0 seconds")

    def retry_policies(self) -> RetryPolicies:
        """The ``retry`` option parsed.

        Raises:
            ValueError: a policy is malformed (:class:`~geartrain.server.retry.PolicyError`).
        """
        return parse_policies(self.retry)


_SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from ``123``, ``512K``, ``64M``, ``2G`` or ``1T`` (binary multiples; a
    trailing ``B`` or ``iB`` is allowed).

    Raises:
        ValueError: not a whole number with a known suffix.
    """
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    suffix = value[-1:] if value[-1:] in _SIZE_SUFFIXES else ""
    number = value.removesuffix(suffix) if suffix else value
    if not number.isdigit():
        raise ValueError(f"{text!r} is not a size (bytes, or with K, M, G or T)")
    return int(number) * _SIZE_SUFFIXES[suffix]


def state_directory() -> Path:
    """Where the server keeps its state (the default SQLite queue) when not told.

    ``$STATE_DIRECTORY`` when systemd gives one (``StateDirectory=``), /var/lib/geartrain for
    root, else ``$XDG_STATE_HOME/geartrain`` or ``~/.local/state/geartrain`` of the user the
    server runs as. Never the current directory: a service started from / must not write
    /geartrain.sqlite3.
    """
    given = os.environ.get("STATE_DIRECTORY")
    if given:
        return Path(given.split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/geartrain")
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path(pwd.getpwuid(os.geteuid()).pw_dir) / ".local" / "state"
    return base / "geartrain"


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file; keys are option names with ``-`` or ``_``."""
    with open(path, "rb") as handle:
        raw = tomllib.load(handle)
    section = raw.get("server", raw)
    known = {f.name for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    for key, value in section.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ValueError(f"{path}: unknown option {key!r}")
        if name == "max_memory" and isinstance(value, str):
            value = parse_size(value)  # written as on the command line: "512M"
        values[name] = value
    # A [retry] table sits beside [server] (or inside it): GLOB = "ATTEMPTS,..." or
    # GLOB = {attempts = N, backoff = "...", ...}, in the order written.
    table = raw.get("retry") if "server" in raw and "retry" not in section else section.get("retry")
    if table is not None:
        values["retry"] = _retry_table(path, table)
    return values


def _retry_table(path: str | Path, table: object) -> list[str]:
    """The ``[retry]`` table (or a list of ``--retry`` strings) as ``--retry`` strings."""
    if isinstance(table, list) and all(isinstance(item, str) for item in table):
        return list(table)
    if not isinstance(table, dict):
        raise ValueError(f"{path}: retry must be a table of GLOB = policy")
    try:
        return [policy_text(pattern, value) for pattern, value in table.items()]
    except ValueError as exc:
        raise ValueError(f"{path}: [retry]: {exc}") from None
