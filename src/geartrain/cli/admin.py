"""``geartrain admin``: the administrative commands, printed exactly as ``gearadmin`` does.

By default the output is byte for byte what ``gearadmin`` prints, so scripts
written against it keep working: list replies are printed as received (with
the closing ``.``), ``OK`` replies as ``OK``, values bare, and server errors as
``Error: ...`` on standard error. ``--json`` prints parsed results instead.
Unlike ``gearadmin`` (which always exits 0) a server error exits with 1;
a connection failure or timeout exits with 3.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from geartrain.admin import AdminClient, AdminReply, Shape
from geartrain.admin.core import (
    check_word,
    maxqueue_command,
    parse_jobs,
    parse_memory,
    parse_priority_status,
    parse_status,
    parse_unique_jobs,
    parse_workers,
)
from geartrain.admin.jobs import parse_dead_list, parse_record
from geartrain.client.servers import servers_from_options
from geartrain.errors import AdminError, GeartrainError
from geartrain.tls import TLSOptions

from . import tls_options

EXIT_ERROR = 1
EXIT_UNAVAILABLE = 3

_PARSERS: dict[str, Any] = {
    "status": parse_status,
    "prioritystatus": parse_priority_status,
    "workers": parse_workers,
    "show jobs": parse_jobs,
    "show unique jobs": parse_unique_jobs,
    "memory": parse_memory,
}


@dataclasses.dataclass
class _Options:
    host: str | None
    port: int | None
    json: bool
    timeout: float
    tls: TLSOptions | None = None

    def client(self) -> AdminClient:
        try:
            address = servers_from_options(self.host, self.port)[0]
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        return AdminClient(address, timeout=self.timeout, tls=self.tls)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(_jsonable(value), indent=2, sort_keys=True))


def _print_reply(reply: AdminReply) -> None:
    """Print a reply the way gearadmin does."""
    out = sys.stdout.buffer
    if reply.shape is Shape.LIST:
        out.write(reply.raw)
    elif reply.shape is Shape.OK:
        out.write(b"OK\n")
    else:
        out.write(reply.value + b"\n")
    out.flush()


def _run(
    ctx: click.Context,
    line: str,
    shape: Shape,
    parse: Callable[[AdminReply], Any] | None = None,
) -> None:
    """Send ``line`` and print the reply (as gearadmin would, or parsed with ``--json``;
    ``parse`` reads the reply for ``--json`` where the command's own parser does not)."""
    options: _Options = ctx.obj
    try:
        with options.client() as admin:
            reply = admin.send(line, shape)
    except GeartrainError as exc:
        click.echo(f"geartrain admin: {exc}", err=True)
        ctx.exit(EXIT_UNAVAILABLE)
    if reply.error is not None:
        if options.json:
            _emit_json({"error": reply.error.code, "text": reply.error.text})
        else:
            # gearadmin prints the reply after "ERR " with its own line end.
            sys.stderr.buffer.write(b"Error: " + reply.raw[4:])
            sys.stderr.buffer.flush()
        ctx.exit(EXIT_ERROR)
    if not options.json:
        _print_reply(reply)
    elif parse is not None:
        _emit_json(parse(reply))
    elif shape is Shape.LIST:
        _emit_json(_PARSERS[line](reply.lines))
    elif shape is Shape.VALUE:
        value = reply.value.decode(errors="replace")
        _emit_json(int(value) if line == "getpid" else value)
    else:
        _emit_json({"ok": True})


@click.group("admin")
@click.option("-h", "--host", help="Job server host (or host:port).")
@click.option("-p", "--port", type=int, help="Job server port (default 4730).")
@click.option("--json", "as_json", is_flag=True, help="Print parsed results as JSON.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds per reply.")
@tls_options.client_options
@click.pass_context
def admin(
    ctx: click.Context,
    /,
    host: str | None,
    port: int | None,
    as_json: bool,
    timeout: float,
    **tls_args: Any,
) -> None:
    """Query and manage a job server (gearadmin-compatible output)."""
    ctx.obj = _Options(host, port, as_json, timeout, tls_options.client_tls(tls_args))


def _simple(name: str, line: str, shape: Shape, doc: str) -> None:
    @admin.command(name, help=doc)
    @click.pass_context
    def command(ctx: click.Context) -> None:
        _run(ctx, line, shape)


_simple("status", "status", Shape.LIST, "Jobs and workers per function.")
_simple("priority-status", "prioritystatus", Shape.LIST, "Queued jobs per priority.")
_simple("workers", "workers", Shape.LIST, "Connections and their functions.")
_simple("jobs", "show jobs", Shape.LIST, "Every job on the server.")
_simple("unique-jobs", "show unique jobs", Shape.LIST, "Unique ids of every job.")
_simple("memory", "memory", Shape.LIST, "The memory budget: bytes held by category, paused peers.")
_simple("version", "version", Shape.VALUE, "Server version.")
_simple("verbose", "verbose", Shape.VALUE, "Server log level.")
_simple("getpid", "getpid", Shape.VALUE, "Server process id.")


def _word(value: str) -> str:
    try:
        return check_word(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@admin.command("cancel")
@click.argument("handle")
@click.pass_context
def cancel(ctx: click.Context, handle: str) -> None:
    """Cancel a job by handle; waiting clients get WORK_FAIL."""
    _run(ctx, f"cancel job {_word(handle)}", Shape.OK)


@admin.command("create")
@click.argument("function")
@click.pass_context
def create(ctx: click.Context, function: str) -> None:
    """Create a function with no jobs or workers."""
    _run(ctx, f"create function {_word(function)}", Shape.OK)


@admin.command("drop")
@click.argument("function")
@click.pass_context
def drop(ctx: click.Context, function: str) -> None:
    """Drop a function that has no workers or running jobs."""
    _run(ctx, f"drop function {_word(function)}", Shape.OK)


@admin.command("maxqueue")
@click.argument("function")
@click.argument("limits", nargs=-1, type=int)
@click.pass_context
def maxqueue(ctx: click.Context, function: str, limits: tuple[int, ...]) -> None:
    """Limit a function's queue: no LIMITS resets, one for all priorities, or HIGH NORMAL LOW."""
    try:
        line = maxqueue_command(_word(function), limits)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    _run(ctx, line, Shape.OK)


@admin.command("job")
@click.argument("handle", required=False)
@click.option(
    "--unique",
    nargs=2,
    metavar="FUNCTION UNIQUE",
    help="Look the job up by function and unique instead of by handle.",
)
@click.pass_context
def job(ctx: click.Context, handle: str | None, unique: tuple[str, str] | None) -> None:
    """Where a job stands: storing, queued, delayed, running (on which worker),
    retrying or dead."""
    if unique:
        line = f"job unique {_word(unique[0])} {_word(unique[1])}"
    elif handle:
        line = f"job {_word(handle)}"
    else:
        raise click.UsageError("give a HANDLE or --unique FUNCTION UNIQUE")
    _run(ctx, line, Shape.LIST, lambda reply: parse_record(reply.lines))


@admin.group("dead")
def dead() -> None:
    """Jobs that failed for good: list, show, requeue, purge."""


@dead.command("list")
@click.argument("function", required=False)
@click.pass_context
def dead_list(ctx: click.Context, function: str | None) -> None:
    """Dead jobs, oldest first (ID, handle, function, unique, attempts, died, last outcome)."""
    line = "dead list" + (f" {_word(function)}" if function else "")
    _run(ctx, line, Shape.LIST, lambda reply: parse_dead_list(reply.lines))


@dead.command("show")
@click.argument("job_id", metavar="ID|HANDLE")
@click.pass_context
def dead_show(ctx: click.Context, job_id: str) -> None:
    """One dead job with the outcome of every attempt kept."""
    _run(ctx, f"dead show {_word(job_id)}", Shape.LIST, lambda reply: parse_record(reply.lines))


@dead.command("stats")
@click.pass_context
def dead_stats(ctx: click.Context) -> None:
    """Dead jobs kept, their bytes, and how many the bounds dropped."""
    _run(ctx, "dead stats", Shape.LIST, lambda reply: parse_record(reply.lines))


def _chosen(job_id: str | None, every: bool, function: str | None) -> str:
    if every and not job_id:
        return "--all" + (f" {_word(function)}" if function else "")
    if job_id and not every and not function:
        return _word(job_id)
    raise click.UsageError("give an ID or HANDLE, or --all [--function FUNCTION]")


def _count(reply: AdminReply) -> dict[str, int]:
    return {"count": int(reply.value or b"0")}


@dead.command("requeue")
@click.argument("job_id", metavar="[ID|HANDLE]", required=False)
@click.option("--all", "every", is_flag=True, help="Every dead job (of --function).")
@click.option("--function", help="With --all: only the dead jobs of this function.")
@click.pass_context
def dead_requeue(ctx: click.Context, job_id: str | None, every: bool, function: str | None) -> None:
    """Submit dead jobs again as new background jobs; prints how many."""
    _run(ctx, f"dead requeue {_chosen(job_id, every, function)}", Shape.VALUE, _count)


@dead.command("purge")
@click.argument("job_id", metavar="[ID|HANDLE]", required=False)
@click.option("--all", "every", is_flag=True, help="Every dead job (of --function).")
@click.option("--function", help="With --all: only the dead jobs of this function.")
@click.pass_context
def dead_purge(ctx: click.Context, job_id: str | None, every: bool, function: str | None) -> None:
    """Forget dead jobs for good; prints how many."""
    _run(ctx, f"dead purge {_chosen(job_id, every, function)}", Shape.VALUE, _count)


@admin.command("ping")
@click.option("-c", "--count", type=click.IntRange(1), default=1, show_default=True)
@click.pass_context
def ping(ctx: click.Context, count: int) -> None:
    """Measure the round trip of an ECHO request."""
    options: _Options = ctx.obj
    try:
        with options.client() as client:
            times = [client.ping() for _ in range(count)]
    except GeartrainError as exc:
        click.echo(f"geartrain admin: {exc}", err=True)
        ctx.exit(EXIT_UNAVAILABLE)
    if options.json:
        _emit_json({"rtt": times})
    else:
        for rtt in times:
            click.echo(f"{rtt * 1000:.3f} ms")


@admin.command("top")
@click.option(
    "-n",
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option("--iterations", type=click.IntRange(1), help="Stop after this many refreshes.")
@click.pass_context
def top(ctx: click.Context, interval: float, iterations: int | None) -> None:
    """A refreshing table of functions: queued, running, workers (Ctrl-C to quit)."""
    options: _Options = ctx.obj
    shown = 0
    clear = sys.stdout.isatty()
    try:
        with options.client() as client:
            while iterations is None or shown < iterations:
                rows = client.status()
                version = client.version()
                if clear:
                    click.clear()
                click.echo(_top_table(options, version, rows))
                shown += 1
                if iterations is None or shown < iterations:
                    time.sleep(interval)
    except KeyboardInterrupt:
        return
    except AdminError as exc:
        click.echo(f"Error: {exc}", err=True)
        ctx.exit(EXIT_ERROR)
    except GeartrainError as exc:
        click.echo(f"geartrain admin: {exc}", err=True)
        ctx.exit(EXIT_UNAVAILABLE)


def _override(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Given after the sub-command, a connection option replaces the group's value."""
    if value is not None and value is not False and param.name is not None:
        setattr(ctx.find_object(_Options), param.name, value)


def _connection_options() -> list[click.Parameter]:
    # gearadmin takes -h/-p anywhere on its line, and its users type
    # `geartrain admin status -h host -p 4730`: every sub-command accepts them too.
    return [
        click.Option(
            ["-h", "--host", "host"],
            expose_value=False,
            callback=_override,
            help="Job server host (or host:port).",
        ),
        click.Option(
            ["-p", "--port", "port"],
            type=int,
            expose_value=False,
            callback=_override,
            help="Job server port (default 4730).",
        ),
        click.Option(
            ["--json", "json"],
            is_flag=True,
            default=False,
            expose_value=False,
            callback=_override,
            help="Print parsed results as JSON.",
        ),
        click.Option(
            ["--timeout", "timeout"],
            type=float,
            expose_value=False,
            callback=_override,
            help="Seconds per reply.",
        ),
    ]


for _command in admin.commands.values():
    _command.params.extend(_connection_options())


def _top_table(options: _Options, version: str, rows: list[Any]) -> str:
    rows = sorted(rows, key=lambda r: r.function)
    width = max([len("FUNCTION"), *(len(r.function) for r in rows)])
    lines = [
        f"{options.host or 'localhost'}:{options.port or 4730}  version {version}  "
        f"{time.strftime('%H:%M:%S')}",
        f"{'FUNCTION':<{width}}  {'QUEUED':>8}  {'RUNNING':>8}  {'WORKERS':>8}",
    ]
    lines += [f"{r.function:<{width}}  {r.queued:>8}  {r.running:>8}  {r.workers:>8}" for r in rows]
    total_q = sum(r.queued for r in rows)
    total_r = sum(r.running for r in rows)
    lines.append(f"{'TOTAL':<{width}}  {total_q:>8}  {total_r:>8}")
    return "\n".join(lines)
