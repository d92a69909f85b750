"""gearmand's command line, understood by ``geartrain serve``.

An init script, unit file or habit written for gearmand 1.1 starts geartrain unchanged: every
option of ``gearmand --help`` is accepted. Most map onto ours (``-q libsqlite3
--libsqlite3-db F`` opens our SQLite queue on F); the few that mean nothing here (threads,
hash table sizes) are accepted with one log line saying why they do nothing.

gearmand also reads options from a file: ``--config-file FILE`` or ``@FILE``, split on white
space into long options (``--port=4730`` per token). :func:`expand_option_files` does the
same before the command line is parsed, so the file's options stand where it was named.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

#: gearmand's queue plug-in names (``-q``, compared without case) and what they map to.
_BUILTIN = "builtin"
_SQLITE = "libsqlite3"
_POSTGRES = "postgres"
_MYSQL = "mysql"
_REDIS = "redis"
#: Plug-ins gearmand has that geartrain does not, and why.
_UNSUPPORTED = {
    "libmemcached": "memcached may evict jobs, so it cannot keep a queue",
    "libdrizzle": "Drizzle is no longer maintained; use -q MySQL or a mysql:// URL",
    "libtokyocabinet": "Tokyo Cabinet is no longer maintained; use the SQLite queue",
}

#: Options accepted for compatibility that change nothing here, with the reason logged.
IGNORED = {
    "threads": "geartrain serves every connection from one event loop; -t/--threads is ignored",
    "hashtable_buckets": "geartrain's job tables grow as needed; --hashtable-buckets is ignored",
    "round_robin": "geartrain always rotates between a worker's functions (-R is the rule here)",
    "store_queue_on_shutdown": (
        "geartrain writes every background job through before acknowledging it, so "
        "--store-queue-on-shutdown has nothing to add"
    ),
    "libmemcached_servers": "--libmemcached-servers is ignored (no memcached queue here)",
    "libmemcached_prefix": "--libmemcached-prefix is ignored (no memcached queue here)",
}


def expand_option_files(args: list[str]) -> list[str]:
    """Replace ``@FILE`` and ``--config-file FILE`` with the options the file holds."""
    expanded: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg.startswith("@") and len(arg) > 1:
            expanded += _read_option_file(arg[1:])
        elif arg == "--config-file" and rest:
            expanded += _read_option_file(rest.pop(0))
        elif arg.startswith("--config-file="):
            expanded += _read_option_file(arg.split("=", 1)[1])
        else:
            expanded.append(arg)
    return expanded


def _read_option_file(path: str) -> list[str]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        # A file named explicitly must exist (gearmand fails the same way).
        raise ValueError(f"cannot read option file {path}: {exc.strerror}") from exc
    lines = (line.split("#", 1)[0] for line in text.splitlines())
    return [token for line in lines for token in shlex.split(line)]


class GearmandQueue(NamedTuple):
    """What gearmand's ``-q NAME`` and its options mean here."""

    #: Our queue, at the same place (file, database, Redis server).
    url: str
    #: gearmand's queue table there, imported at start-up (see --import-gearmand), if any.
    import_from: str | None = None
    #: Our table or key prefix, where gearmand's options name one (--redis-prefix, or an
    #: explicit --libsqlite3-table, --libpq-table, --mysql-table): two gearmands with their
    #: own tables in one database stay two separate queues here too.
    prefix: str | None = None


