"""PostgreSQL queue store (asyncpg).

URL: any libpq-style URL asyncpg accepts, ``postgresql://user:pass@host:5432/dbname``
(``postgres://`` too), plus our query parameter ``prefix`` (table ``<prefix>_jobs``,
default ``geartrain_jobs``); other query parameters go to asyncpg unchanged.

One connection, one transaction per batch, a handful of statements whatever its size:
deletes as one ``DELETE … WHERE id = ANY($1)``, inserts as one binary ``COPY`` (rows
encoded in C by asyncpg, inserted in bulk by PostgreSQL), retry updates as one
``UPDATE … FROM unnest($1, $2)``. Per job that costs PostgreSQL well under half the CPU
of an ``INSERT`` per row, and us less too.

Inserts must be upserts on ``id``, so that a batch re-sent after its COMMIT reply was
lost is harmless. ``COPY`` cannot upsert: when it hits an id that is stored already,
the transaction is rolled back and the batch applied again with one
``INSERT … SELECT FROM unnest(…) ON CONFLICT (id) DO UPDATE``. That only happens after
a reconnect, so the common case never pays for the conflict check.

Durability is PostgreSQL's: with the server defaults (``fsync=on``,
``synchronous_commit=on``) a job is on disk when its add resolves.

Large (spooled) payloads go to ``<prefix>_chunks(job_id, seq, data, PRIMARY KEY (job_id,
seq))``, one row per chunk of at most ``chunk_bytes`` (4 MiB, far below bytea's 1 GB), in
transactions of their own before the job's row, which has an empty ``data``; see
``_batch.py``. A job of 4 GiB is thus about a thousand rows, never one value.
Dead jobs (``server/dead.py``) go to ``<prefix>_dead``, one row each.

The tables are created on first use (``CREATE TABLE IF NOT EXISTS``). A lost connection
is reopened by the group-commit writer with jittered exponential backoff; see
``_batch.py``.

Failure handling is ours: the store holds one ``asyncpg.Connection`` (no pool), which
never reconnects or retries a statement by itself in any asyncpg release, so every lost
connection reaches the group-commit writer.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Unpack

from ._batch import Batch, GroupCommitStore, StoreOptions
from ._rows import DEAD_COLUMNS, SQL_COLUMNS, check_prefix, dead_from_row, from_row
from .base import DeadJob, StoredJob

if TYPE_CHECKING:
    import asyncpg

#: :data:`SQL_COLUMNS` as a list, for COPY.
_COLUMN_NAMES = [name.strip() for name in SQL_COLUMNS.split(",")]


#: Who holds the advisory lock with a given 64-bit key (split by pg_locks in two halves).
_CLAIM_HOLDER = (
    "SELECT a.pid, a.application_name, host(a.client_addr) AS client_addr"
    " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND ((l.classid::bigint << 32) | l.objid::bigint) = $1::bigint"
    " LIMIT 1"
)


class PostgresStore(GroupCommitStore):
    """Queue store in a PostgreSQL table.

    Args:
        dsn: connection URL for asyncpg (without our ``prefix`` parameter).
        prefix: the table is ``<prefix>_jobs``.
        application_name: shown in ``pg_stat_activity``, to find our connection.
        **options: group-commit tuning, see :class:`StoreOptions`.
    """

    name = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        prefix: str = "geartrain",
        application_name: str = "geartrain",
        **options: Unpack[StoreOptions],
    ) -> None:
        super().__init__(**options)
        self.dsn = dsn
        self.table_name = f"{check_prefix(prefix)}_jobs"
        self.table = f'"{self.table_name}"'
        self.chunks = f'"{prefix}_chunks"'
        self._delete_chunks_sql = f"DELETE FROM {self.chunks} WHERE job_id = ANY($1::bigint[])"
        self._chunks_sql = (
            f"INSERT INTO {self.chunks} (job_id, seq, data) SELECT * FROM unnest("
            "$1::bigint[], $2::integer[], $3::bytea[])"
            " ON CONFLICT (job_id, seq) DO UPDATE SET data = EXCLUDED.data"
        )
        self._delete_sql = f"DELETE FROM {self.table} WHERE id = ANY($1::bigint[])"
        # One statement for all the rows, fed one array per column.
        self._upsert_sql = (
            f"INSERT INTO {self.table} ({SQL_COLUMNS}) SELECT * FROM unnest("
            "$1::bigint[], $2::bytea[], $3::bytea[], $4::bytea[],"
            " $5::smallint[], $6::bigint[], $7::bytea[], $8::integer[])"
            " ON CONFLICT (id) DO UPDATE SET"
            " priority = EXCLUDED.priority, function = EXCLUDED.function,"
            " unique_key = EXCLUDED.unique_key, data = EXCLUDED.data,"
            " when_to_run = EXCLUDED.when_to_run, reducer = EXCLUDED.reducer,"
            " retries = EXCLUDED.retries"
        )
        self._retries_sql = (
            f"UPDATE {self.table} AS t SET retries = u.retries"
            " FROM unnest($1::bigint[], $2::integer[]) AS u(id, retries) WHERE t.id = u.id"
        )
        self._reschedules_sql = (
            f"UPDATE {self.table} AS t SET when_to_run = u.when_to_run, retries = u.retries"
            " FROM unnest($1::bigint[], $2::bigint[], $3::integer[])"
            " AS u(id, when_to_run, retries) WHERE t.id = u.id"
        )
        self.dead = f'"{prefix}_dead"'
        self._dead_upsert_sql = (
            f"INSERT INTO {self.dead} ({DEAD_COLUMNS}) SELECT * FROM unnest("
            "$1::bigint[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bytea[],"
            " $6::smallint[], $7::bytea[], $8::double precision[], $9::bytea[])"
            " ON CONFLICT (id) DO NOTHING"
        )
        self.application_name = application_name
        # The queue's claim: a session-level advisory lock (see _try_claim), keyed by
        # the table's name; advisory locks are per database already.
        digest = hashlib.blake2b(f"geartrain {self.table_name}".encode(), digest_size=8).digest()
        self.claim_key = int.from_bytes(digest, "big", signed=True)
        self._con: asyncpg.Connection | None = None

    @property
    def backend_pid(self) -> int | None:
        """The server process serving our connection (for ``pg_terminate_backend``)."""
        return None if self._con is None else int(self._con.get_server_pid())

    def _connection(self) -> asyncpg.Connection:
        if self._con is None or self._con.is_closed():
            raise ConnectionResetError("postgres: not connected")
        return self._con

    async def _connect(self) -> None:
        import asyncpg

        self._con = await asyncpg.connect(
            self.dsn,
            timeout=self.timeout,
            server_settings={"application_name": self.application_name},
        )

    async def _disconnect(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            # terminate() never waits on the server, which may be the thing that is gone.
            con.terminate()

    async def _try_claim(self) -> str | None:
        # A session-level advisory lock lives exactly as long as our connection: the
        # database frees it when the connection ends, however the server died.
        con = self._connection()
        if await con.fetchval("SELECT pg_try_advisory_lock($1)", self.claim_key):
            return None
        holder = await con.fetchrow(_CLAIM_HOLDER, self.claim_key)
        if holder is None:  # freed in between: ask again
            return "a connection that just ended"
        return (
            f"table {self.table_name} is claimed by PostgreSQL backend {holder['pid']}"
            f" of {holder['application_name'] or 'an unnamed client'}"
            f" from {holder['client_addr'] or 'a local socket'}"
        )

    async def _release_claim(self) -> None:
        await self._connection().execute("SELECT pg_advisory_unlock($1)", self.claim_key)

    async def _ping(self) -> None:
        await self._connection().execute("SELECT 1")

    async def _create(self) -> None:
        await self._connection().execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            "id BIGINT PRIMARY KEY, priority SMALLINT NOT NULL, function BYTEA NOT NULL,"
            " unique_key BYTEA NOT NULL, data BYTEA NOT NULL,"
            " when_to_run BIGINT NOT NULL DEFAULT 0, reducer BYTEA NOT NULL DEFAULT '',"
            " retries INTEGER NOT NULL DEFAULT 0)"
        )
        await self._connection().execute(
            f"CREATE TABLE IF NOT EXISTS {self.chunks} ("
            "job_id BIGINT NOT NULL, seq INTEGER NOT NULL, data BYTEA NOT NULL,"
            " PRIMARY KEY (job_id, seq))"
        )
        await self._connection().execute(
            f"CREATE TABLE IF NOT EXISTS {self.dead} ("
            "id BIGINT PRIMARY KEY, handle BYTEA NOT NULL, function BYTEA NOT NULL,"
            " unique_key BYTEA NOT NULL, data BYTEA NOT NULL, priority SMALLINT NOT NULL,"
            " reducer BYTEA NOT NULL, died DOUBLE PRECISION NOT NULL, attempts BYTEA NOT NULL)"
        )

    async def _load(self) -> list[StoredJob]:
        rows = await self._connection().fetch(f"SELECT {SQL_COLUMNS} FROM {self.table} ORDER BY id")
        return [from_row(row) for row in rows]

    async def _load_dead(self) -> list[DeadJob]:
        rows = await self._connection().fetch(f"SELECT {DEAD_COLUMNS} FROM {self.dead} ORDER BY id")
        return [dead_from_row(tuple(row)) for row in rows]

    async def _chunked_ids(self) -> set[int]:
        rows = await self._connection().fetch(f"SELECT DISTINCT job_id FROM {self.chunks}")
        return {int(row[0]) for row in rows}

    async def _read_chunk(self, job_id: int, seq: int) -> bytes | None:
        data = await self._connection().fetchval(
            f"SELECT data FROM {self.chunks} WHERE job_id = $1 AND seq = $2", job_id, seq
        )
        return None if data is None else bytes(data)

    async def _write(self, batch: Batch) -> None:
        import asyncpg

        con = self._connection()
        try:
            async with con.transaction():
                await self._apply(con, batch, upsert=False)
        except asyncpg.UniqueViolationError:
            # Some of these ids are stored already: this batch was committed before and
            # is re-sent because the COMMIT reply was lost. The failed transaction left
            # nothing behind; apply the batch again, this time as upserts.
            async with con.transaction():
                await self._apply(con, batch, upsert=True)

    async def _apply(self, con: asyncpg.Connection, batch: Batch, *, upsert: bool) -> None:
        if batch.removes:
            await con.execute(self._delete_sql, batch.removes)
        if batch.chunk_removes:
            await con.execute(self._delete_chunks_sql, batch.chunk_removes)
        if batch.chunks:
            await con.execute(self._chunks_sql, *map(list, zip(*batch.chunks, strict=True)))
        if batch.adds and not upsert:
            # Binary COPY: asyncpg encodes the rows in C and PostgreSQL inserts them
            # in bulk, several times cheaper on both sides than a statement per row
            # and about half the server's work of INSERT … SELECT FROM unnest(…) ON
            # CONFLICT. COPY cannot upsert; a duplicate id makes it fail as a whole.
            await con.copy_records_to_table(
                self.table_name, records=batch.adds, columns=_COLUMN_NAMES
            )
        elif batch.adds:
            columns = list(zip(*batch.adds, strict=True))
            if len(set(columns[0])) < len(batch.adds):
                # One statement cannot upsert a row twice; the last add of an id wins,
                # as it would row by row.
                columns = list(zip(*{job.id: job for job in batch.adds}.values(), strict=True))
            await con.execute(self._upsert_sql, *columns)
        if batch.retries:
            # The last update of an id wins, as it would row by row: one UPDATE cannot
            # assign the same row twice deterministically.
            retries = dict(batch.retries)
            await con.execute(self._retries_sql, list(retries), list(retries.values()))
        if batch.reschedules:
            # One row per id: the scheduler's latest reschedule of a job is the only one.
            await con.execute(
                self._reschedules_sql, *map(list, zip(*batch.reschedules, strict=True))
            )
        if batch.dead_removes:
            await con.execute(
                f"DELETE FROM {self.dead} WHERE id = ANY($1::bigint[])", batch.dead_removes
            )
        if batch.dead_adds:
            # A dead job is never changed once written: a re-sent batch finds it there.
            await con.execute(self._dead_upsert_sql, *map(list, zip(*batch.dead_adds, strict=True)))

    def _is_connection_error(self, exc: BaseException) -> bool:
        import asyncpg

        errors = asyncpg.exceptions
        lost = (errors.PostgresConnectionError, errors.InterfaceError, errors.AdminShutdownError)
        if isinstance(exc, (OSError, *lost)):
            return True
        # A server-side kill often surfaces as some other error on a now-closed connection.
        return self._con is None or self._con.is_closed()
