"""Read the jobs of an existing gearmand (1.1.x) persistent queue, to migrate them.

Supported sources, with gearmand's default table names:

=====================  ===================================  ================
gearmand ``-q``        URL for :func:`read_gearmand_queue`  default table
=====================  ===================================  ================
``libsqlite3``         ``sqlite:///FILE`` / ``sqlite:////ABS``  ``gearman_queue``
``MySQL``              ``mysql://user:pw@host:3306/db``     ``gearman_queue``
``Postgres`` (libpq)   ``postgresql://user@host/db``        ``queue``
=====================  ===================================  ================

``?table=NAME`` in the URL (or the ``table`` argument) picks another table, as
``--libsqlite3-table`` / ``--mysql-table`` / ``--libpq-table`` did.

All three store ``(unique_key, function_name, priority, data, when_to_run)`` rows.
``priority`` is gearmand's ``gearman_job_priority_t`` written as a plain integer:
0 = HIGH, 1 = NORMAL, 2 = LOW (``libgearman-1.0/priority.h``), the same numbering as
``geartrain.protocol.Priority``, so it is copied as is; any other value is refused.
Old SQLite tables without ``when_to_run`` (pre-epoch gearmand) import with ``when=0``.
gearmand stores neither the reducer nor a retry count: they import empty / zero.

Ids: the reader assigns fresh ids, consecutive from ``first_id`` (pass the server's next
free id), in priority order and, within a priority, in the order the table yields rows:
insertion order for SQLite (rowid; a row gearmand rewrote with ``INSERT OR REPLACE``
counts as new), whatever the server returns for MySQL and PostgreSQL (gearmand itself
replays them with no ORDER BY, so it never had a FIFO order to preserve).

Text columns: SQLite rows keep their exact bytes. MySQL and PostgreSQL return
``VARCHAR`` columns decoded by the server, so uniques and function names come back as
their UTF-8 encoding, which is exact for the ASCII names and UUID uniques clients send.

:func:`import_into` does the whole migration on a store that is not open yet: it opens
the store, numbers the imported jobs after the largest stored id, skips jobs that an
earlier, interrupted import already copied (same function, unique, data, priority and
``when``), adds the rest in a few group commits and closes the store again. Once they
are durable it renames the gearmand table to ``<table>_imported_<unix time>`` (rows
kept), so leaving the import option on across restarts never brings back jobs that
have run since; a missing table imports nothing. Stop gearmand before importing::

    added = await import_into(store, "sqlite:////var/lib/gearman/queue.db")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from geartrain.protocol.spool import Spooled

from .base import QueueStore, StoredJob

logger = logging.getLogger(__name__)

SQLITE_DEFAULT_TABLE = "gearman_queue"
MYSQL_DEFAULT_TABLE = "gearman_queue"
POSTGRES_DEFAULT_TABLE = "queue"
_MYSQL_NO_SUCH_TABLE = 1146

_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,63}\Z")

#: One gearmand row: unique, function, priority, data, when (None where NULL).
GearmandRow = tuple[bytes | None, bytes | None, int | None, bytes | None, int | None]


class NoGearmandTable(ValueError):
    """The gearmand queue table does not exist (never created, or already imported)."""


def _check_table(table: str) -> str:
    if not _TABLE_RE.match(table):
        raise ValueError(f"invalid gearmand table name {table!r}")
    return table


def _text(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode()
    assert isinstance(value, bytes | bytearray | memoryview), type(value)
    return bytes(value)


def rows_to_jobs(rows: Iterable[Sequence[object]], first_id: int = 1) -> list[StoredJob]:
    """Turn gearmand rows (unique, function, priority, data, when) into StoredJobs.

    Raises:
        ValueError: a row has a priority gearmand could not have written.
    """
    parsed: list[tuple[int, bytes, bytes, bytes, int]] = []
    for unique, function, priority, data, when in rows:
        level = 1 if priority is None else int(str(priority))
        if level not in (0, 1, 2):
            raise ValueError(
                f"gearmand row {_text(function)!r}/{_text(unique)!r} has priority {priority!r};"
                " expected 0 (high), 1 (normal) or 2 (low)"
            )
        epoch = 0 if when is None else int(str(when))
        parsed.append((level, _text(function), _text(unique), _text(data), epoch))
    parsed.sort(key=lambda row: row[0])  # stable: keeps table order within a priority
    return [
        StoredJob(id=first_id + n, function=fn, unique=uq, data=data, priority=p, when=when)
        for n, (p, fn, uq, data, when) in enumerate(parsed)
    ]


def read_gearmand_sqlite(
    path: str, *, table: str = SQLITE_DEFAULT_TABLE, first_id: int = 1
) -> list[StoredJob]:
    """Jobs of a gearmand ``-q libsqlite3`` database file (opened read-only)."""
    table = _check_table(table)
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        columns = {row[1] for row in con.execute(f'PRAGMA table_info("{table}")')}
        con.text_factory = bytes  # gearmand binds uniques as TEXT but they are raw bytes
        if not columns:
            raise NoGearmandTable(f"{path}: no table {table!r}")
        when = "when_to_run" if "when_to_run" in columns else "NULL"
        rows = con.execute(
            f'SELECT unique_key, function_name, priority, data, {when} FROM "{table}"'
            " ORDER BY rowid"
        ).fetchall()
    finally:
        con.close()
    return rows_to_jobs(rows, first_id)


async def read_gearmand_postgres(
    dsn: str, *, table: str = POSTGRES_DEFAULT_TABLE, first_id: int = 1
) -> list[StoredJob]:
    """Jobs of a gearmand ``-q Postgres`` table (needs ``geartrain[postgres]``)."""
    _require("asyncpg")
    import asyncpg

    table = _check_table(table)
    con = await asyncpg.connect(dsn)
    try:
        rows = await con.fetch(
            f'SELECT unique_key, function_name, priority, data, when_to_run FROM "{table}"'
        )
    except asyncpg.UndefinedTableError as exc:
        raise NoGearmandTable(f"no table {table!r}") from exc
    finally:
        await con.close()
    return rows_to_jobs(rows, first_id)


async def read_gearmand_mysql(
    *,
    host: str = "localhost",
    port: int = 3306,
    user: str | None = None,
    password: str = "",
    database: str | None = None,
    table: str = MYSQL_DEFAULT_TABLE,
    first_id: int = 1,
) -> list[StoredJob]:
    """Jobs of a gearmand ``-q MySQL`` table (needs ``geartrain[mysql]``)."""
    _require("aiomysql")
    import aiomysql

    table = _check_table(table)
    con = await aiomysql.connect(
        host=host, port=port, user=user, password=password, db=database, charset="utf8mb4"
    )
    try:
        async with con.cursor() as cur:
            try:
                await cur.execute(
                    f"SELECT unique_key, function_name, priority, data, when_to_run FROM `{table}`"
                )
            except aiomysql.ProgrammingError as exc:
                if exc.args and exc.args[0] == _MYSQL_NO_SUCH_TABLE:
                    raise NoGearmandTable(f"no table {table!r}") from exc
                raise
            rows = await cur.fetchall()
    finally:
        con.close()
    return rows_to_jobs(rows, first_id)


async def read_gearmand_queue(
    url: str, *, table: str | None = None, first_id: int = 1
) -> list[StoredJob]:
    """Jobs of a gearmand queue named by URL (see the module docstring).

    Args:
        url: ``sqlite:///FILE``, ``mysql://…`` / ``mariadb://…`` or
            ``postgresql://…`` / ``postgres://…``; ``?table=NAME`` overrides the table.
        table: the table, if not in the URL; default: gearmand's default for the backend.
        first_id: id of the first job returned; the rest follow consecutively.

    Raises:
        ValueError: unknown scheme, bad table name, no such table, impossible priority.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    params = dict(parse_qsl(parts.query))
    table = params.pop("table", table)
    if scheme == "sqlite":
        path = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
        if not path:
            raise ValueError("gearmand sqlite URL needs a file: sqlite:///FILE")
        return await asyncio.to_thread(
            read_gearmand_sqlite, path, table=table or SQLITE_DEFAULT_TABLE, first_id=first_id
        )
    if scheme in ("mysql", "mariadb"):
        return await read_gearmand_mysql(
            host=parts.hostname or "localhost",
            port=parts.port or 3306,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password or ""),
            database=unquote(parts.path.lstrip("/")) or None,
            table=table or MYSQL_DEFAULT_TABLE,
            first_id=first_id,
        )
    if scheme in ("postgresql", "postgres"):
        dsn = urlunsplit(parts._replace(query=urlencode(params)))
        return await read_gearmand_postgres(
            dsn, table=table or POSTGRES_DEFAULT_TABLE, first_id=first_id
        )
    raise ValueError(f"cannot import a gearmand queue from {url!r}: use sqlite, mysql or postgres")


