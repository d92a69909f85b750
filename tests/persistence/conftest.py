"""Backend harnesses for the persistence tests.

``store_harness`` is parametrized over every backend. Each harness owns one unique
table/key prefix, builds stores on it (a second store on the same prefix is a "restarted
server"), can kill a store's connection from the server side, and deletes everything it
created at teardown.

A backend whose service is not reachable skips locally and fails when ``CI`` is set, so
a misconfigured CI machine cannot pass by skipping. Service addresses can be overridden
with GEARTRAIN_TEST_POSTGRES / GEARTRAIN_TEST_MYSQL / GEARTRAIN_TEST_REDIS (URLs).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from geartrain.server.persistence._batch import GroupCommitStore
from geartrain.server.persistence.memory import MemoryBacking, MemoryStore
from geartrain.server.persistence.sqlite import SqliteStore

POSTGRES_URL = os.environ.get(
    "GEARTRAIN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("GEARTRAIN_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("GEARTRAIN_TEST_REDIS", "redis://127.0.0.1:6379/0")

_DRIVERS = {"postgres": "asyncpg", "mysql": "aiomysql", "redis": "redis"}
_URLS = {"postgres": POSTGRES_URL, "mysql": MYSQL_URL, "redis": REDIS_URL}


def unavailable(reason: str) -> None:
    """Skip locally, fail on CI (where every service must be there)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure)")
    pytest.skip(reason)


def require_service(kind: str) -> None:
    driver = _DRIVERS[kind]
    if importlib.util.find_spec(driver) is None:
        unavailable(f"{kind} tests need {driver}: pip install 'geartrain[{kind}]'")
    parts = urlsplit(_URLS[kind])
    host, port = parts.hostname or "127.0.0.1", parts.port
    assert port is not None, f"{kind} test URL needs an explicit port"
    try:
        with socket.create_connection((host, port), timeout=2):
            pass
    except OSError as exc:
        unavailable(f"{kind} server not reachable at {host}:{port}: {exc}")


class TcpProxy:
    """A TCP relay in front of a service; ``cut`` simulates the service going away.

    ``cut`` aborts every relayed connection and stops listening (clients then get
    "connection refused"); ``start`` listens again on the same port.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()

    def url_for(self, url: str) -> str:
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@" if credentials else ""
        return parts._replace(netloc=f"{netloc}127.0.0.1:{self.port}").geturl()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        for transport in self._transports:
            transport.abort()
        self._transports.clear()
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._transports |= {writer.transport, up_writer.transport}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique_prefix() -> str:
    return f"gt_test_{uuid.uuid4().hex[:12]}"


class Harness:
    """One backend, one prefix: builds stores, kills connections, cleans up."""

    kind = "?"

    #: The service URL (network backends only).
    url = ""

    def __init__(self) -> None:
        self.prefix = unique_prefix()
        self.stores: list[GroupCommitStore] = []
        self.proxy: TcpProxy | None = None

    def _build(self, url: str, **options: Any) -> GroupCommitStore:
        raise NotImplementedError

    def make(self, *, proxied: bool = False, **options: Any) -> GroupCommitStore:
        """A new, unopened store on this harness's storage.

        ``proxied`` routes it through :attr:`proxy`, so that :meth:`cut` can take the
        service away from it (start the proxy first with :meth:`start_proxy`).
        """
        options.setdefault("backoff_initial", 0.01)
        options.setdefault("backoff_max", 0.2)
        options.setdefault("close_timeout", 5.0)
        options.setdefault("timeout", 10.0)
        url = self.url
        if proxied and url:  # (memory has no URL: it cuts its backing instead)
            assert self.proxy is not None
            url = self.proxy.url_for(url)
        store = self._build(url, **options)
        self.stores.append(store)
        return store

    async def opened(self, *, proxied: bool = False, **options: Any) -> GroupCommitStore:
        store = self.make(proxied=proxied, **options)
        await store.open()
        return store

    async def start_proxy(self) -> None:
        parts = urlsplit(self.url)
        self.proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 0)
        await self.proxy.start()

    async def cut(self) -> None:
        """The service becomes unreachable for proxied stores (connections drop)."""
        assert self.proxy is not None
        await self.proxy.cut()

    async def restore(self) -> None:
        assert self.proxy is not None
        await self.proxy.start()

    async def kill(self, store: GroupCommitStore) -> None:
        """Make the server side drop ``store``'s connection."""
        raise NotImplementedError

    async def drop(self) -> None:
        """Delete the tables/keys this harness created."""

    async def stored_chunks(self) -> dict[int, int]:
        """How many chunks of a large payload are stored, by job id."""
        raise NotImplementedError

    async def teardown(self) -> None:
        try:
            # A store stuck in a failed test must not keep its table alive.
            await asyncio.gather(
                *(asyncio.wait_for(store.close(), 15) for store in self.stores),
                return_exceptions=True,
            )
        finally:
            if self.proxy is not None:
                await self.proxy.cut()
            await self.drop()


