"""PostgreSQL queue store (asyncpg).

URL: any libpq-style URL asyncpg accepts, ``postgresql://user:pass@host:5432/dbname``
(``postgres://`` too), plus our query parameter ``prefix`` (table ``<prefix>_jobs``,
default ``geartrain_jobs``); other query parameters go to asyncpg unchanged.

One connection, one transaction per batch: inserts go out as one ``executemany``
(asyncpg pipelines the rows in a single round trip), retry updates likewise, deletes as
one ``DELETE … WHERE id = ANY($1)``. Inserts are upserts on ``id`` so that a batch
re-sent after its COMMIT reply was lost is harmless.

Durability is PostgreSQL's: with the server defaults (``fsync=on``,
``synchronous_commit=on``) a job is on disk when its add resolves.

The table is created on first use (``CREATE TABLE IF NOT EXISTS``). A lost connection
is reopened by the group-commit writer with jittered exponential backoff; see
``_batch.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Unpack

from ._batch import Batch, GroupCommitStore, StoreOptions
from ._rows import SQL_COLUMNS, as_row, check_prefix, from_row
from .base import StoredJob

if TYPE_CHECKING:
    import asyncpg


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
        self.table = f'"{check_prefix(prefix)}_jobs"'
        self.application_name = application_name
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

    async def _create(self) -> None:
        await self._connection().execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            "id BIGINT PRIMARY KEY, priority SMALLINT NOT NULL, function BYTEA NOT NULL,"
            " unique_key BYTEA NOT NULL, data BYTEA NOT NULL,"
            " when_to_run BIGINT NOT NULL DEFAULT 0, reducer BYTEA NOT NULL DEFAULT '',"
            " retries INTEGER NOT NULL DEFAULT 0)"
        )

    async def _load(self) -> list[StoredJob]:
        rows = await self._connection().fetch(f"SELECT {SQL_COLUMNS} FROM {self.table} ORDER BY id")
        return [from_row(row) for row in rows]

    async def _write(self, batch: Batch) -> None:
        con = self._connection()
        async with con.transaction():
            if batch.removes:
                await con.execute(f"DELETE FROM {self.table} WHERE id = ANY($1)", batch.removes)
            if batch.adds:
                await con.executemany(
                    f"INSERT INTO {self.table} ({SQL_COLUMNS})"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET"
                    " priority = EXCLUDED.priority, function = EXCLUDED.function,"
                    " unique_key = EXCLUDED.unique_key, data = EXCLUDED.data,"
                    " when_to_run = EXCLUDED.when_to_run, reducer = EXCLUDED.reducer,"
                    " retries = EXCLUDED.retries",
                    [as_row(job) for job in batch.adds],
                )
            if batch.retries:
                await con.executemany(
                    f"UPDATE {self.table} SET retries = $2 WHERE id = $1", batch.retries
                )

    def _is_connection_error(self, exc: BaseException) -> bool:
        import asyncpg

        errors = asyncpg.exceptions
        lost = (errors.PostgresConnectionError, errors.InterfaceError, errors.AdminShutdownError)
        if isinstance(exc, (OSError, *lost)):
            return True
        # A server-side kill often surfaces as some other error on a now-closed connection.
        return self._con is None or self._con.is_closed()
