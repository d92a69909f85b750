"""Persistent queues for background jobs: pick a backend from a URL.

==========================================  ==============================================
URL                                         store
==========================================  ==============================================
``none``                                    no persistence (``open_store`` returns None)
``memory://``                               :class:`~.memory.MemoryStore` (tests; dies with
                                            the process)
``sqlite:///relative/path.db``              :class:`~.sqlite.SqliteStore` (the default
``sqlite:////absolute/path.db``             durable choice; standard library only)
``postgresql://user@host:5432/db``          :class:`~.postgres.PostgresStore`, needs
``postgres://…``                            ``pip install 'geartrain[postgres]'``
``mysql://user:pw@host:3306/db``            :class:`~.mysql.MysqlStore`, needs
``mariadb://…``                             ``pip install 'geartrain[mysql]'``
``redis://host:6379/0``, ``rediss://…``,    :class:`~.redis.RedisStore`, needs
``unix:///path/redis.sock``                 ``pip install 'geartrain[redis]'``
==========================================  ==============================================

A relative SQLite path is relative to the server's working directory.

Query parameters understood for every backend (and removed before the URL reaches the
driver):

* ``prefix=NAME``: names the storage: tables ``NAME_jobs`` and ``NAME_chunks`` (large
  payloads, in chunks) for SQL backends, keys ``NAME:jobs`` / ``NAME:order`` /
  ``NAME:retries`` (and ``NAME:chunked`` / ``NAME:chunks:<id>``) for Redis. Overrides
  the ``prefix`` argument of :func:`open_store` (default ``geartrain``). ``table=NAME``
  is accepted as a synonym and means the same (``?table=myqueue`` gives table
  ``myqueue_jobs``: one rule for every backend). Letters, digits and ``_`` only, at most
  48 characters.
* ``batch=N``: at most N operations per transaction (default 5000).
* ``timeout=SECONDS``: a write slower than this counts as a lost connection (default 30).

Backend-specific ones: sqlite ``synchronous=full|normal`` and ``busy_timeout=SECONDS``;
mysql ``unix_socket=PATH``. See each module's docstring for its schema and durability.

Drivers are imported only when their URL is used, so the optional extras stay optional.
"""

from __future__ import annotations

import importlib
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ._batch import StoreOptions
from .base import QueueError, QueueStore, StoredJob

__all__ = ["QueueError", "QueueStore", "StoredJob", "open_store"]

_EXTRAS = {"asyncpg": "postgres", "aiomysql": "mysql", "redis": "redis"}


def open_store(url: str, *, prefix: str = "geartrain") -> QueueStore | None:
    """Build (but do not open) the queue store a URL names.

    Args:
        url: see the module docstring for the accepted forms.
        prefix: table/key prefix unless the URL has ``?prefix=``.

    Returns:
        The store, not yet connected (call ``await store.open()``), or None for ``none``.

    Raises:
        ValueError: the URL is malformed or names an unknown scheme.
        QueueError: the backend's driver is not installed (the message names the extra).
    """
    if url.strip().lower() == "none":
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    prefix = _pop_prefix(params, prefix)
    options = _pop_options(params)
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore(**options)
    if scheme == "sqlite":
        return _sqlite(parts.path, params, prefix, options)
    if scheme in ("postgresql", "postgres"):
        _require("asyncpg")
        from .postgres import PostgresStore

        return PostgresStore(_rebuild(parts, params), prefix=prefix, **options)
    if scheme in ("mysql", "mariadb"):
        _require("aiomysql")
        return _mysql(parts, params, prefix, options)
    if scheme in ("redis", "rediss", "unix"):
        _require("redis")
        from .redis import RedisStore

        return RedisStore(_rebuild(parts, params), prefix=prefix, **options)
    raise ValueError(
        f"unknown queue URL {url!r}: expected none, memory://, sqlite:///FILE, "
        "postgresql://…, mysql://… or redis://…"
    )


def _require(module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRAS[module]
        raise QueueError(
            f"the {extra} queue needs the {module} package: pip install 'geartrain[{extra}]'"
        ) from exc


def _pop_prefix(params: dict[str, str], default: str) -> str:
    prefix = params.pop("prefix", None)
    table = params.pop("table", None)
    if prefix is not None and table is not None and prefix != table:
        raise ValueError(f"queue URL has both prefix={prefix!r} and table={table!r}")
    return prefix or table or default


def _pop_options(params: dict[str, str]) -> StoreOptions:
    options: StoreOptions = {}
    if "batch" in params:
        options["max_batch"] = int(params.pop("batch"))
    if "timeout" in params:
        options["timeout"] = float(params.pop("timeout"))
    return options


def _rebuild(parts: SplitResult, params: dict[str, str]) -> str:
    """The URL with our own parameters taken out, for the driver."""
    return urlunsplit(parts._replace(query=urlencode(params)))


def _sqlite(path: str, params: dict[str, str], prefix: str, options: StoreOptions) -> QueueStore:
    from .sqlite import DEFAULT_BUSY_TIMEOUT, SqliteStore

    # sqlite:///rel.db has path "/rel.db"; sqlite:////abs.db has "//abs.db".
    if not path.startswith("/") or path == "/":
        raise ValueError(
            "sqlite queue URL needs a file: sqlite:///relative.db or sqlite:////abs.db"
        )
    path = unquote(path[1:])
    synchronous = params.pop("synchronous", "full")
    busy_timeout = float(params.pop("busy_timeout", DEFAULT_BUSY_TIMEOUT))
    _reject_unknown("sqlite", params)
    return SqliteStore(
        path, prefix=prefix, synchronous=synchronous, busy_timeout=busy_timeout, **options
    )


def _mysql(
    parts: SplitResult,
    params: dict[str, str],
    prefix: str,
    options: StoreOptions,
) -> QueueStore:
    from .mysql import MysqlStore

    unix_socket = params.pop("unix_socket", None)
    _reject_unknown("mysql", params)
    database = unquote(parts.path.lstrip("/")) or None
    return MysqlStore(
        host=parts.hostname or "localhost",
        port=parts.port or 3306,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password or ""),
        database=database,
        unix_socket=unix_socket,
        prefix=prefix,
        **options,
    )


def _reject_unknown(backend: str, params: dict[str, str]) -> None:
    if params:
        raise ValueError(f"unknown {backend} queue URL parameters: {', '.join(sorted(params))}")
