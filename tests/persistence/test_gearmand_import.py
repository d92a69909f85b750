"""Migration from gearmand: jobs queued by the real C gearmand, read back by us.

The gearmand tests start Debian's gearmand with a persistent queue, submit background
jobs with the ``gearman`` CLI (no worker, so they stay queued) plus one epoch job over a
raw socket, stop gearmand and import what it stored.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import struct
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from geartrain.server.persistence.base import StoredJob
from geartrain.server.persistence.gearmand_import import (
    add_all,
    import_into,
    read_gearmand_queue,
    read_gearmand_sqlite,
    rows_to_jobs,
)
from geartrain.server.persistence.sqlite import SqliteStore
from tests.support import GEARMAND, ServerProcess, free_port, wait_for_port

from .conftest import MYSQL_URL, POSTGRES_URL, require_service

pytestmark = pytest.mark.timeout(60)

GEARMAN_CLI = shutil.which("gearman") or "/usr/bin/gearman"
EPOCH = 2_000_000_000
SUBMIT_JOB_BG = 18
SUBMIT_JOB_EPOCH = 36
JOB_CREATED = 8

#: (function, unique, data, CLI priority flag, expected stored priority)
SUBMISSIONS = [
    (b"resize", b"u-normal", b"payload one", None, 1),
    (b"resize", b"u-high", b"payload two", "-I", 0),
    (b"thumb", b"u-low", b"payload three", "-L", 2),
    (b"thumb", b"u-normal-2", b"two words", None, 1),
]


def need_gearmand() -> None:
    if GEARMAND is None or not Path(GEARMAN_CLI).exists():
        pytest.skip(
            "gearmand/gearman not installed: apt-get install gearman-job-server gearman-tools"
        )


def submit_cli(server: ServerProcess, function: bytes, unique: bytes | None, data: bytes,
               flag: str | None) -> None:  # fmt: skip
    cmd = [GEARMAN_CLI, "-h", server.host, "-p", str(server.port), "-b", "-f", function.decode()]
    if unique is not None:
        cmd += ["-u", unique.decode()]
    if flag:
        cmd.append(flag)
    cmd.append(data.decode())
    subprocess.run(cmd, check=True, timeout=15, stdin=subprocess.DEVNULL, capture_output=True)


def submit_raw(server: ServerProcess, kind: int, *args: bytes) -> None:
    """One submission over a raw socket (the CLI can send neither epochs nor empty data)."""
    body = b"\0".join(args)
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(struct.pack(">4sII", b"\0REQ", kind, len(body)) + body)
        header = sock.recv(12, socket.MSG_WAITALL)
        magic, kind, size = struct.unpack(">4sII", header)
        payload = sock.recv(size, socket.MSG_WAITALL)
    assert (magic, kind) == (b"\0RES", JOB_CREATED), (kind, payload)


def start_gearmand(args: list[str], workdir: Path) -> ServerProcess:
    """gearmand on a free port, with its pid file in ``workdir``.

    Not ``--pid-file=/dev/null``: gearmand unlinks its pid file when it exits, which
    would delete /dev/null itself.
    """
    assert GEARMAND is not None
    port = free_port()
    cmd = [GEARMAND, "-L", "127.0.0.1", "-p", str(port), "--threads=0", "-l", "none",
           f"--pid-file={workdir / 'gearmand.pid'}", *args]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    server = ServerProcess("gearmand", port, proc)
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
    except (RuntimeError, TimeoutError) as exc:
        server.kill()
        pytest.skip(f"gearmand would not start with {' '.join(args)}: {exc}")
    return server


def fill_gearmand(args: list[str], workdir: Path) -> None:
    """Run gearmand with ``args``, queue the test jobs, stop it cleanly."""
    server = start_gearmand(args, workdir)
    try:
        for function, unique, data, flag, _ in SUBMISSIONS:
            submit_cli(server, function, unique, data, flag)
        submit_cli(server, b"nouniq", None, b"uuid unique", None)
        submit_raw(server, SUBMIT_JOB_EPOCH, b"later", b"u-epoch", str(EPOCH).encode(), b"run")
        submit_raw(server, SUBMIT_JOB_BG, b"thumb", b"u-empty", b"")
    finally:
        server.stop()


def check_imported(jobs: list[StoredJob], first_id: int) -> None:
    assert [j.id for j in jobs] == list(range(first_id, first_id + len(SUBMISSIONS) + 3))
    by_unique = {j.unique: j for j in jobs}
    for function, unique, data, _, priority in SUBMISSIONS:
        got = by_unique.pop(unique)
        assert (got.function, got.data, got.priority, got.when) == (function, data, priority, 0)
    epoch = by_unique.pop(b"u-epoch")
    assert (epoch.function, epoch.data, epoch.priority, epoch.when) == (b"later", b"run", 1, EPOCH)
    empty = by_unique.pop(b"u-empty")
    assert (empty.function, empty.data, empty.priority) == (b"thumb", b"", 1)
    # libgearman gives background jobs without -u a UUID unique.
    (generated,) = by_unique.values()
    assert generated.function == b"nouniq" and generated.data == b"uuid unique"
    uuid.UUID(generated.unique.decode())
    assert [j.priority for j in jobs] == sorted(j.priority for j in jobs)
    assert all(j.reducer == b"" and j.retries == 0 for j in jobs)


async def test_import_from_gearmand_sqlite(tmp_path: Path) -> None:
    need_gearmand()
    db = tmp_path / "gearmand.db"
    fill_gearmand(["-q", "libsqlite3", "--libsqlite3-db", str(db)], tmp_path)

    jobs = read_gearmand_sqlite(str(db), first_id=41)

    check_imported(jobs, 41)
    # And the whole migration: into our store, back out after a "restart".
    store = SqliteStore(str(tmp_path / "geartrain.db"))
    await store.open()
    await add_all(store, jobs)
    await store.close()
    reopened = SqliteStore(str(tmp_path / "geartrain.db"))
    await reopened.open()
    assert await reopened.load() == jobs
    await reopened.close()


async def test_import_from_gearmand_mysql(tmp_path: Path) -> None:
    need_gearmand()
    require_service("mysql")
    table = f"gt_gearmand_{uuid.uuid4().hex[:10]}"
    parts = urlsplit(MYSQL_URL)
    try:
        fill_gearmand([
            "-q", "MySQL", f"--mysql-host={parts.hostname}", f"--mysql-port={parts.port}",
            f"--mysql-user={parts.username}", f"--mysql-db={parts.path.lstrip('/')}",
            f"--mysql-table={table}",
        ], tmp_path)  # fmt: skip
        jobs = await read_gearmand_queue(f"{MYSQL_URL}?table={table}", first_id=1)
    finally:
        await _drop_mysql(table)
    check_imported(jobs, 1)


async def _drop_mysql(table: str) -> None:
    import aiomysql

    parts = urlsplit(MYSQL_URL)
    con = await aiomysql.connect(
        host=parts.hostname, port=parts.port, user=parts.username, db=parts.path.lstrip("/")
    )
    try:
        async with con.cursor() as cur:
            await cur.execute(f"DROP TABLE IF EXISTS `{table}`")
    finally:
        con.close()


async def test_import_from_gearmand_postgres(tmp_path: Path) -> None:
    need_gearmand()
    require_service("postgres")
    table = f"gt_gearmand_{uuid.uuid4().hex[:10]}"
    parts = urlsplit(POSTGRES_URL)
    conninfo = (
        f"host={parts.hostname} port={parts.port} dbname={parts.path.lstrip('/')}"
        f" user={parts.username}"
    )
    try:
        fill_gearmand(
            ["-q", "Postgres", "--libpq-conninfo", conninfo, f"--libpq-table={table}"], tmp_path
        )
        jobs = await read_gearmand_queue(POSTGRES_URL, table=table, first_id=7)
    finally:
        import asyncpg

        con = await asyncpg.connect(POSTGRES_URL)
        await con.execute(f'DROP TABLE IF EXISTS "{table}"')
        await con.close()
    check_imported(jobs, 7)


def test_legacy_sqlite_table_without_when_to_run(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as con:
        con.execute(
            "CREATE TABLE gearman_queue (unique_key TEXT, function_name TEXT, priority INTEGER,"
            " data BLOB, PRIMARY KEY (unique_key, function_name))"
        )
        con.execute("INSERT INTO gearman_queue VALUES ('a', 'f', 2, x'00ff')")
        con.execute("INSERT INTO gearman_queue VALUES ('b', 'f', 0, NULL)")
    con.close()

    jobs = read_gearmand_sqlite(str(db))

    assert jobs == [
        StoredJob(1, b"f", b"b", b"", 0),
        StoredJob(2, b"f", b"a", b"\x00\xff", 2),
    ]


def test_missing_table_and_bad_priority_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()
    with pytest.raises(ValueError, match="no table"):
        read_gearmand_sqlite(str(db))
    with pytest.raises(ValueError, match="priority 7"):
        rows_to_jobs([(b"u", b"f", 7, b"", 0)])
    with pytest.raises(ValueError, match="invalid gearmand table"):
        read_gearmand_sqlite(str(db), table="x; DROP TABLE y")


async def test_unknown_source_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot import"):
        await read_gearmand_queue("redis://localhost/0")


async def test_import_into_numbers_after_stored_jobs_and_never_duplicates(
    tmp_path: Path,
) -> None:
    source = tmp_path / "gearmand.db"
    with sqlite3.connect(source) as con:
        con.execute(
            "CREATE TABLE gearman_queue (unique_key TEXT, function_name TEXT, priority INTEGER,"
            " data BLOB, when_to_run INTEGER, PRIMARY KEY (unique_key, function_name))"
        )
        con.execute("INSERT INTO gearman_queue VALUES ('a', 'f', 1, x'01', 0)")
        con.execute("INSERT INTO gearman_queue VALUES ('b', 'f', 0, x'02', 1900000000)")
    con.close()
    target = str(tmp_path / "geartrain.db")
    store = SqliteStore(target)
    await store.open()
    await store.add(StoredJob(10, b"own", b"", b"mine", 1))
    await store.close()

    assert await import_into(SqliteStore(target), f"sqlite:///{source}") == 2
    assert await import_into(SqliteStore(target), f"sqlite:///{source}") == 0  # a restart

    reopened = SqliteStore(target)
    await reopened.open()
    jobs = await reopened.load()
    await reopened.close()
    assert jobs == [
        StoredJob(11, b"f", b"b", b"\x02", 0, when=1_900_000_000),
        StoredJob(10, b"own", b"", b"mine", 1),
        StoredJob(12, b"f", b"a", b"\x01", 1),
    ]
