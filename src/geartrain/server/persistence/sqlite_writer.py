"""The SQLite queue's writer process: owns the database file, applies batches, replies.

Run by :class:`~geartrain.server.persistence.sqlite.SqliteStore` as
``python -I sqlite_writer.py PARENT_PID``; it is a script on purpose and imports only the
standard library, so it starts in a few tens of milliseconds and never loads the server.

Why a process and not a thread: binding a batch's parameters is Python work that needs
the GIL, and the server's event loop holds the GIL nearly all the time under load. A
writer thread therefore waited for the GIL more than it worked (it got about a fifth of
it), so a commit of 2,000 jobs took 15 ms instead of 5 and submissions waited on it.
In its own process the writer has an interpreter to itself; the server pays only for
serializing the rows and one pipe write per batch.

Protocol, on stdin/stdout: every message is a 4-byte big-endian length and a tuple in
``marshal`` format (version 2, which has no back-references). marshal is only readable by
the same Python version, which the writer is: the server starts it with its own
interpreter. For flat lists of ints and bytes it is cheaper than pickle (about 1,100
fewer instructions per stored job in the server, counted with callgrind), and it cannot
carry class references the writer would have to import. Requests, one at a time, each
answered before the next is read:

* ``("open", path, synchronous, busy_timeout, pragmas, table, columns, chunks_table,
  dead_table)`` opens the file in WAL mode and creates the tables if missing; answers
  the parameter limit.
* ``("dead",)`` answers every dead job's row, in id order.
* ``("load",)`` answers ``("rows", flat)`` chunks of flattened rows in id order, then
  ``("ok", None)``.
* ``("ping",)`` runs ``SELECT 1`` on the open file and answers ``("ok", None)``.
* ``("chunked",)`` answers the list of job ids that have stored chunks.
* ``("chunk", job_id, seq)`` answers one stored chunk of a large payload, or None.
* ``("write", removes, flat_adds, replace, retries, chunk_removes, chunks, reschedules,
  dead_removes, dead_adds)`` applies one batch as one transaction: deletes (rows, then the chunks of
  ``chunk_removes``), chunk upserts (``(job_id, seq, bytes)`` tuples), inserts
  (``INSERT OR REPLACE`` when ``replace``: the batch may have been committed by a writer
  that died before answering), retry counts, then reschedules (``(job_id, when,
  retries)`` of failed jobs waiting for their next attempt), then dead jobs: deletes by
  id, then upserts of whole rows.

Every answer is ``("ok", result)``, ``("rows", flat)`` or ``("error", type_name,
message)``; an error rolls back and leaves the process running. The process ends at
end of input (the server closed the pipe) and when the server dies: it asks the kernel
for SIGKILL on its parent's death, so an orphan can never keep committing into a file
that a restarted server is reading.
"""

from __future__ import annotations

import contextlib
import fcntl
import marshal
import os
import signal
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

HEADER = struct.Struct(">I")
#: Columns per row, in the order the server's StoredJob has its fields.
ROW_WIDTH = 8
#: The leading columns that rows without a run-at time, reducer or retries need.
NARROW_WIDTH = 5
#: Columns holding bytes (function, unique, data; reducer) in full and narrow rows.
WIDE_BLOBS = (1, 2, 3, 6)
NARROW_BLOBS = (1, 2, 3)
#: The most rows in one INSERT (a power of two; fewer if SQLite's parameter limit is low).
MAX_STATEMENT_ROWS = 512
#: Shortest run of consecutive ids deleted with BETWEEN rather than in an IN list.
MIN_RUN = 8
#: Rows per "rows" message while loading: a few MB, so replay streams.
LOAD_CHUNK = 20_000
MARSHAL_VERSION = 2
PIPE_SIZE = 1024 * 1024
#: Checkpoint once no commit came for this long (seconds) ...
CHECKPOINT_QUIET = 0.2
#: ... or once the WAL file has grown this large (bytes) under sustained load.
CHECKPOINT_WAL_SIZE = 64 * 1024 * 1024
#: How often (seconds) the checkpointer looks again while commits keep coming.
CHECKPOINT_POLL = 0.05
#: A WAL file that grew under sustained load is cut back to this size once a
#: checkpoint has caught up (bytes).
WAL_SIZE_LIMIT = 64 * 1024 * 1024