def gearmand_queue(kind: str, options: dict[str, Any]) -> GearmandQueue:
    """Our queue for gearmand's ``-q NAME`` and its options.

    A gearmand queue becomes ours at the same place, and the jobs gearmand left in its own
    table there are imported at start-up (the import renames that table afterwards, so
    it happens once): switching the binary loses no queued job.

    Raises:
        ValueError: an unknown or unsupported plug-in, or a missing required option.
    """
    name = kind.lower()
    if name == _BUILTIN:
        return GearmandQueue("none")
    if name == _SQLITE:
        db = options.get("libsqlite3_db")
        if not db:
            raise ValueError("-q libsqlite3 needs --libsqlite3-db FILE")
        return _sql_queue(f"sqlite:///{Path(db).resolve()}", options.get("libsqlite3_table"))
    if name == _POSTGRES:
        return _sql_queue(
            _libpq_url(options.get("libpq_conninfo") or ""), options.get("libpq_table")
        )
    if name == _MYSQL:
        return _sql_queue(_mysql_url(options), options.get("mysql_table"))
    if name == _REDIS:
        # gearmand's Redis keys are not imported: their layout loses epoch jobs anyway.
        return GearmandQueue(_redis_url(options), None, options.get("redis_prefix"))
    if name in _UNSUPPORTED:
        raise ValueError(f"-q {kind}: not supported: {_UNSUPPORTED[name]}")
    raise ValueError(
        f"unknown queue type {kind!r}: use builtin, libsqlite3, Postgres, MySQL, redis or a URL"
    )


def _sql_queue(url: str, table: str | None) -> GearmandQueue:
    """Our queue at ``url``, importing gearmand's ``table`` there (its default if None)."""
    if not table:
        return GearmandQueue(url, url)
    import_from = url + ("&" if "?" in url else "?") + f"table={quote(table, safe='')}"
    return GearmandQueue(url, import_from, table)


def _libpq_url(conninfo: str) -> str:
    """A libpq connection string (URL or ``key=value ...``) as a URL."""
    if conninfo.startswith(("postgres://", "postgresql://")):
        return conninfo
    pairs = _conninfo_pairs(conninfo)
    user = pairs.pop("user", "")
    password = pairs.pop("password", "")
    host = pairs.pop("host", "")
    port = pairs.pop("port", "")
    dbname = pairs.pop("dbname", "")
    if host.startswith("/"):  # a Unix socket directory cannot stand in a URL's netloc
        pairs = {"host": host, **pairs}
        host = ""
    elif ":" in host:  # an IPv6 address
        host = f"[{host}]"
    credentials = quote(user, safe="")
    if password:
        credentials += ":" + quote(password, safe="")
    netloc = (credentials + "@" if credentials else "") + host + (f":{port}" if port else "")
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='/')}" for k, v in pairs.items())
    return f"postgresql://{netloc}/{quote(dbname, safe='')}" + (f"?{query}" if query else "")


#: One ``key = value`` of a libpq connection string; a value is a word or 'quoted'
#: (backslash escapes the next character), as libpq's own parser reads it.
_CONNINFO_PAIR = re.compile(r"\s*(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']\S*)\s*")


def _conninfo_pairs(conninfo: str) -> dict[str, str]:
    pairs = {}
    position = 0
    while position < len(conninfo.rstrip()):
        match = _CONNINFO_PAIR.match(conninfo, position)
        if match is None:
            raise ValueError(
                f"--libpq-conninfo: cannot read {conninfo[position:].strip()!r} as key=value"
            )
        key, value = match.groups()
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        pairs[key] = value
        position = match.end()
    return pairs


def _mysql_url(options: dict[str, Any]) -> str:
    user = quote(options.get("mysql_user") or "", safe="")
    password = options.get("mysql_password")
    credentials = user + (":" + quote(password, safe="") if password else "")
    host = options.get("mysql_host") or "localhost"
    port = options.get("mysql_port") or 3306
    db = options.get("mysql_db") or ""
    if not db:
        raise ValueError("-q MySQL needs --mysql-db NAME")
    return f"mysql://{credentials + '@' if credentials else ''}{host}:{port}/{quote(db, safe='')}"


def _redis_url(options: dict[str, Any]) -> str:
    host = options.get("redis_server") or "127.0.0.1"
    port = options.get("redis_port") or 6379
    password = options.get("redis_password")
    credentials = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{credentials}{host}:{port}/0"
