"""MariaDB/MySQL queue store (aiomysql).

URL: ``mysql://user:password@host:3306/database`` or ``mariadb://…`` (same thing), with
query parameters ``prefix`` (table ``<prefix>_jobs``, default ``geartrain_jobs``) and
``unix_socket`` (path of the server's socket, instead of TCP).

One connection, one transaction per batch, a handful of round trips whatever its size:
the inserts go as multi-row ``INSERT … VALUES (…), (…)`` statements of about a MiB each
(never above ``max_allowed_packet``), deletes as one ``DELETE … WHERE id IN (…)``, retry
counts as ``UPDATE … SET retries = CASE id …``. We build these statements ourselves, with
bytes as hex literals: that needs no escaping (ids and counts are ints), is correct for
any bytes whatever the connection charset and ``sql_mode``, and costs a fraction of the
CPU of aiomysql's ``executemany``, which escapes every value through Python calls.
Inserts are upserts on ``id`` (``ON DUPLICATE KEY UPDATE``) so that a batch re-sent after
its COMMIT reply was lost is harmless.

Durability is InnoDB's: with ``innodb_flush_log_at_trx_commit=1`` (the default) a job is
on disk when its add resolves; 2 or 0 trade that for speed and lose up to a second of
acknowledged jobs on a crash of the database host.

Large (spooled) payloads go to ``<prefix>_chunks(job_id, seq, data LONGBLOB, PRIMARY
KEY (job_id, seq))``, one row per chunk, in transactions of their own before the job's
row (which has an empty ``data``); see ``_batch.py``. A chunk is at most ``chunk_bytes``
(4 MiB) and never more than fits, as hex, in one statement below the server's
max_allowed_packet (read at connect time), so a job of any size up to the protocol's
4 GiB is stored, and no statement or result row ever nears the limit.

The tables (InnoDB, binary columns so function names and uniques keep their exact bytes)
is created on first use. A lost connection (``KILL``, server restart, "MySQL server has
gone away") is reopened by the group-commit writer with jittered exponential backoff; see
``_batch.py``.

Failure handling is ours: the store holds one aiomysql connection (no pool) and never
calls ``ping(reconnect=True)``, the only place aiomysql reconnects by itself, so every
lost connection reaches the group-commit writer.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Unpack

from ._batch import Batch, GroupCommitStore, StoreOptions
from ._rows import DEAD_COLUMNS, SQL_COLUMNS, as_row, check_prefix, dead_from_row, from_row
from .base import DeadJob, StoredJob

if TYPE_CHECKING:
    import aiomysql

#: max_allowed_packet of MariaDB 10.2+ and MySQL 8; replaced by the server's value once
#: connected.
DEFAULT_MAX_PACKET = 16 * 1024 * 1024
#: Target size of one INSERT: a few round trips per batch, and the server never
#: holds one huge statement (aiomysql's executemany used the same figure).
STATEMENT_BYTES = 1024 * 1024
#: Bytes of an INSERT of one job besides its hex-encoded blobs (an upper bound).
_STATEMENT_OVERHEAD = 1024
#: Retry counts per UPDATE: its CASE is searched linearly for every row.
RETRIES_PER_STATEMENT = 500
#: One row of the INSERT, in :data:`SQL_COLUMNS` order. A hex literal is a binary string
#: and needs no escaping rules at all (immune to NO_BACKSLASH_ESCAPES and to the
#: connection charset); without a ``_binary`` introducer it costs the server's parser a
#: quarter less than with one.
_ROW = "(%d,X'%s',X'%s',X'%s',%d,%d,X'%s',%d)"
#: Upserts on ``id``, so that a batch re-sent after its COMMIT reply was lost is harmless.
_UPSERT_TAIL = (
    " ON DUPLICATE KEY UPDATE"
    " priority = VALUES(priority), function = VALUES(function),"
    " unique_key = VALUES(unique_key), data = VALUES(data),"
    " when_to_run = VALUES(when_to_run), reducer = VALUES(reducer),"
    " retries = VALUES(retries)"
)
#: Client-side error codes (CR_*) meaning the connection is gone: 2006 server has gone
#: away, 2013 lost connection during query, 2003 can't connect, 2055 lost (SSL).
_LOST_CONNECTION_CODES = {2003, 2006, 2013, 2055}
#: Server-side codes for the same: 1927 connection killed (MariaDB), 1053 shutdown in
#: progress, 1317 query interrupted.
_KILLED_CODES = {1053, 1317, 1927}


class MysqlStore(GroupCommitStore):
    """Queue store in a MariaDB/MySQL table.

    Args:
        host, port, user, password, database, unix_socket: connection parameters.
        prefix: the table is ``<prefix>_jobs``.
        **options: group-commit tuning, see :class:`StoreOptions`.
    """

    name = "mysql"
    size_advice = (
        ": a row goes as SQL in one statement under the MySQL server's max_allowed_packet;"
        " raise it or use another queue"
    )

    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = 3306,
        user: str | None = None,
        password: str = "",
        database: str | None = None,
        unix_socket: str | None = None,
        prefix: str = "geartrain",
        **options: Unpack[StoreOptions],
    ) -> None:
        super().__init__(**options)
        self.connect_args: dict[str, object] = {
            "host": host,
            "port": port,
            "user": user,
            "password": password,
            "db": database,
            "unix_socket": unix_socket,
        }
        self.table = f"`{check_prefix(prefix)}_jobs`"
        self._insert_head = f"INSERT INTO {self.table} ({SQL_COLUMNS}) VALUES "
        self.chunks = f"`{prefix}_chunks`"
        self.dead = f"`{prefix}_dead`"
        self._con: aiomysql.Connection | None = None
        self.max_packet = DEFAULT_MAX_PACKET

    @property
    def thread_id(self) -> int | None:
        """The server thread of our connection (what ``KILL <id>`` takes)."""
        return None if self._con is None else int(self._con.thread_id())

    def _connection(self) -> aiomysql.Connection:
        if self._con is None or self._con.closed:
            raise ConnectionResetError("mysql: not connected")
        return self._con

    async def _connect(self) -> None:
        import aiomysql

        self._con = await aiomysql.connect(
            **self.connect_args,
            autocommit=False,
            charset="utf8mb4",
            connect_timeout=self.timeout,
        )
        _fix_bytes_escaping(self._con)
        async with self._con.cursor() as cur:
            await cur.execute("SELECT @@max_allowed_packet")
            row = await cur.fetchone()
        await self._con.commit()
        self.max_packet = int(row[0])

    @property
    def max_packet(self) -> int:
        """The server's max_allowed_packet, read at connect time."""
        return self._max_packet

    @max_packet.setter
    def max_packet(self, value: int) -> None:
        self._max_packet = value
        # A statement over max_allowed_packet makes the server drop the connection (and
        # gearmand loop, its issue #126): a row must fit in a statement of its own, with
        # its bytes as hex (two characters each) and room for the rest of the INSERT. A
        # spooled payload goes in chunks and does not count.
        self.max_job_bytes = (value - _STATEMENT_OVERHEAD) // 2

    def _chunk_size(self) -> int:
        # A chunk goes as hex in a statement of its own and comes back as one result row.
        return max(1, min(self.chunk_bytes, (self.max_packet - _STATEMENT_OVERHEAD) // 2))

    async def _disconnect(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            # close() just drops the socket; ensure_closed() would wait on a dead server.
            con.close()

    async def _try_claim(self) -> str | None:
        # A named lock is held by its connection and freed when the connection ends,
        # however the server died. Names are per server, so the database is in it.
        con = self._connection()
        async with con.cursor() as cur:
            await cur.execute(
                "SELECT GET_LOCK(CONCAT('geartrain ', DATABASE(), %s), 0)", (self.table,)
            )
            (claimed,) = await cur.fetchone()
            holder = None
            if claimed != 1:
                await cur.execute(
                    "SELECT p.ID, p.USER, p.HOST FROM information_schema.PROCESSLIST p"
                    " WHERE p.ID = IS_USED_LOCK(CONCAT('geartrain ', DATABASE(), %s))",
                    (self.table,),
                )
                holder = await cur.fetchone()
        await con.commit()
        if claimed == 1:
            return None
        if holder is None:  # freed in between: ask again
            return "a connection that just ended"
        table = self.table.strip("`")
        return f"table {table} is claimed by connection {holder[0]} of {holder[1]}@{holder[2]}"

    async def _release_claim(self) -> None:
        con = self._connection()
        async with con.cursor() as cur:
            await cur.execute(
                "SELECT RELEASE_LOCK(CONCAT('geartrain ', DATABASE(), %s))", (self.table,)
            )
        await con.commit()

    async def _ping(self) -> None:
        async with self._connection().cursor() as cur:
            await cur.execute("SELECT 1")
            await cur.fetchone()

    async def _create(self) -> None:
        con = self._connection()
        async with con.cursor() as cur:
            await _create_missing(
                cur,
                self.table,
                "id BIGINT NOT NULL PRIMARY KEY, priority TINYINT NOT NULL,"
                " function BLOB NOT NULL, unique_key BLOB NOT NULL, data LONGBLOB NOT NULL,"
                " when_to_run BIGINT NOT NULL, reducer BLOB NOT NULL, retries INT NOT NULL",
            )
            await _create_missing(
                cur,
                self.chunks,
                "job_id BIGINT NOT NULL, seq INT NOT NULL, data LONGBLOB NOT NULL,"
                " PRIMARY KEY (job_id, seq)",
            )
            await _create_missing(
                cur,
                self.dead,
                "id BIGINT NOT NULL PRIMARY KEY, handle BLOB NOT NULL, function BLOB NOT NULL,"
                " unique_key BLOB NOT NULL, data LONGBLOB NOT NULL, priority TINYINT NOT NULL,"
                " reducer BLOB NOT NULL, died DOUBLE NOT NULL, attempts MEDIUMBLOB NOT NULL",
            )
        await con.commit()

    async def _load(self) -> list[StoredJob]:
        con = self._connection()
        async with con.cursor() as cur:
            await cur.execute(f"SELECT {SQL_COLUMNS} FROM {self.table} ORDER BY id")
            rows = await cur.fetchall()
        await con.commit()  # end the read snapshot so later batches see fresh data
        return [from_row(row) for row in rows]

    async def _load_dead(self) -> list[DeadJob]:
        con = self._connection()
        async with con.cursor() as cur:
            await cur.execute(f"SELECT {DEAD_COLUMNS} FROM {self.dead} ORDER BY id")
            rows = await cur.fetchall()
        await con.commit()
        return [dead_from_row(row) for row in rows]

    async def _chunked_ids(self) -> set[int]:
        con = self._connection()
        async with con.cursor() as cur:
            await cur.execute(f"SELECT DISTINCT job_id FROM {self.chunks}")
            rows = await cur.fetchall()
        await con.commit()
        return {int(row[0]) for row in rows}

    async def _read_chunk(self, job_id: int, seq: int) -> bytes | None:
        con = self._connection()
        async with con.cursor() as cur:
            await cur.execute(
                f"SELECT data FROM {self.chunks} WHERE job_id = {int(job_id)} AND seq = {int(seq)}"
            )
            row = await cur.fetchone()
        await con.commit()
        return None if row is None else bytes(row[0])

    async def _write(self, batch: Batch) -> None:
        con = self._connection()
        try:
            async with con.cursor() as cur:
                await self._write_statements(cur, batch)
            await con.commit()
        except BaseException:
            if not con.closed:
                # The original error is the one worth reporting.
                with contextlib.suppress(Exception):
                    await con.rollback()
            raise

    async def _write_statements(self, cur: aiomysql.Cursor, batch: Batch) -> None:
        # The statements are built here rather than by aiomysql's executemany, which
        # escapes every value through three Python calls: that cost us about four times
        # the CPU of the whole write. Ids and counts are ints and bytes go as hex, so
        # nothing needs escaping.
        if batch.removes:
            ids = ",".join(map(str, batch.removes))
            await cur.execute(f"DELETE FROM {self.table} WHERE id IN ({ids})")
        if batch.chunk_removes:
            ids = ",".join(map(str, map(int, batch.chunk_removes)))
            await cur.execute(f"DELETE FROM {self.chunks} WHERE job_id IN ({ids})")
        for job_id, seq, data in batch.chunks:
            # One statement per chunk: each is as large as a statement may safely be.
            await cur.execute(
                f"INSERT INTO {self.chunks} (job_id, seq, data)"
                f" VALUES ({int(job_id)},{int(seq)},X'{data.hex()}')"
                " ON DUPLICATE KEY UPDATE data = VALUES(data)"
            )
        if batch.adds:
            for statement in self._insert_statements(batch.adds):
                await cur.execute(statement)
        if batch.retries:
            retries = list(dict(batch.retries).items())  # the last update of an id wins
            for start in range(0, len(retries), RETRIES_PER_STATEMENT):
                chunk = retries[start : start + RETRIES_PER_STATEMENT]
                cases = " ".join([f"WHEN {int(job_id)} THEN {int(n)}" for job_id, n in chunk])
                ids = ",".join([str(int(job_id)) for job_id, _ in chunk])
                await cur.execute(
                    f"UPDATE {self.table} SET retries = CASE id {cases} END WHERE id IN ({ids})"
                )
        if batch.reschedules:
            await self._write_reschedules(cur, batch.reschedules)
        if batch.dead_removes:
            ids = ",".join(map(str, map(int, batch.dead_removes)))
            await cur.execute(f"DELETE FROM {self.dead} WHERE id IN ({ids})")
        for dead in batch.dead_adds:
            # One statement each: dead jobs are few, and each may be as large as a row.
            await cur.execute(
                f"INSERT IGNORE INTO {self.dead} ({DEAD_COLUMNS}) VALUES"
                f" ({int(dead.id)},X'{dead.handle.hex()}',X'{dead.function.hex()}',"
                f"X'{dead.unique.hex()}',X'{dead.data.hex()}',{int(dead.priority)},"
                f"X'{dead.reducer.hex()}',{float(dead.died)!r},X'{dead.attempts.hex()}')"
            )

    async def _write_reschedules(
        self, cur: aiomysql.Cursor, reschedules: list[tuple[int, int, int]]
    ) -> None:
        """Run-at times and retry counts of failed jobs, two CASEs per statement."""
        for start in range(0, len(reschedules), RETRIES_PER_STATEMENT):
            chunk = reschedules[start : start + RETRIES_PER_STATEMENT]
            whens = " ".join([f"WHEN {int(job_id)} THEN {int(w)}" for job_id, w, _ in chunk])
            counts = " ".join([f"WHEN {int(job_id)} THEN {int(n)}" for job_id, _, n in chunk])
            ids = ",".join([str(int(job_id)) for job_id, _, _ in chunk])
            await cur.execute(
                f"UPDATE {self.table} SET when_to_run = CASE id {whens} END,"
                f" retries = CASE id {counts} END WHERE id IN ({ids})"
            )

    def _insert_statements(self, jobs: list[StoredJob]) -> list[str]:
        """Multi-row upserts of ``jobs``, each below the statement size limit.

        A job alone may exceed the limit (``add`` refuses only what exceeds
        max_allowed_packet): it then goes in a statement of its own.
        """
        fixed = len(self._insert_head) + len(_UPSERT_TAIL)
        limit = min(STATEMENT_BYTES, self.max_packet - 1024) - fixed  # bytes of rows
        rows = [
            _ROW % (id_, function.hex(), unique.hex(), data.hex(), priority, when, reducer.hex(), n)
            for id_, function, unique, data, priority, when, reducer, n in map(as_row, jobs)
        ]
        statements = []
        first = size = 0
        for i, row in enumerate(rows):
            if size + len(row) > limit and i > first:
                statements.append(self._insert_sql(rows[first:i]))
                first, size = i, 0
            size += len(row) + 1
        statements.append(self._insert_sql(rows[first:]))
        return statements

    def _insert_sql(self, rows: list[str]) -> str:
        return self._insert_head + ",".join(rows) + _UPSERT_TAIL

    def _is_connection_error(self, exc: BaseException) -> bool:
        import aiomysql

        if isinstance(exc, OSError | aiomysql.InterfaceError):
            return True
        if isinstance(exc, aiomysql.OperationalError) and exc.args:
            code = exc.args[0]
            if code in _LOST_CONNECTION_CODES or code in _KILLED_CODES:
                return True
        return self._con is None or self._con.closed


def _escape_bytes(value: bytes) -> str:
    # A hex literal needs no escaping rules at all (immune to NO_BACKSLASH_ESCAPES and
    # to the connection charset); _binary keeps MySQL from treating it as text.
    return f"_binary X'{value.hex()}'"


def _fix_bytes_escaping(con: aiomysql.Connection) -> None:
    """Route bytes parameters around aiomysql's broken escaper.

    aiomysql 0.3.2 escapes bytes with ``pymysql.converters.escape_bytes_prefixed``, which
    PyMySQL 1.2.3+ turned into a placeholder string, so every query with a bytes
    parameter raises ``TypeError: 'str' object is not callable`` (aio-libs/aiomysql#1080).
    Overriding ``escape`` on our own connection object fixes it for any version pair.
    """
    original = con.escape

    def escape(obj: object) -> str:
        if isinstance(obj, bytes | bytearray | memoryview):
            return _escape_bytes(bytes(obj))
        return str(original(obj))

    con.escape = escape


async def _create_missing(cur: aiomysql.Cursor, table: str, columns: str) -> None:
    """CREATE TABLE ``table`` (InnoDB) unless it exists.

    Looks first: IF NOT EXISTS on an existing table makes the server send a note that
    aiomysql turns into a Python warning on every start.
    """
    await cur.execute(
        "SELECT 1 FROM information_schema.tables"
        " WHERE table_schema = DATABASE() AND table_name = %s",
        (table.strip("`"),),
    )
    if not await cur.fetchone():
        await cur.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns}) ENGINE=InnoDB")