async def retire_gearmand_queue(url: str, *, table: str | None = None) -> str:
    """Rename an imported gearmand table to ``<table>_imported_<unix time>``.

    The rows are kept (nothing is deleted), but the next start-up finds no table and
    imports nothing: jobs that ran on geartrain never come back. A gearmand started
    on the same database later creates a fresh, empty table. Returns the new name.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    params = dict(parse_qsl(parts.query))
    default = POSTGRES_DEFAULT_TABLE if scheme.startswith("postgres") else SQLITE_DEFAULT_TABLE
    old = _check_table(params.pop("table", "") or table or default)
    new = _check_table(f"{old}_imported_{int(time.time())}")
    if scheme == "sqlite":
        path = unquote(parts.path[1:])

        def rename() -> None:
            with contextlib.closing(sqlite3.connect(path)) as con:
                con.execute(f'ALTER TABLE "{old}" RENAME TO "{new}"')
                con.commit()

        await asyncio.to_thread(rename)
    elif scheme in ("mysql", "mariadb"):
        _require("aiomysql")
        import aiomysql

        con = await aiomysql.connect(
            host=parts.hostname or "localhost",
            port=parts.port or 3306,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password or ""),
            db=unquote(parts.path.lstrip("/")) or None,
        )
        try:
            async with con.cursor() as cur:
                await cur.execute(f"RENAME TABLE `{old}` TO `{new}`")
        finally:
            con.close()
    else:
        _require("asyncpg")
        import asyncpg

        pg = await asyncpg.connect(urlunsplit(parts._replace(query=urlencode(params))))
        try:
            await pg.execute(f'ALTER TABLE "{old}" RENAME TO "{new}"')
        finally:
            await pg.close()
    return new


async def add_all(store: QueueStore, jobs: Sequence[StoredJob]) -> None:
    """Add ``jobs`` to an open store, all at once so they share a few transactions."""
    await asyncio.gather(*(store.add(job) for job in jobs))


def _require(module: str) -> None:
    # Same actionable message as open_store() when the optional driver is missing.
    from . import _require as require

    require(module)


def _identity(job: StoredJob) -> tuple[bytes, bytes, bytes | Spooled, int, int]:
    # A spooled payload equals only itself: imported rows are bytes, and a large job
    # imported before was stored as bytes too, so it still matches.
    return (job.function, job.unique, job.data, job.priority, job.when)


async def import_into(store: QueueStore, source: str, *, table: str | None = None) -> int:
    """Copy the jobs of a gearmand queue into ``store``; returns how many were added.

    Args:
        store: a store that is NOT open; it is opened, filled and closed here, so the
            server can then open it and replay the imported jobs with the rest.
        source: the gearmand queue URL (see :func:`read_gearmand_queue`).
        table: the gearmand table, if not given in the URL.

    Raises:
        QueueError: the store cannot be opened or written, or a driver is missing.
        ValueError: the source URL or its contents are unusable.
    """
    await store.open()
    try:
        existing = await store.load()
        first_id = max((job.id for job in existing), default=0) + 1
        try:
            found = await read_gearmand_queue(source, table=table)
        except NoGearmandTable as exc:
            logger.warning("no gearmand queue to import (%s): already imported?", exc)
            return 0
        already = Counter(_identity(job) for job in existing)
        fresh: list[StoredJob] = []
        for job in found:
            key = _identity(job)
            if already[key]:
                already[key] -= 1
                continue
            fresh.append(job._replace(id=first_id + len(fresh)))
        await add_all(store, fresh)
    finally:
        await store.close()
    # Only once every job is durable here: then the old table stops being a source.
    retired = await retire_gearmand_queue(source, table=table)
    # Not the URL: it may carry a password.
    logger.warning(
        "imported %d jobs from the gearmand queue (%d were already present); its table is now %s",
        len(fresh),
        len(found) - len(fresh),
        retired,
    )
    return len(fresh)
