"""The admin text protocol, answered the way gearmand 1.1.20 answers it.

Replies are byte-compatible with gearmand (PROTOCOL.md §12), mixed line endings
included, because ``gearadmin`` and monitoring scripts parse them. Where gearmand
has a bug the protocol notes mark, we do the sensible thing instead (``create
function`` takes the real word; ``drop function`` refuses while jobs are queued).
Commands gearmand lacks use new words so gearmand-only tools are unaffected.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from geartrain.protocol.numbers import parse_c_int

from .admin_jobs import dead_command, job_command
from .jobs import Function, Peer
from .permissions import ADMIN_READ, ADMIN_WRITE, admin_denied

if TYPE_CHECKING:
    from .config import Settings
    from .permissions import Rights
    from .scheduler import Scheduler
    from .tls import Identity


class ServerView(Protocol):
    """What admin commands read of the server, and the one thing they may ask of it."""

    @property
    def settings(self) -> Settings: ...

    @property
    def version_string(self) -> str: ...

    @property
    def connections(self) -> Iterable[Peer]: ...

    def request_stop(self, graceful: bool = False) -> None: ...


class AdminContext(Protocol):
    """The connection an admin line came on, as admin commands see it."""

    @property
    def scheduler(self) -> Scheduler: ...

    @property
    def server(self) -> ServerView: ...

    @property
    def rights(self) -> Rights | None: ...

    @property
    def identity(self) -> Identity | None: ...

    @property
    def ip(self) -> str: ...


OK = b"OK\r\n"
_UNKNOWN = b"ERR UNKNOWN_COMMAND Unknown+server+command%s\r\n"
_INCOMPLETE = (
    b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+%s\r\n"
)

Command = Callable[[AdminContext, list[bytes]], bytes]


def run_admin(conn: AdminContext, line: bytes) -> bytes:
    """Answer one admin line (without its line ending)."""
    words = line.split(b" ")
    # Runs of spaces between words are skipped, but a leading space makes the
    # command word empty, as in gearmand.
    command = words[0]
    args = [word for word in words[1:] if word]
    handler = COMMANDS.get(command.lower())
    if handler is None:
        return _UNKNOWN % command
    if conn.rights is not None:
        level = _level_needed(command.lower(), args)
        if conn.rights.admin < level:
            return admin_denied(conn.rights, conn, line, level)
    return handler(conn, args)


def _status(conn: AdminContext, args: list[bytes]) -> bytes:
    lines = [
        b"%s\t%d\t%d\t%d\n" % (f.name, f.total, f.running, len(f.workers))
        for f in conn.scheduler.functions.values()
    ]
    return b"".join(lines) + b".\n"


def _priority_status(conn: AdminContext, args: list[bytes]) -> bytes:
    lines = []
    for f in conn.scheduler.functions.values():
        high, normal, low = f.queued
        # Epoch jobs not yet due and writes in flight wait at normal priority.
        normal += f.scheduled + f.storing
        lines.append(b"%s\t%d\t%d\t%d\t%d\n" % (f.name, high, normal, low, len(f.workers)))
    return b"".join(lines) + b".\n"


def _workers(conn: AdminContext, args: list[bytes]) -> bytes:
    lines = []
    for peer in conn.server.connections:
        names = b"".join(b" " + f.name for f in reversed(peer.ability_list))
        lines.append(b"%d %s %s :%s\n" % (peer.fd, peer.ip.encode(), peer.client_id, names))
    return b"".join(lines) + b".\n"


def _show(conn: AdminContext, args: list[bytes]) -> bytes:
    if not args:
        return _UNKNOWN % b"show"
    what = args[0].lower()
    if what == b"jobs":
        return _show_jobs(conn)
    if what == b"unique" and len(args) > 1 and args[1].lower() == b"jobs":
        return b"".join(job.unique + b"\n" for job in conn.scheduler.iter_jobs()) + b".\n"
    return b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n"


def _show_jobs(conn: AdminContext) -> bytes:
    lines = []
    for job in conn.scheduler.iter_jobs():
        # IGNORE is always 0: abandoned and cancelled jobs leave the table at once.
        queued = 1 if job.background else 0
        lines.append(b"%s\t%d\t0\t%d\n" % (job.handle, job.retries, queued))
    return b"".join(lines) + b".\n"


def _cancel(conn: AdminContext, args: list[bytes]) -> bytes:
    if len(args) < 2:
        return _UNKNOWN % b"cancel"
    if args[0].lower() != b"job":
        return b"ERR UNKNOWN_ERROR\r\n"
    if conn.scheduler.cancel(args[1]):
        return OK
    return b"ERR UNKNOWN_JOB\r\n"


def _create(conn: AdminContext, args: list[bytes]) -> bytes:
    if len(args) < 2 or args[0].lower() != b"function":
        return _INCOMPLETE % b"create"
    conn.scheduler.function(args[1])
    return OK


def _drop(conn: AdminContext, args: list[bytes]) -> bytes:
    if len(args) < 2 or args[0].lower() != b"function":
        return _INCOMPLETE % b"drop"
    wanted = args[1].lower()
    functions = conn.scheduler.functions
    for name, f in functions.items():
        if name.lower() == wanted:
            if f.workers or f.total:
                return b"ERR there are still connected workers or executing clients\r\n"
            del functions[name]
            return OK
    return b"ERR function not found\r\n"


def _maxqueue(conn: AdminContext, args: list[bytes]) -> bytes:
    if not args:
        return _INCOMPLETE % b"maxqueue"
    f: Function | None = conn.scheduler.functions.get(args[0])
    numbers = [max(parse_c_int(word), 0) for word in args[1:4]]
    if f is not None:
        if not numbers:
            f.max_queue = [0, 0, 0]
        elif len(numbers) == 1:
            f.max_queue = numbers * 3
        else:
            f.max_queue = [*numbers, 0, 0][:3]
    return OK


def _version(conn: AdminContext, args: list[bytes]) -> bytes:
    return b"OK %s\n" % conn.server.version_string.encode()


def _verbose(conn: AdminContext, args: list[bytes]) -> bytes:
    return b"OK %s\n" % conn.server.settings.verbose.upper().encode()


def _getpid(conn: AdminContext, args: list[bytes]) -> bytes:
    return b"OK %d\n" % os.getpid()


def _shutdown(conn: AdminContext, args: list[bytes]) -> bytes:
    # Removed from gearmand 1.1.15 on purpose: anyone on the port could stop the
    # server. Only with --admin-shutdown do we honour it.
    if not conn.server.settings.admin_shutdown:
        return _UNKNOWN % b"shutdown"
    graceful = bool(args) and args[0].lower() == b"graceful"
    conn.server.request_stop(graceful=graceful)
    return OK


def _memory(conn: AdminContext, args: list[bytes]) -> bytes:
    # geartrain's own command: the budget's figures (bytes, and 0/1 for "over") one per
    # line, then one line per connection paused for memory.
    memory = conn.scheduler.memory
    figures = memory.snapshot(conn.scheduler)
    lines = [b"%s\t%d\n" % (name.encode(), int(value)) for name, value in figures.items()]
    lines.extend(
        b"connection\t%d\t%s\t%s\n" % (paused.fd, paused.ip.encode(), paused.client_id)
        for paused in memory.paused
    )
    return b"".join(lines) + b".\n"


COMMANDS: dict[bytes, Command] = {
    b"status": _status,
    b"prioritystatus": _priority_status,
    b"workers": _workers,
    b"show": _show,
    b"cancel": _cancel,
    b"create": _create,
    b"drop": _drop,
    b"maxqueue": _maxqueue,
    b"version": _version,
    b"verbose": _verbose,
    b"getpid": _getpid,
    b"shutdown": _shutdown,
    b"job": job_command,
    b"dead": dead_command,
    b"memory": _memory,
}

#: Commands that change nothing: a permissions file's ``admin = "read"`` allows these. Every
#: other command (those above, and any added later) needs ``admin = "write"``.
READ_ONLY: frozenset[bytes] = frozenset(
    {
        b"status",
        b"prioritystatus",
        b"workers",
        b"show",
        b"version",
        b"verbose",
        b"getpid",
        b"job",
        b"memory",
    }
)
#: ``dead`` reads with these words; ``dead requeue`` and ``dead purge`` change state.
DEAD_READS: frozenset[bytes] = frozenset({b"list", b"show", b"stats"})


def _level_needed(command: bytes, args: list[bytes]) -> int:
    """The admin right a command needs under a permissions file."""
    if command in READ_ONLY:
        return ADMIN_READ
    if command == b"dead" and args and args[0].lower() in DEAD_READS:
        return ADMIN_READ
    return ADMIN_WRITE
