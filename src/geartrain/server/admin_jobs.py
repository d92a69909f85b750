"""Admin commands to find jobs and to manage dead ones (new words, not gearmand's).

* ``job HANDLE`` and ``job unique FUNCTION UNIQUE``: one job, wherever it is (being
  stored, queued, delayed, running, waiting to be retried, or dead), as ``key<TAB>value``
  lines ending with ``.``.
* ``dead list [FUNCTION]``: one line per dead job, oldest first:
  ``ID HANDLE FUNCTION UNIQUE ATTEMPTS DIED LAST-OUTCOME`` separated by tabs.
* ``dead show ID|HANDLE``: one dead job as ``key<TAB>value`` lines, then an
  ``attempt<TAB>TIME<TAB>WORKER<TAB>OUTCOME<TAB>TEXT`` line per attempt kept.
* ``dead stats``: ``jobs``, ``bytes`` and ``dropped`` (by the bounds) lines.
* ``dead requeue ID|HANDLE|--all [FUNCTION]`` and ``dead purge ...``: ``OK <count>``.

Bytes from clients (function names, uniques, exception texts) are shown with tabs,
line ends and backslashes escaped, so every reply stays one record per line.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .dead import decode_attempts, requeue_dead
from .jobs import Job, JobState

if TYPE_CHECKING:
    from .admin import AdminContext
    from .persistence.base import DeadJob

_UNKNOWN_JOB = b"ERR UNKNOWN_JOB\r\n"
_DEAD_USAGE = (
    b"ERR INVALID_ARGUMENTS usage:+dead+list+[FUNCTION]|show+ID|stats|"
    b"requeue+ID|purge+ID|requeue+--all+[FUNCTION]|purge+--all+[FUNCTION]\r\n"
)
_JOB_USAGE = b"ERR INVALID_ARGUMENTS usage:+job+HANDLE|job+unique+FUNCTION+UNIQUE\r\n"
_ESCAPES = {ord("\\"): "\\\\", ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"}


def escape(value: bytes | str) -> bytes:
    """A value as one field of one line (tabs, line ends and backslashes escaped)."""
    text = value.decode("utf-8", errors="backslashreplace") if isinstance(value, bytes) else value
    return text.translate(_ESCAPES).encode("utf-8", errors="backslashreplace")


Pairs = list[tuple[str, bytes | str | int | float]]


def _shown(value: bytes | str | int | float) -> bytes:
    if isinstance(value, float):
        return repr(value).encode()
    if isinstance(value, int):
        return b"%d" % value
    return escape(value)


def _record(pairs: Pairs, extra: Sequence[bytes] = ()) -> bytes:
    """``key<TAB>value`` lines, then ``extra`` lines as given, then the closing dot."""
    lines = [key.encode() + b"\t" + _shown(value) + b"\n" for key, value in pairs]
    return b"".join(lines) + b"".join(extra) + b".\n"


# -- job lookups -------------------------------------------------------------------------


def job_command(conn: AdminContext, args: list[bytes]) -> bytes:
    """``job HANDLE`` / ``job unique FUNCTION UNIQUE``."""
    scheduler = conn.scheduler
    if len(args) == 1:
        job = scheduler.jobs.get(args[0])
        if job is not None:
            return _describe_job(job)
        dead = scheduler.expire_dead().find(args[0])
        return _UNKNOWN_JOB if dead is None else _describe_dead(dead, with_attempts=False)
    if len(args) == 3 and args[0].lower() == b"unique":
        function, unique = args[1], args[2]
        f = scheduler.functions.get(function)
        job = None if f is None else f.uniques.get(unique)
        if job is not None:
            return _describe_job(job)
        for dead in reversed(list(scheduler.expire_dead().of_function(function))):
            if dead.unique == unique:
                return _describe_dead(dead, with_attempts=False)
        return _UNKNOWN_JOB
    return _JOB_USAGE


def job_state(job: Job) -> str:
    """The word for where a job stands: storing, queued, delayed, retrying, running."""
    state = job.state
    if state is JobState.SCHEDULED:
        return "retrying" if job.retries and job.function.retry is not None else "delayed"
    return {
        JobState.STORING: "storing",
        JobState.QUEUED: "queued",
        JobState.RUNNING: "running",
    }.get(state, "ended")


def _describe_job(job: Job) -> bytes:
    pairs: Pairs = [
        ("handle", job.handle),
        ("function", job.function.name),
        ("unique", job.unique),
        ("state", job_state(job)),
        ("priority", job.priority),
        ("background", int(job.background)),
        ("attempts", job.retries),
    ]
    if job.state is JobState.SCHEDULED:
        pairs.append(("due", float(job.due)))
    worker = job.worker
    if worker is not None:
        client_id = worker.client_id.decode(errors="replace")
        pairs.append(("worker", f"{worker.fd} {worker.ip} {client_id}"))
        # since_ns is the assignment's time while the job runs (see Scheduler._start_next).
        running_for = max(0, time.monotonic_ns() - job.since_ns) / 1e9
        pairs.append(("running_for", round(running_for, 3)))
        pairs.append(("progress", f"{job.numerator}/{job.denominator}"))
    pairs.append(("clients", len(job.clients)))
    return _record(pairs)


def _describe_dead(dead: DeadJob, *, with_attempts: bool) -> bytes:
    count, attempts = decode_attempts(dead.attempts)
    pairs: Pairs = [
        ("handle", dead.handle),
        ("function", dead.function),
        ("unique", dead.unique),
        ("state", "dead"),
        ("priority", dead.priority),
        ("attempts", count),
        ("id", dead.id),
        ("died", dead.died),
        ("size", len(dead.data)),
    ]
    if attempts:
        last = attempts[-1]
        pairs.append(("last", f"{last.outcome} {last.text}".rstrip()))
    lines = []
    if with_attempts:
        for a in attempts:
            fields = (repr(a.time).encode(), escape(a.worker), a.outcome.encode(), escape(a.text))
            lines.append(b"attempt\t" + b"\t".join(fields) + b"\n")
    return _record(pairs, lines)


# -- dead jobs ------------------------------------------------------------------------------


def dead_command(conn: AdminContext, args: list[bytes]) -> bytes:
    """``dead list|show|stats|requeue|purge ...``."""
    if not args:
        return _DEAD_USAGE
    action, rest = args[0].lower(), args[1:]
    handler = _DEAD_ACTIONS.get(action)
    return _DEAD_USAGE if handler is None else handler(conn, rest)


def _list(conn: AdminContext, args: list[bytes]) -> bytes:
    if len(args) > 1:
        return _DEAD_USAGE
    lines = []
    for dead in conn.scheduler.expire_dead().of_function(args[0] if args else None):
        count, attempts = decode_attempts(dead.attempts)
        last = attempts[-1].outcome if attempts else "-"
        fields = (escape(dead.handle), escape(dead.function), escape(dead.unique))
        lines.append(
            b"%d\t%s\t%s\t%s\t%d\t%d\t%s\n"
            % (dead.id, *fields, count, int(dead.died), last.encode())
        )
    return b"".join(lines) + b".\n"


def _show(conn: AdminContext, args: list[bytes]) -> bytes:
    if len(args) != 1:
        return _DEAD_USAGE
    dead = conn.scheduler.expire_dead().find(args[0])
    return _UNKNOWN_JOB if dead is None else _describe_dead(dead, with_attempts=True)


def _stats(conn: AdminContext, args: list[bytes]) -> bytes:
    queue = conn.scheduler.expire_dead()
    return _record([("jobs", len(queue)), ("bytes", queue.bytes), ("dropped", queue.dropped)])


def _chosen(conn: AdminContext, args: list[bytes]) -> list[DeadJob] | None:
    """The dead jobs ``ID|HANDLE`` or ``--all [FUNCTION]`` names; None if malformed."""
    queue = conn.scheduler.expire_dead()
    if args and args[0] == b"--all" and len(args) <= 2:
        return list(queue.of_function(args[1] if len(args) == 2 else None))
    if len(args) != 1:
        return None
    found = queue.find(args[0])
    return [] if found is None else [found]


def _requeue(conn: AdminContext, args: list[bytes]) -> bytes:
    chosen = _chosen(conn, args)
    if chosen is None:
        return _DEAD_USAGE
    if not chosen and args[0] != b"--all":
        return _UNKNOWN_JOB
    done = 0
    for dead in chosen:
        result = requeue_dead(conn.scheduler, dead)
        if isinstance(result, tuple):
            return b"ERR QUEUE_ERROR %s\r\n" % result[1].replace(b" ", b"+")
        done += 1
    return b"OK %d\n" % done


def _purge(conn: AdminContext, args: list[bytes]) -> bytes:
    chosen = _chosen(conn, args)
    if chosen is None:
        return _DEAD_USAGE
    if not chosen and args[0] != b"--all":
        return _UNKNOWN_JOB
    for dead in chosen:
        conn.scheduler.expire_dead().forget(dead.id)
    return b"OK %d\n" % len(chosen)


_DEAD_ACTIONS = {
    b"list": _list,
    b"show": _show,
    b"stats": _stats,
    b"requeue": _requeue,
    b"purge": _purge,
}
