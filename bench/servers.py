"""Start and stop the job servers under test, each on a free port of 127.0.0.1.

A server command is a template with ``{port}`` (and optionally ``{tmp}``, a
private directory removed afterwards, and ``{prefix}``, a table/key prefix of its
own) that runs the server in the foreground. It is started directly, without a
shell, in its own session, so the PID we sample is the server itself and stopping
the session leaves nothing behind.

Persistent-queue variants keep their jobs in a file under ``{tmp}`` (SQLite) or in
a database service under ``{prefix}``; that table or those keys are removed before
the server starts and after it stops, so every run starts from an empty queue and
none is left in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import procstat

GEARMAND_ARGS = "-L 127.0.0.1 -p {port} --threads=0 -q builtin -l none --hashtable-buckets=100003"
GEARTRAIN_ARGS = "-m geartrain serve -L 127.0.0.1 -p {port}"

#: Large bodies are spooled to files in the run's private directory.
SPOOL_ARGS = "--spool-directory {tmp}/spool"

#: The persistent-queue variants ``--queues`` can add (see :func:`queue_spec`).
QUEUES = ("sqlite", "postgres", "mysql", "redis", "gearmand-sqlite")

#: Where the database-backed variants keep their jobs: the local services the test suite
#: uses too. Each server run gets its own table or keys there (``prefix``).
QUEUE_URLS = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/test",
    "mysql": "mysql://root@127.0.0.1:3306/test",
    "redis": "redis://127.0.0.1:6379/0",
}

#: Their default ports, to find a local service's process (see :func:`store_pid`).
DEFAULT_PORTS = {
    "postgresql": 5432,
    "postgres": 5432,
    "mysql": 3306,
    "mariadb": 3306,
    "redis": 6379,
    "rediss": 6379,
}

#: gearmand's libsqlite3 queue commits every job on its own (about 1 000 submits/s on a
#: 2-core VM), so 100 000 jobs would take minutes. Its runs are capped at this many jobs:
#: seconds per row, and still rates over a real run.
GEARMAND_SQLITE_MAX_JOBS = 5000

#: Seconds allowed to connect to a database and drop a run's table or keys.
DROP_TIMEOUT = 30.0


@dataclass
class ServerSpec:
    name: str
    command: str  # template: {port}, {tmp}, {prefix}
    big_args: str = ""  # appended for payloads over 64 MiB (for servers that cap below)
    goals: bool = True  # the goals apply (not to variants shown for information)
    background_only: bool = False  # a persistent queue: it stores background jobs only
    max_jobs: int = 0  # at most this many jobs per row run (0: as many as the row says)
    queue_url: str = ""  # database URL (no prefix) whose {prefix} table/keys are dropped

    def command_for(self, payload_size: int) -> str:
        if self.big_args and payload_size > 64 << 20:
            return f"{self.command} {self.big_args}"
        return self.command


def find_gearmand() -> str | None:
    return shutil.which("gearmand") or (
        "/usr/sbin/gearmand" if os.access("/usr/sbin/gearmand", os.X_OK) else None
    )


def default_specs(
    queues: Sequence[str] = (), urls: Mapping[str, str] | None = None
) -> list[ServerSpec]:
    """gearmand (when installed) as the reference, geartrain, then the ``queues`` variants.

    Raises:
        ValueError: an unknown queue name, or gearmand-sqlite without gearmand.
    """
    specs = []
    gearmand = find_gearmand()
    if gearmand:
        specs.append(ServerSpec("gearmand", f"{gearmand} {GEARMAND_ARGS}"))
    geartrain = f"{shlex.quote(sys.executable)} {GEARTRAIN_ARGS}"
    specs.append(ServerSpec("geartrain", f"{geartrain} --queue none {SPOOL_ARGS}"))
    specs += [queue_spec(q, geartrain, gearmand, {**QUEUE_URLS, **(urls or {})}) for q in queues]
    return specs


def queue_spec(
    queue: str, geartrain: str, gearmand: str | None, urls: Mapping[str, str]
) -> ServerSpec:
    """A persistent-queue variant; shown for information (the goals are for in-memory)."""
    if queue == "gearmand-sqlite":
        if not gearmand:
            raise ValueError("gearmand-sqlite needs gearmand, which is not installed")
        args = GEARMAND_ARGS.replace("-q builtin", "-q libsqlite3 --libsqlite3-db={tmp}/gq.db")
        return ServerSpec(
            queue,
            f"{gearmand} {args}",
            goals=False,
            background_only=True,
            max_jobs=GEARMAND_SQLITE_MAX_JOBS,
        )
    if queue == "sqlite":  # a fresh file in the run's private directory
        return ServerSpec(
            "geartrain-sqlite",
            f"{geartrain} --queue sqlite:///{{tmp}}/q.db",
            goals=False,
            background_only=True,
        )
    if queue not in QUEUE_URLS:
        raise ValueError(f"unknown queue {queue!r}; have {', '.join(QUEUES)}")
    base = urls[queue]
    url = f"{base}{'&' if '?' in base else '?'}prefix={{prefix}}"
    return ServerSpec(
        f"geartrain-{queue}",
        f"{geartrain} --queue {shlex.quote(url)}",
        goals=False,
        background_only=True,
        queue_url=base,
    )


def store_pid(spec: ServerSpec) -> int | None:
    """The local database service a variant keeps its queue in: the CPU it spends during
    a run is work done for the server under test, not noise from other processes.

    None for a remote database or a Unix socket (its CPU then counts as other processes').
    """
    parts = urlsplit(spec.queue_url)
    port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    if parts.hostname not in ("127.0.0.1", "localhost", "::1") or not port:
        return None
    return procstat.listener_pid(port)


def version_of(spec: ServerSpec) -> str:
    """The server's own version string, or '?'."""
    argv = shlex.split(spec.command)
    if "geartrain" in argv:
        argv = [*argv[: argv.index("geartrain") + 1], "--version"]
    else:
        argv = [*argv[:1], "--version"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


_runs = itertools.count(1)


class Server:
    """One running server process."""

    def __init__(
        self, spec: ServerSpec, log_path: str, payload_size: int = 0, start_timeout: float = 20.0
    ) -> None:
        self.spec = spec
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="geartrain-bench-")
        self.prefix = f"bench_{os.getpid()}_{next(_runs)}"
        if spec.queue_url:  # a crashed earlier run with this PID may have left it
            try:
                drop_queue(spec.queue_url, self.prefix)
            except Exception as exc:
                shutil.rmtree(self.tmp, ignore_errors=True)
                raise RuntimeError(f"{spec.name}: database unusable: {exc!r}") from exc
        command = spec.command_for(payload_size)
        argv = shlex.split(command.format(port=self.port, tmp=self.tmp, prefix=self.prefix))
        with open(log_path, "ab") as log:
            log.write(f"\n=== {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        self.pid = self.proc.pid
        deadline = time.monotonic() + start_timeout
        while not _listening(self.port):
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"{spec.name} exited with {self.proc.returncode}; see {log_path}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{spec.name} did not listen within {start_timeout:.0f} s")
            time.sleep(0.02)
        time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # the session we created, and only it
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.spec.queue_url:
            try:
                drop_queue(self.spec.queue_url, self.prefix)
            except Exception as exc:  # the run's figures stand; say what is left behind
                print(f"{self.spec.name}: could not drop {self.prefix}: {exc!r}", file=sys.stderr)


@contextlib.contextmanager
def running(spec: ServerSpec, log_path: str, payload_size: int = 0) -> Iterator[Server]:
    server = Server(spec, log_path, payload_size)
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------ database queue storage


def drop_queue(url: str, prefix: str, timeout: float = DROP_TIMEOUT) -> None:
    """Remove the table (SQL) or keys (Redis) of the geartrain queue named ``prefix``.

    Bounded by ``timeout`` seconds in all, connecting included.
    """
    scheme = urlsplit(url).scheme.lower()
    url = _driver_url(url)
    if scheme in ("postgresql", "postgres"):
        coro = _drop_postgres(url, prefix)
    elif scheme in ("mysql", "mariadb"):
        coro = _drop_mysql(url, prefix)
    elif scheme in ("redis", "rediss", "unix"):
        coro = _drop_redis(url, prefix)
    else:
        raise ValueError(f"no way to drop a queue at {url!r}")
    asyncio.run(asyncio.wait_for(coro, timeout))


def _driver_url(url: str) -> str:
    """The URL without the query parameters that only geartrain understands."""
    parts = urlsplit(url)
    ours = {"prefix", "table", "batch", "timeout"}
    params = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ours]
    return urlunsplit(parts._replace(query=urlencode(params)))


async def _drop_postgres(url: str, prefix: str) -> None:
    import asyncpg

    con = await asyncpg.connect(url)
    try:
        await con.execute(f'DROP TABLE IF EXISTS "{prefix}_jobs"')
    finally:
        con.terminate()  # never waits on the server, unlike close()


async def _drop_mysql(url: str, prefix: str) -> None:
    import aiomysql

    parts = urlsplit(url)
    con = await aiomysql.connect(
        host=parts.hostname or "localhost",
        port=parts.port or 3306,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password or ""),
        db=unquote(parts.path.lstrip("/")) or None,
        unix_socket=dict(parse_qsl(parts.query)).get("unix_socket"),
        autocommit=True,
    )
    try:
        async with con.cursor() as cur:
            # MariaDB answers DROP TABLE IF EXISTS of a missing table with a note, which
            # aiomysql turns into a Python warning: expected before every start, not shown.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                await cur.execute(f"DROP TABLE IF EXISTS `{prefix}_jobs`")
    finally:
        con.close()


async def _drop_redis(url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