class MemoryHarness(Harness):
    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.backing = MemoryBacking()

    def _build(self, url: str, **options: Any) -> GroupCommitStore:
        return MemoryStore(self.backing, **options)

    async def kill(self, store: GroupCommitStore) -> None:
        assert isinstance(store, MemoryStore)
        store.break_connection()

    async def start_proxy(self) -> None:
        pass  # the backing itself can refuse connections

    async def cut(self) -> None:
        self.backing.refuse_connects = True
        for store in self.stores:
            assert isinstance(store, MemoryStore)
            store.break_connection()

    async def restore(self) -> None:
        self.backing.refuse_connects = False

    async def stored_chunks(self) -> dict[int, int]:
        return {job_id: len(chunks) for job_id, chunks in self.backing.chunks.items()}


class SqliteHarness(Harness):
    kind = "sqlite"

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.path = str(directory / "queue.db")

    def _build(self, url: str, **options: Any) -> GroupCommitStore:
        return SqliteStore(self.path, prefix=self.prefix, **options)

    async def stored_chunks(self) -> dict[int, int]:
        con = sqlite3.connect(self.path)
        try:
            rows = con.execute(
                f'SELECT job_id, count(*) FROM "{self.prefix}_chunks" GROUP BY job_id'
            ).fetchall()
        finally:
            con.close()
        return dict(rows)


class PostgresHarness(Harness):
    kind = "postgres"
    url = POSTGRES_URL

    def _build(self, url: str, **options: Any) -> GroupCommitStore:
        from geartrain.server.persistence.postgres import PostgresStore

        return PostgresStore(url, prefix=self.prefix, application_name=self.prefix, **options)

    async def _admin(self, func: Callable[[Any], Awaitable[Any]]) -> Any:
        import asyncpg

        con = await asyncpg.connect(POSTGRES_URL)
        try:
            return await func(con)
        finally:
            await con.close()

    async def kill(self, store: GroupCommitStore) -> None:
        killed = await self._admin(
            lambda con: con.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1",
                self.prefix,
            )
        )
        assert killed >= 1, "no backend found for our store"

    async def stored_chunks(self) -> dict[int, int]:
        rows = await self._admin(
            lambda con: con.fetch(
                f'SELECT job_id, count(*) FROM "{self.prefix}_chunks" GROUP BY job_id'
            )
        )
        return {int(row[0]): int(row[1]) for row in rows}

    async def drop(self) -> None:
        p = self.prefix
        await self._admin(
            lambda con: con.execute(f'DROP TABLE IF EXISTS "{p}_jobs", "{p}_chunks", "{p}_dead"')
        )


