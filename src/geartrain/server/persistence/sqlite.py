"""The default persistent queue: one SQLite file, written by a child process.

URL: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``, with optional
query parameters ``prefix`` (table ``<prefix>_jobs``, default ``geartrain_jobs``),
``synchronous`` (``full``, the default, or ``normal``) and ``busy_timeout`` (seconds,
default 5).

Process. The database file is owned by a small writer process (``sqlite_writer.py``,
standard library only) that the store starts when it opens and talks to over a pipe:
the GIL-bound work of an SQLite write (binding every parameter of every row) would
otherwise compete with the event loop for the one GIL, and lose. The event loop never
blocks on it: the group-commit writer (``_batch.py``) marshals a whole batch into one
pipe write and awaits the one reply. While the child commits one batch, new adds,
removes and retry updates queue up on the loop and become the next transaction: one
``BEGIN IMMEDIATE … COMMIT`` per batch, so one fsync covers many jobs. If the child
dies, the store treats it as a lost connection: it starts a new one and goes on (see
``_batch.py``); the child dies with the server, so no orphan writes on.

Durability. The database runs in WAL mode with ``synchronous=FULL`` by default: COMMIT
returns only after the WAL is fsynced, so every acknowledged job survives a kill -9 of
the server, an OS crash and a power cut (as far as the disk honours fsync). Group commit
is what makes FULL affordable. ``synchronous=normal`` skips that fsync: acknowledged jobs
still survive a crash of the server process (the WAL is in the OS page cache), but the
last transactions can be lost if the machine itself goes down.

Schema: ``<prefix>_jobs(id INTEGER PRIMARY KEY, priority, function, unique_key, data,
when_to_run, reducer, retries)``; ``id`` is the rowid, so rows are stored and loaded in
id order with no extra index, and empty or ``-`` uniques never collide. A large
(spooled) payload goes to ``<prefix>_chunks(job_id, seq, data, PRIMARY KEY (job_id,
seq))``, one row per chunk of at most ``chunk_bytes`` (4 MiB), far below SQLite's
default 1,000,000,000-byte limit on a value; its job row has an empty ``data``. Chunks
cross the pipe one batch at a time, so neither process holds the whole payload. Both
tables are created if missing, so a file made before chunking gains the second table.
Dead jobs (``server/dead.py``) go to ``<prefix>_dead(id INTEGER PRIMARY KEY, handle,
function, unique_key, data, priority, reducer, died, attempts)``, created if missing
too, so a file made before the dead-letter queue gains it.

Errors (a full disk, ``PRAGMA max_page_count`` reached, a file locked by another process
beyond ``busy_timeout``, a corrupt file) roll the transaction back and fail that batch's
adds with :class:`~geartrain.server.persistence.base.QueueError` carrying SQLite's
message; committed rows are untouched and the store keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import marshal
import os
import sqlite3
import sys
from collections.abc import Mapping
from itertools import chain
from typing import Any, Unpack

from . import sqlite_writer
from ._batch import Batch, GroupCommitStore, StoreOptions
from ._rows import SQL_COLUMNS, check_prefix, dead_from_row
from .base import DeadJob, QueueError, StoredJob
from .sqlite_writer import HEADER, MARSHAL_VERSION, ROW_WIDTH

#: gearmand waits 6 s on a locked file; 5 s keeps a submitter's wait under typical
#: client timeouts while riding out a backup tool's short exclusive lock.
DEFAULT_BUSY_TIMEOUT = 5.0
SYNCHRONOUS_MODES = ("full", "normal")
#: How long a writer whose input was closed may take to finish and exit before it is
#: killed (a kill is safe: SQLite rolls back an unfinished transaction).
EXIT_GRACE = 2.0


class WriterGone(ConnectionError):
    """The writer process ended or stopped answering: treated as a lost connection."""


class SqliteStore(GroupCommitStore):
    """Queue store in an SQLite database file (WAL mode, group commit).

    Args:
        path: database file; created if missing (its directory must exist).
        prefix: the table is ``<prefix>_jobs``.
        synchronous: ``"full"`` (default, survives power loss) or ``"normal"``
            (survives a crash of the server process only).
        busy_timeout: seconds to wait for a lock held by another connection.
        pragmas: extra ``PRAGMA name=value`` settings applied after opening, e.g.
            ``{"max_page_count": 10000}`` to cap the file size.
        **options: group-commit tuning, see :class:`StoreOptions`.
    """

    name = "sqlite"

    def __init__(
        self,
        path: str,
        *,
        prefix: str = "geartrain",
        synchronous: str = "full",
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        pragmas: Mapping[str, int | str] | None = None,
        **options: Unpack[StoreOptions],
    ) -> None:
        super().__init__(**options)
        if synchronous.lower() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}: {synchronous!r}")
        self.path = path
        self.table = f'"{check_prefix(prefix)}_jobs"'
        self.chunks_table = f'"{prefix}_chunks"'
        self.dead_table = f'"{prefix}_dead"'
        self.synchronous = synchronous.upper()
        self.busy_timeout = busy_timeout
        self.pragmas = dict(pragmas or {})
        for key, value in self.pragmas.items():
            check_prefix(key)
            if not isinstance(value, int):
                check_prefix(value)
        self._child: asyncio.subprocess.Process | None = None
        #: The lock file that says this queue is in use; see _try_claim.
        self.claim_path = f"{path}-{prefix}.lock"
        self._claim_fd: int | None = None
        # A writer that died while committing leaves the outcome of that batch unknown:
        # the first batch after a restart of the writer may find its rows already there.
        self._maybe_written = False

    # -- hooks -------------------------------------------------------------------------

    async def _connect(self) -> None:
        await self._disconnect()
        self._child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",  # stdlib only: no user site, no PYTHON* variables, no cwd on the path
            sqlite_writer.__file__,
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        await self._request(
            "open",
            self.path,
            self.synchronous,
            self.busy_timeout,
            self.pragmas,
            self.table,
            SQL_COLUMNS,
            self.chunks_table,
            self.dead_table,
        )

    async def _disconnect(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        self._maybe_written = True
        if child.stdin is not None:
            child.stdin.close()  # end of input: the writer finishes and exits
        try:
            async with asyncio.timeout(EXIT_GRACE):
                await child.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()

    async def _try_claim(self) -> str | None:
        # An flock on a file beside the database, held by this process (not the writer,
        # which is restarted after a failure): the kernel frees it when the process ends,
        # however it ended. It is kept across reconnects of the writer.
        if self._claim_fd is not None:
            return None
        fd = os.open(self.claim_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            return f"{self.claim_path} is locked by process {holder or 'unknown'}"
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        self._claim_fd = fd
        return None

    async def _release_claim(self) -> None:
        fd, self._claim_fd = self._claim_fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor releases the flock

    async def _create(self) -> None:
        pass  # the writer creates the table when it opens the file

    async def _load(self) -> list[StoredJob]:
        jobs: list[StoredJob] = []
        self._send(("load",))
        while True:
            reply = await self._reply()
            if reply[0] != "rows":
                return jobs
            flat = reply[1]
            make = StoredJob._make
            jobs.extend(
                make(flat[start : start + ROW_WIDTH]) for start in range(0, len(flat), ROW_WIDTH)
            )

    async def _write(self, batch: Batch) -> None:
        flat_adds = list(chain.from_iterable(batch.adds))  # StoredJob is its own row
        await self._request(
            "write",
            batch.removes,
            flat_adds,
            self._maybe_written,
            batch.retries,
            batch.chunk_removes,
            batch.chunks,
            batch.reschedules,
            batch.dead_removes,
            list(map(tuple, batch.dead_adds)),
        )
        self._maybe_written = False

    async def _ping(self) -> None:
        await self._request("ping")

    async def _load_dead(self) -> list[DeadJob]:
        rows: list[tuple[object, ...]] = await self._request("dead")
        return [dead_from_row(row) for row in rows]

    async def _chunked_ids(self) -> set[int]:
        return set(await self._request("chunked"))

    async def _read_chunk(self, job_id: int, seq: int) -> bytes | None:
        chunk: bytes | None = await self._request("chunk", job_id, seq)
        return chunk

    def _is_connection_error(self, exc: BaseException) -> bool:
        # Only the writer process can be lost; every SQLite error is about this batch
        # (or the file) and a new writer would not help.
        return isinstance(exc, WriterGone | BrokenPipeError | ConnectionResetError)

    # -- the pipe ----------------------------------------------------------------------

    async def _request(self, *message: Any) -> Any:
        self._send(message)
        return (await self._reply())[1]

    def _send(self, message: tuple[Any, ...]) -> None:
        child = self._child
        if child is None or child.stdin is None or child.stdin.is_closing():
            raise WriterGone("sqlite: writer process is not running")
        body = marshal.dumps(message, MARSHAL_VERSION)
        child.stdin.write(HEADER.pack(len(body)))
        child.stdin.write(body)

    async def _reply(self) -> tuple[Any, ...]:
        child = self._child
        if child is None or child.stdout is None:
            raise WriterGone("sqlite: writer process is not running")
        try:
            head = await child.stdout.readexactly(HEADER.size)
            body = await child.stdout.readexactly(HEADER.unpack(head)[0])
        except asyncio.IncompleteReadError:
            code = await _exit_code(child)
            raise WriterGone(f"sqlite: writer process exited ({code})") from None
        reply: tuple[Any, ...] = marshal.loads(body)
        if reply[0] == "error":
            raise _error_from(reply[1], reply[2])
        return reply


def _error_from(type_name: str, message: str) -> Exception:
    """The writer's exception, as the same sqlite3 class where there is one."""
    cls = getattr(sqlite3, type_name, None)
    if isinstance(cls, type) and issubclass(cls, sqlite3.Error):
        return cls(message)
    if type_name == "QueueFileError":
        return QueueError(message)
    return QueueError(f"sqlite: {type_name}: {message}")


async def _exit_code(child: asyncio.subprocess.Process) -> str:
    try:
        async with asyncio.timeout(1.0):
            code = await child.wait()
    except TimeoutError:
        return "still running, output closed"
    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"
