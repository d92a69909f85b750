"""open_store(): URL forms, parameters, lazy optional drivers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from geartrain.server.persistence import QueueError, open_store
from geartrain.server.persistence.memory import MemoryStore
from geartrain.server.persistence.sqlite import SqliteStore


@pytest.mark.parametrize("url", ["none", "NONE", " none "])
def test_none_means_no_persistence(url: str) -> None:
    assert open_store(url) is None


def test_memory_url() -> None:
    store = open_store("memory://")
    assert isinstance(store, MemoryStore)
    assert store.backing.jobs == {}


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///queue.db", "queue.db"),
        ("sqlite:///var/q.db", "var/q.db"),
        ("sqlite:////var/lib/geartrain/q.db", "/var/lib/geartrain/q.db"),
        ("sqlite:////tmp/with%20space.db", "/tmp/with space.db"),
    ],
)
def test_sqlite_relative_and_absolute_paths(url: str, path: str) -> None:
    store = open_store(url)
    assert isinstance(store, SqliteStore)
    assert store.path == path
    assert store.table == '"geartrain_jobs"'
    assert store.synchronous == "FULL"


def test_prefix_from_argument_url_or_table_synonym() -> None:
    store = open_store("sqlite:///q.db", prefix="other")
    assert isinstance(store, SqliteStore) and store.table == '"other_jobs"'
    store = open_store("sqlite:///q.db?prefix=myqueue", prefix="other")
    assert isinstance(store, SqliteStore) and store.table == '"myqueue_jobs"'
    store = open_store("sqlite:///q.db?table=tbl")
    assert isinstance(store, SqliteStore) and store.table == '"tbl_jobs"'


def test_sqlite_parameters() -> None:
    store = open_store("sqlite:///q.db?synchronous=normal&busy_timeout=0.5&batch=10&timeout=3")
    assert isinstance(store, SqliteStore)
    assert store.synchronous == "NORMAL"
    assert store.busy_timeout == 0.5
    assert store.max_batch == 10
    assert store.timeout == 3.0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "needs a file"),
        ("sqlite:///q.db?synchronous=off", "synchronous"),
        ("sqlite:///q.db?bogus=1", "bogus"),
        ("sqlite:///q.db?prefix=a&table=b", "both"),
        ("sqlite:///q.db?prefix=bad-name", "invalid queue prefix"),
        ("ftp://example.com/q", "unknown queue URL"),
        ("gearman_queue.db", "unknown queue URL"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_url_keeps_driver_parameters(scheme: str) -> None:
    pytest.importorskip("asyncpg")
    from geartrain.server.persistence.postgres import PostgresStore

    store = open_store(f"{scheme}://u:p@db.example:5433/jobs?prefix=q1&sslmode=disable")
    assert isinstance(store, PostgresStore)
    assert store.dsn == f"{scheme}://u:p@db.example:5433/jobs?sslmode=disable"
    assert store.table == '"q1_jobs"'


@pytest.mark.parametrize("scheme", ["mysql", "mariadb"])
def test_mysql_url_is_parsed(scheme: str) -> None:
    pytest.importorskip("aiomysql")
    from geartrain.server.persistence.mysql import MysqlStore

    store = open_store(f"{scheme}://gear:p%40ss@db.example:3307/work?prefix=q2")
    assert isinstance(store, MysqlStore)
    assert store.connect_args == {
        "host": "db.example",
        "port": 3307,
        "user": "gear",
        "password": "p@ss",
        "db": "work",
        "unix_socket": None,
    }
    assert store.table == "`q2_jobs`"


def test_mysql_defaults_and_socket() -> None:
    pytest.importorskip("aiomysql")
    from geartrain.server.persistence.mysql import MysqlStore

    store = open_store("mysql:///work?unix_socket=/run/mysqld/mysqld.sock")
    assert isinstance(store, MysqlStore)
    assert store.connect_args["host"] == "localhost"
    assert store.connect_args["port"] == 3306
    assert store.connect_args["unix_socket"] == "/run/mysqld/mysqld.sock"


def test_redis_url_loses_only_our_parameters() -> None:
    pytest.importorskip("redis")
    from geartrain.server.persistence.redis import RedisStore

    store = open_store("redis://:secret@cache:6380/2?prefix=q3&health_check_interval=5")
    assert isinstance(store, RedisStore)
    assert store.url == "redis://:secret@cache:6380/2?health_check_interval=5"
    assert (store.jobs_key, store.order_key, store.retries_key) == (
        "q3:jobs",
        "q3:order",
        "q3:retries",
    )


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("postgresql://localhost/db", "asyncpg", "postgres"),
        ("mysql://localhost/db", "aiomysql", "mysql"),
        ("redis://localhost", "redis", "redis"),
    ],
)
def test_missing_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, url: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(QueueError, match=rf"pip install 'geartrain\[{extra}\]'"):
        open_store(url)


def test_drivers_are_imported_only_when_used() -> None:
    code = (
        "import sys\n"
        "from geartrain.server.persistence import open_store\n"
        "open_store('sqlite:///x.db'); open_store('memory://'); open_store('none')\n"
        "print(sorted(m for m in ('asyncpg', 'aiomysql', 'redis') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == "[]"