def read_message(stream: BinaryIO) -> tuple[Any, ...] | None:
    """The next message, or None at end of input."""
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    body = stream.read(size)
    if len(body) < size:
        return None
    message = marshal.loads(body)
    if not isinstance(message, tuple):
        raise ValueError(f"expected a tuple, got {type(message).__name__}")
    return message


def pack_message(message: tuple[Any, ...]) -> bytes:
    body = marshal.dumps(message, MARSHAL_VERSION)
    return HEADER.pack(len(body)) + body


class QueueFile:
    """One SQLite database holding the queue table; every method is one request."""

    def __init__(self) -> None:
        self.con: sqlite3.Connection | None = None
        self.table = ""
        self.columns = ""
        self.chunks_table = ""
        self.dead_table = ""
        self.max_params = 999
        self._statements: dict[tuple[str, int], str] = {}
        self.checkpointer: Checkpointer | None = None

    def open(
        self,
        path: str,
        synchronous: str,
        busy_timeout: float,
        pragmas: dict[str, int | str],
        table: str,
        columns: str,
        chunks_table: str,
        dead_table: str,
    ) -> int:
        con = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
        try:
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise QueueFileError(f"sqlite: {path}: cannot enable WAL mode (got {mode})")
            con.execute(f"PRAGMA synchronous={synchronous}")
            # Checkpoints run on their own thread (see Checkpointer), not inside a commit.
            con.execute("PRAGMA wal_autocheckpoint=0")
            con.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            for key, value in pragmas.items():
                con.execute(f"PRAGMA {key}={value}")
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {table} ("
                "id INTEGER PRIMARY KEY, priority INTEGER NOT NULL, function BLOB NOT NULL,"
                " unique_key BLOB NOT NULL, data BLOB NOT NULL,"
                " when_to_run INTEGER NOT NULL DEFAULT 0, reducer BLOB NOT NULL DEFAULT x'',"
                " retries INTEGER NOT NULL DEFAULT 0)"
            )
            # Large payloads, a bounded chunk per row (see the store's docstring).
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {chunks_table} ("
                "job_id INTEGER NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,"
                " PRIMARY KEY (job_id, seq))"
            )
            # Background jobs that failed for good (the dead-letter queue).
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {dead_table} ("
                "id INTEGER PRIMARY KEY, handle BLOB NOT NULL, function BLOB NOT NULL,"
                " unique_key BLOB NOT NULL, data BLOB NOT NULL, priority INTEGER NOT NULL,"
                " reducer BLOB NOT NULL, died REAL NOT NULL, attempts BLOB NOT NULL)"
            )
        except BaseException:
            con.close()
            raise
        self.con, self.table, self.columns = con, table, columns
        self.chunks_table = chunks_table
        self.dead_table = dead_table
        self.max_params = con.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self.checkpointer = Checkpointer(path, busy_timeout)
        return self.max_params

    def load(self) -> Iterator[list[Any]]:
        cursor = self._connection().execute(f"SELECT {self.columns} FROM {self.table} ORDER BY id")
        while rows := cursor.fetchmany(LOAD_CHUNK):
            yield [value for row in rows for value in row]

    def ping(self) -> None:
        self._connection().execute("SELECT 1").fetchone()

    def dead(self) -> list[tuple[Any, ...]]:
        sql = (
            "SELECT id, handle, function, unique_key, data, priority, reducer, died, attempts"
            f" FROM {self.dead_table} ORDER BY id"
        )
        return [tuple(row) for row in self._connection().execute(sql)]

    def chunked(self) -> list[int]:
        cursor = self._connection().execute(f"SELECT DISTINCT job_id FROM {self.chunks_table}")
        return [job_id for (job_id,) in cursor]

    def chunk(self, job_id: int, seq: int) -> bytes | None:
        sql = f"SELECT data FROM {self.chunks_table} WHERE job_id = ? AND seq = ?"
        row = self._connection().execute(sql, (job_id, seq)).fetchone()
        return None if row is None else bytes(row[0])

    def write(
        self,
        removes: list[int],
        flat_adds: list[Any],
        replace: bool,
        retries: list[tuple[int, int]],
        chunk_removes: list[int],
        chunks: list[tuple[int, int, bytes]],
        reschedules: list[tuple[int, int, int]],
        dead_removes: list[int],
        dead_adds: list[tuple[Any, ...]],
    ) -> None:
        con = self._connection()
        con.execute("BEGIN IMMEDIATE")
        try:
            ranges, singles = id_ranges(removes)
            if ranges:
                con.executemany(f"DELETE FROM {self.table} WHERE id BETWEEN ? AND ?", ranges)
            for ids in self._pieces(singles, 1):
                con.execute(self._sql("delete", len(ids)), ids)
            if chunk_removes:
                con.executemany(
                    f"DELETE FROM {self.chunks_table} WHERE job_id = ?",
                    [(job_id,) for job_id in chunk_removes],
                )
            if chunks:
                # OR REPLACE: a chunk batch is re-sent after a writer died answering it.
                sql = f"INSERT OR REPLACE INTO {self.chunks_table} (job_id, seq, data)"
                con.executemany(sql + " VALUES (?, ?, ?)", chunks)
            adds, kind = _narrowed(flat_adds), "insert-narrow"
            if adds is None:
                adds, kind = _as_bytearrays(flat_adds, ROW_WIDTH, WIDE_BLOBS), "insert"
            if replace:
                kind += "-replace"
            width = NARROW_WIDTH if kind.startswith("insert-narrow") else ROW_WIDTH
            for params in self._pieces(adds, width):
                con.execute(self._sql(kind, len(params) // width), params)
            self._update(retries, reschedules)
            self._write_dead(dead_removes, dead_adds)
            con.execute("COMMIT")
            if self.checkpointer is not None:
                self.checkpointer.nudge()
        except BaseException:
            # SQLite may already have rolled back (e.g. SQLITE_FULL); only undo what is left.
            if con.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
            raise

    def _update(
        self, retries: list[tuple[int, int]], reschedules: list[tuple[int, int, int]]
    ) -> None:
        """Retry counts, then the run-at times and counts of rescheduled failed jobs."""
        con = self._connection()
        if retries:
            con.executemany(
                f"UPDATE {self.table} SET retries = ? WHERE id = ?",
                [(count, job_id) for job_id, count in retries],
            )
        if reschedules:
            con.executemany(
                f"UPDATE {self.table} SET when_to_run = ?, retries = ? WHERE id = ?",
                [(when, count, job_id) for job_id, when, count in reschedules],
            )

    def _write_dead(self, removes: list[int], adds: list[tuple[Any, ...]]) -> None:
        con = self._connection()
        if removes:
            con.executemany(
                f"DELETE FROM {self.dead_table} WHERE id = ?", [(dead_id,) for dead_id in removes]
            )
        if adds:
            con.executemany(
                f"INSERT OR REPLACE INTO {self.dead_table} (id, handle, function, unique_key,"
                " data, priority, reducer, died, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                adds,
            )

    def _pieces(self, params: list[Any], width: int) -> Iterator[list[Any]]:
        """``params`` (``width`` per row) cut into statements of power-of-two row counts.

        Many rows per statement, because a statement per row costs a Python call and a
        VM start each; but only a few distinct sizes, because compiling a fresh
        2,000-row INSERT cost more than running it: with sizes 512, 256, …, 1 every
        statement ever needed stays in sqlite3's statement cache.
        """
        rows = len(params) // width
        size = self._max_rows(width)
        start = 0
        while rows:
            while size > rows:
                size //= 2
            end = start + size * width
            yield params[start:end]
            start, rows = end, rows - size

    def _max_rows(self, width: int) -> int:
        size = 1
        while size * 2 <= min(MAX_STATEMENT_ROWS, self.max_params // width):
            size *= 2
        return size

    def _sql(self, kind: str, rows: int) -> str:
        sql = self._statements.get((kind, rows))
        if sql is None:
            if kind == "delete":
                sql = f"DELETE FROM {self.table} WHERE id IN ({','.join('?' * rows)})"
            else:
                # Plain INSERT is a third cheaper than OR REPLACE; REPLACE is needed
                # only when a batch may already be in the table.
                verb = "INSERT OR REPLACE" if kind.endswith("-replace") else "INSERT"
                columns = self.columns.split(", ")
                if kind.startswith("insert-narrow"):
                    columns = columns[:NARROW_WIDTH]
                row = "(" + ",".join("?" * len(columns)) + ")"
                values = ",".join([row] * rows)
                sql = f"{verb} INTO {self.table} ({', '.join(columns)}) VALUES {values}"
            self._statements[(kind, rows)] = sql
        return sql

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
            self.checkpointer = None
        if self.con is not None:
            with contextlib.suppress(sqlite3.Error):
                self.con.close()
            self.con = None

    def _connection(self) -> sqlite3.Connection:
        if self.con is None:
            raise QueueFileError("sqlite: database is not open")
        return self.con


class Checkpointer:
    """Copies committed WAL frames into the database file when the writer pauses.

    SQLite's automatic checkpoint runs inside the COMMIT that crosses 1,000 WAL pages,
    and with synchronous=FULL it includes an fsync of the database file: under load one
    commit in a dozen took 60-110 ms instead of 3, and every submission waiting on it
    waited that long. Checkpointing on a thread beside the writer after every commit
    did not block it, but its writes and fsyncs still made the writer's own fsyncs
    slow now and then (60-150 ms). So checkpoints wait for a quiet moment: no commit
    for ``CHECKPOINT_QUIET`` seconds, or a WAL grown past ``CHECKPOINT_WAL_SIZE``
    under sustained load. They are PASSIVE, on a connection of their own, so they
    never block the writer (the sqlite3 module releases the GIL while SQLite works).
    """

    def __init__(self, path: str, busy_timeout: float) -> None:
        self._con = sqlite3.connect(path, timeout=busy_timeout, check_same_thread=False)
        self._wal = path + "-wal"
        self._last_commit = 0.0
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="checkpointer", daemon=True)
        self._thread.start()

    def nudge(self) -> None:
        """Note a commit."""
        self._last_commit = time.monotonic()
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()
        with contextlib.suppress(sqlite3.Error):
            self._con.close()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while not self._stopping and not self._due():
                time.sleep(CHECKPOINT_POLL)
            if self._stopping:
                return  # closing the writer's connection checkpoints the rest
            with contextlib.suppress(sqlite3.Error):  # the next commit tries again
                self._con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _due(self) -> bool:
        if time.monotonic() - self._last_commit >= CHECKPOINT_QUIET:
            return True
        try:
            return os.path.getsize(self._wal) >= CHECKPOINT_WAL_SIZE
        except OSError:
            return True


def id_ranges(ids: list[int]) -> tuple[list[tuple[int, int]], list[int]]:
    """``ids`` as runs of consecutive ids ``(first, last)``, and the ids left over.

    Workers finish jobs in about the order they were queued, so a batch's removes are
    mostly long runs of consecutive ids, and ``DELETE … WHERE id BETWEEN`` a run costs
    about a third less per row than an ``IN`` list (which SQLite first copies into a
    temporary index). Runs are found by halving: a slice is one run when its last id
    minus its first equals its length less one, which is O(1) to check and exact for
    sorted distinct ids, so only the slices around gaps are split further.
    """
    ordered = sorted(set(ids))  # exactness needs sorted, distinct ids
    ranges: list[tuple[int, int]] = []
    singles: list[int] = []
    todo = [(0, len(ordered))] if ordered else []
    while todo:
        low, high = todo.pop()
        if ordered[high - 1] - ordered[low] == high - 1 - low and high - low >= MIN_RUN:
            ranges.append((ordered[low], ordered[high - 1]))
        elif high - low <= MIN_RUN * 2:
            singles.extend(ordered[low:high])
        else:
            middle = (low + high) // 2
            todo.append((middle, high))
            todo.append((low, middle))
    return ranges, singles


class QueueFileError(Exception):
    """A refusal of the writer's own (not SQLite's); the server raises it as QueueError."""


def _narrowed(flat: list[Any]) -> list[Any] | None:
    """Rows without their three trailing columns, when all of those hold defaults.

    The usual job has no run-at time, no reducer and no retries yet; binding five
    parameters a row instead of eight saves a fifth of the insert. The checks and the
    copy are slice operations, done in C.
    """
    if any(flat[5::ROW_WIDTH]) or any(flat[6::ROW_WIDTH]) or any(flat[7::ROW_WIDTH]):
        return None
    narrow: list[Any] = [None] * (len(flat) // ROW_WIDTH * NARROW_WIDTH)
    for column in range(NARROW_WIDTH):
        narrow[column::NARROW_WIDTH] = flat[column::ROW_WIDTH]
    return _as_bytearrays(narrow, NARROW_WIDTH, NARROW_BLOBS)


def _as_bytearrays(flat: list[Any], width: int, columns: tuple[int, ...]) -> list[Any]:
    """``flat`` with the blob columns as bytearrays, which sqlite3 binds directly.

    sqlite3 binds int, float, str and bytearray at once, but looks for an adapter for
    anything else, bytes included: a registry lookup and two attribute lookups per
    value, a third of the writer's time before this. A copy is cheaper.
    """
    for column in columns:
        flat[column::width] = map(bytearray, flat[column::width])
    return flat


def serve(queue: QueueFile, requests: BinaryIO, replies: BinaryIO) -> None:
    """Answer requests until end of input."""
    while (request := read_message(requests)) is not None:
        try:
            command, *args = request
            if command == "open":
                reply: tuple[Any, ...] = ("ok", queue.open(*args))
            elif command == "load":
                for flat in queue.load():
                    replies.write(pack_message(("rows", flat)))
                reply = ("ok", None)
            elif command == "ping":
                queue.ping()
                reply = ("ok", None)
            elif command == "dead":
                reply = ("ok", queue.dead())
            elif command == "chunked":
                reply = ("ok", queue.chunked())
            elif command == "chunk":
                reply = ("ok", queue.chunk(*args))
            elif command == "write":
                queue.write(*args)
                reply = ("ok", None)
            else:
                raise QueueFileError(f"unknown request {command!r}")
        except Exception as exc:  # reported to the server, which decides what it means
            reply = ("error", type(exc).__name__, str(exc))
        replies.write(pack_message(reply))
        replies.flush()
    queue.close()


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill us when the server dies (Linux), and check it is alive."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the server died before prctl took effect
        sys.exit(0)


def widen_pipes() -> None:
    """Let a whole batch fit in the pipe (Linux), so the server writes it in one go.

    With the default 64 KiB a 2,000-job batch took several event-loop turns to hand
    over; 1 MiB is the kernel's default ceiling for an unprivileged process.
    """
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is None:
        return
    for fd in (0, 1):
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, set_size, PIPE_SIZE)


def main(argv: list[str]) -> None:
    # The server decides when we stop (it closes our input): a Ctrl-C or a SIGTERM sent
    # to the whole process group must not kill the writer under a server still flushing.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)
    if len(argv) > 1:
        die_with_parent(int(argv[1]))
    widen_pipes()
    serve(QueueFile(), sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main(sys.argv)