class MysqlHarness(Harness):
    kind = "mysql"
    url = MYSQL_URL

    def _build(self, url: str, **options: Any) -> GroupCommitStore:
        from geartrain.server.persistence.mysql import MysqlStore

        parts = urlsplit(url)
        return MysqlStore(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=parts.username,
            password=parts.password or "",
            database=parts.path.lstrip("/"),
            prefix=self.prefix,
            **options,
        )

    async def _admin(self, sql: str) -> list[tuple[Any, ...]]:
        import aiomysql

        parts = urlsplit(MYSQL_URL)
        con = await aiomysql.connect(
            host=parts.hostname,
            port=parts.port,
            user=parts.username,
            password=parts.password or "",
            db=parts.path.lstrip("/"),
        )
        try:
            async with con.cursor() as cur:
                await cur.execute(sql)
                return list(await cur.fetchall())
        finally:
            con.close()

    async def stored_chunks(self) -> dict[int, int]:
        rows = await self._admin(
            f"SELECT job_id, count(*) FROM `{self.prefix}_chunks` GROUP BY job_id"
        )
        return {int(job_id): int(count) for job_id, count in rows}

    async def kill(self, store: GroupCommitStore) -> None:
        thread_id = getattr(store, "thread_id", None)
        assert thread_id is not None, "store has no connection to kill"
        await self._admin(f"KILL {int(thread_id)}")

    async def drop(self) -> None:
        tables = ", ".join(f"`{self.prefix}_{name}`" for name in ("jobs", "chunks", "dead"))
        await self._admin(f"DROP TABLE IF EXISTS {tables}")


class RedisHarness(Harness):
    kind = "redis"
    url = REDIS_URL

    def _build(self, url: str, **options: Any) -> GroupCommitStore:
        from geartrain.server.persistence.redis import RedisStore

        return RedisStore(url, prefix=self.prefix, client_name=self.prefix, **options)

    async def kill(self, store: GroupCommitStore) -> None:
        from redis.asyncio import Redis

        admin = Redis.from_url(REDIS_URL)
        try:
            clients = await admin.client_list()
            ids = [c["id"] for c in clients if c.get("name") == self.prefix]
            assert ids, "no redis connection found for our store"
            for client_id in ids:
                await admin.client_kill_filter(_id=client_id)
        finally:
            await admin.aclose()

    async def stored_chunks(self) -> dict[int, int]:
        """Chunks per job, and 0 for an id in the index set without a chunks key."""
        from redis.asyncio import Redis

        admin = Redis.from_url(REDIS_URL)
        try:
            found = {int(member): 0 for member in await admin.smembers(f"{self.prefix}:chunked")}
            async for key in admin.scan_iter(match=f"{self.prefix}:chunks:*"):
                found[int(key.rsplit(b":", 1)[1])] = int(await admin.hlen(key))
            return found
        finally:
            await admin.aclose()

    async def drop(self) -> None:
        from redis.asyncio import Redis

        admin = Redis.from_url(REDIS_URL)
        try:
            # Every key of the prefix: the fixed ones and a chunks key per large job.
            keys = [key async for key in admin.scan_iter(match=f"{self.prefix}:*")]
            if keys:
                await admin.delete(*keys)
        finally:
            await admin.aclose()


BACKENDS = ["memory", "sqlite", "postgres", "mysql", "redis"]


def build_harness(kind: str, tmp_path: Path) -> Harness:
    if kind == "memory":
        return MemoryHarness()
    if kind == "sqlite":
        return SqliteHarness(tmp_path)
    require_service(kind)
    return {"postgres": PostgresHarness, "mysql": MysqlHarness, "redis": RedisHarness}[kind]()


@pytest.fixture(params=BACKENDS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    """Every backend in turn, each on a fresh prefix that is dropped afterwards."""
    h = build_harness(request.param, tmp_path)
    try:
        yield h
    finally:
        await asyncio.wait_for(h.teardown(), 30)


#: Backends with a server connection that can be killed (SQLite has none).
CONNECTED_BACKENDS = [kind for kind in BACKENDS if kind != "sqlite"]


@pytest.fixture(params=CONNECTED_BACKENDS)
async def connected_harness(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Harness]:
    """Like ``harness``, for the backends whose connection the server side can kill."""
    h = build_harness(request.param, tmp_path)
    try:
        yield h
    finally:
        await asyncio.wait_for(h.teardown(), 30)
