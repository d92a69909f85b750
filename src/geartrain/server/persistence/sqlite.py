"""The default persistent queue: one SQLite file, written by one dedicated thread.

URL: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``, with optional
query parameters ``prefix`` (table ``<prefix>_jobs``, default ``geartrain_jobs``),
``synchronous`` (``full``, the default, or ``normal``) and ``busy_timeout`` (seconds,
default 5).

Threading. The standard-library ``sqlite3`` module blocks, so every call on the
connection runs on one dedicated thread (a single-worker executor, which keeps the
connection on the thread that created it). The event loop never waits on it: the
group-commit writer (``_batch.py``) hands a whole batch to the thread, and the thread's
result comes back to the loop through ``call_soon_threadsafe`` (that is what
``loop.run_in_executor`` does under the hood), where the add futures are resolved.
While the thread commits one batch, new adds, removes and retry updates queue up on the
loop and become the next transaction: one ``BEGIN IMMEDIATE … COMMIT`` with
``executemany`` per batch, so one fsync covers many jobs.

Durability. The database runs in WAL mode with ``synchronous=FULL`` by default: COMMIT
returns only after the WAL is fsynced, so every acknowledged job survives a kill -9 of
the server, an OS crash and a power cut (as far as the disk honours fsync). Group commit
is what makes FULL affordable. ``synchronous=normal`` skips that fsync: acknowledged jobs
still survive a crash of the server process (the WAL is in the OS page cache), but the
last transactions can be lost if the machine itself goes down.

Schema: ``<prefix>_jobs(id INTEGER PRIMARY KEY, priority, function, unique_key, data,
when_to_run, reducer, retries)``; ``id`` is the rowid, so rows are stored and loaded in
id order with no extra index, and empty or ``-`` uniques never collide.

Errors (a full disk, ``PRAGMA max_page_count`` reached, a file locked by another process
beyond ``busy_timeout``, a corrupt file) roll the transaction back and fail that batch's
adds with :class:`~geartrain.server.persistence.base.QueueError` carrying SQLite's
message; committed rows are untouched and the store keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from typing import TypeVar, Unpack

from ._batch import Batch, GroupCommitStore, StoreOptions
from ._rows import SQL_COLUMNS, check_prefix, from_row
from .base import QueueError, StoredJob

T = TypeVar("T")

#: gearmand waits 6 s on a locked file; 5 s keeps a submitter's wait under typical
#: client timeouts while riding out a backup tool's short exclusive lock.
DEFAULT_BUSY_TIMEOUT = 5.0
SYNCHRONOUS_MODES = ("full", "normal")


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
        self.synchronous = synchronous.upper()
        self.busy_timeout = busy_timeout
        self.pragmas = dict(pragmas or {})
        for key, value in self.pragmas.items():
            check_prefix(key)
            if not isinstance(value, int):
                check_prefix(value)
        self._thread: ThreadPoolExecutor | None = None
        self._con: sqlite3.Connection | None = None
        self._max_params = 999  # SQLite's smallest limit; read from the library on open

    async def _call(self, func: Callable[[], T]) -> T:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="geartrain-sqlite")
        return await asyncio.get_running_loop().run_in_executor(self._thread, func)

    async def close(self) -> None:
        await super().close()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=False)

    # -- hooks (each runs its body on the dedicated thread) ---------------------------

    async def _connect(self) -> None:
        await self._call(self._connect_sync)

    async def _disconnect(self) -> None:
        if self._con is not None and self._thread is not None:
            await self._call(self._disconnect_sync)

    async def _create(self) -> None:
        await self._call(self._create_sync)

    async def _load(self) -> list[StoredJob]:
        return await self._call(self._load_sync)

    async def _write(self, batch: Batch) -> None:
        await self._call(lambda: self._write_sync(batch))

    def _is_connection_error(self, exc: BaseException) -> bool:
        # There is no connection to lose: every error is about this batch (or the file)
        # and reopening would not help.
        return False

    # -- thread side ------------------------------------------------------------------

    def _connect_sync(self) -> None:
        con = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        self._max_params = con.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        try:
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise QueueError(f"sqlite: {self.path}: cannot enable WAL mode (got {mode})")
            con.execute(f"PRAGMA synchronous={self.synchronous}")
            for key, value in self.pragmas.items():
                con.execute(f"PRAGMA {key}={value}")
        except BaseException:
            con.close()
            raise
        self._con = con

    def _disconnect_sync(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            with contextlib.suppress(sqlite3.Error):
                con.close()

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            raise QueueError("sqlite: database is not open")
        return self._con

    def _create_sync(self) -> None:
        self._connection().execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            "id INTEGER PRIMARY KEY, priority INTEGER NOT NULL, function BLOB NOT NULL,"
            " unique_key BLOB NOT NULL, data BLOB NOT NULL,"
            " when_to_run INTEGER NOT NULL DEFAULT 0, reducer BLOB NOT NULL DEFAULT x'',"
            " retries INTEGER NOT NULL DEFAULT 0)"
        )

    def _load_sync(self) -> list[StoredJob]:
        rows = self._connection().execute(f"SELECT {SQL_COLUMNS} FROM {self.table} ORDER BY id")
        return [from_row(row) for row in rows]

    def _write_sync(self, batch: Batch) -> None:
        # As many rows per statement as SQLite allows parameters (32766 in 3.32+,
        # 999 before): each sqlite3 call releases and re-takes the GIL, which the busy
        # event-loop thread holds most of the time, so one statement per row made a
        # 2000-job commit wait ~50 ms for the GIL; now a batch is a few calls.
        con = self._connection()
        con.execute("BEGIN IMMEDIATE")
        try:
            for ids in _chunks(batch.removes, self._max_params):
                marks = ",".join("?" * len(ids))
                con.execute(f"DELETE FROM {self.table} WHERE id IN ({marks})", ids)
            for jobs in _chunks(batch.adds, self._max_params // 8):
                values = ",".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(jobs))
                con.execute(
                    # Plain INSERT (a third cheaper than OR REPLACE): an embedded
                    # database never leaves a commit's outcome unknown, so a batch is
                    # only ever written again after it was rolled back.
                    f"INSERT INTO {self.table} ({SQL_COLUMNS}) VALUES {values}",
                    list(chain.from_iterable(jobs)),  # StoredJob is its own row
                )
            if batch.retries:
                con.executemany(
                    f"UPDATE {self.table} SET retries = ? WHERE id = ?",
                    [(retries, job_id) for job_id, retries in batch.retries],
                )
            con.execute("COMMIT")
        except BaseException:
            # SQLite may already have rolled back (e.g. SQLITE_FULL); only undo what is left.
            if con.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
            raise


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
