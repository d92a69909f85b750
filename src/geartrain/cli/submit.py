"""``geartrain submit``: run jobs from the command line, like ``gearman`` in client mode.

Exit status:
    0 every job succeeded (or was queued, with ``-b``);
    1 a job failed (WORK_FAIL) or raised (WORK_EXCEPTION);
    2 usage error;
    3 no job server reachable, or a connection broke with jobs in flight;
    4 timeout;
    5 the server refused a job (ERROR packet, e.g. queue full).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, BinaryIO, TextIO

import click

from geartrain.client import Client, Priority, SyncTask, UpdateKind
from geartrain.client.servers import servers_from_options
from geartrain.errors import (
    ConnectionLost,
    GeartrainError,
    GeartrainTimeout,
    JobError,
    ServerError,
)

from . import tls_options

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_UNAVAILABLE = 3
EXIT_TIMEOUT = 4
EXIT_REFUSED = 5

#: Jobs kept in flight at once when reading one job per line.
DEFAULT_WINDOW = 100


def exit_code(error: GeartrainError) -> int:
    """The documented exit status for an error."""
    if isinstance(error, GeartrainTimeout):
        return EXIT_TIMEOUT
    if isinstance(error, ConnectionLost):
        return EXIT_UNAVAILABLE
    if isinstance(error, ServerError):
        return EXIT_REFUSED
    return EXIT_JOB_FAILED


def _payloads(
    args: tuple[str, ...], source: BinaryIO | None, per_line: bool, strip: bool
) -> Iterator[bytes]:
    if args:
        yield from (arg.encode() for arg in args)
    elif source is None:
        yield b""
    elif per_line:
        for line in source:
            yield line.rstrip(b"\r\n") if strip else line
    else:
        yield source.read()


def _count_lines(source: BinaryIO) -> int | None:
    """Lines in a seekable input (for the progress bar), else None."""
    try:
        position = source.tell()
        count = sum(1 for _ in source)
        source.seek(position)
    except (OSError, ValueError):
        return None
    return count


class _Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.done = 0
        self._drawn = 0.0

    def update(self, steps: int) -> None:
        self.done += steps
        now = time.monotonic()
        if now - self._drawn >= 0.1 or self.done >= self.total:
            self._drawn = now
            self._draw()

    def finish(self) -> None:
        self._draw()
        self.stream.write("\n")
        self.stream.flush()

    def _draw(self) -> None:
        filled = self.WIDTH * self.done // self.total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        percent = 100 * self.done // self.total
        self.stream.write(f"\rjobs [{bar}] {self.done}/{self.total} {percent:3d}%")
        self.stream.flush()


class _Runner:
    """Keeps a window of jobs in flight and prints results in input order."""

    def __init__(self, client: Client, prefix: bool, background: bool, verbose: bool) -> None:
        self.client = client
        self.prefix = prefix
        self.background = background
        self.verbose = verbose
        self.in_flight: deque[SyncTask] = deque()
        self.status = EXIT_OK
        self.finished = 0
        self.progress: _Progress | None = None

    def add(self, task: SyncTask, window: int, deadline: float | None) -> None:
        self.in_flight.append(task)
        while len(self.in_flight) >= window:
            self.retire(deadline)

    def retire(self, deadline: float | None) -> None:
        task = self.in_flight.popleft()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            task.wait(timeout)
        except GeartrainTimeout as exc:
            self._report(task, exc)
        else:
            self._output(task)
        if self.progress is not None:
            self.progress.update(1)

    def _output(self, task: SyncTask) -> None:
        self.finished += 1
        chunks = [u.data for u in task.updates if u.kind is UpdateKind.DATA]
        warnings = [u.data for u in task.updates if u.kind is UpdateKind.WARNING]
        task.updates.clear()
        for warning in warnings:
            sys.stderr.buffer.write(b"warning: " + warning + b"\n")
        try:
            result = task.outcome()
        except GeartrainError as exc:
            self._report(task, exc)
            return
        if self.background:
            if self.verbose:
                click.echo(f"queued {result.decode()} ({task.unique.decode()})", err=True)
            return
        out = sys.stdout.buffer
        if self.prefix:
            out.write(task.function + b": ")
        out.write(b"".join(chunks) + result)
        out.flush()

    def _report(self, task: SyncTask, error: GeartrainError) -> None:
        name = task.function.decode(errors="replace")
        detail = str(error)
        if isinstance(error, JobError):
            detail = f"job failed: {error}"
        click.echo(f"geartrain submit: {name}: {detail}", err=True)
        if self.status == EXIT_OK:
            self.status = exit_code(error)


@click.command("submit")
@click.option(
    "-f",
    "--function",
    "functions",
    multiple=True,
    required=True,
    help="Function to run the jobs with (repeat for several).",
)
@click.option("-h", "--host", help="Job server host, or host:port,host:port,...")
@click.option("-p", "--port", type=int, help="Job server port (default 4730).")
@click.option("-b", "--background", is_flag=True, help="Queue the jobs and return at once.")
@click.option("-I", "--high", is_flag=True, help="High priority.")
@click.option("-L", "--low", is_flag=True, help="Low priority.")
@click.option("-u", "--unique", help="Unique id for the job(s).")
@click.option("-n", "per_line", is_flag=True, help="One job per input line (newline kept).")
@click.option("-N", "per_line_strip", is_flag=True, help="Like -n, newline stripped.")
@click.option("-P", "--prefix", is_flag=True, help="Prefix output with the function name.")
@click.option("-s", "--no-stdin", is_flag=True, help="Do not read standard input.")
@click.option("-t", "--timeout", type=int, help="Give up after this many milliseconds.")
@click.option("-F", "--file", "input_file", type=click.File("rb"), help="Read input from a file.")
@click.option(
    "-w",
    "--window",
    type=click.IntRange(1),
    default=DEFAULT_WINDOW,
    show_default=True,
    help="Jobs in flight at once.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr (default: when many jobs and stderr is a terminal).",
)
@click.option("-v", "--verbose", is_flag=True, help="Report queued background jobs.")
@tls_options.client_options
@click.argument("payload", nargs=-1)
def submit(
    functions: tuple[str, ...],
    host: str | None,
    port: int | None,
    background: bool,
    high: bool,
    low: bool,
    unique: str | None,
    per_line: bool,
    per_line_strip: bool,
    prefix: bool,
    no_stdin: bool,
    timeout: int | None,
    input_file: BinaryIO | None,
    window: int,
    progress: bool | None,
    verbose: bool,
    payload: tuple[str, ...],
    **tls_args: Any,
) -> None:
    """Submit jobs; each PAYLOAD argument is one job, else standard input is.

    Honours GEARMAN_SERVERS / GEARMAN_SERVER when -h/-p are not given. Results
    are printed in input order. Exit status: 0 ok, 1 job failed, 2 usage,
    3 no server / connection lost, 4 timeout, 5 refused by the server.
    """
    if high and low:
        raise click.UsageError("-I and -L are exclusive")
    priority = Priority.HIGH if high else Priority.LOW if low else Priority.NORMAL
    source: BinaryIO | None = input_file
    if source is None and not no_stdin and not payload:
        source = sys.stdin.buffer
    by_line = per_line or per_line_strip
    total = _count_lines(source) if by_line and source is not None else None
    if total is not None:
        total *= len(functions)
    show = progress if progress is not None else (bool(total and total > 1) and sys.stderr.isatty())
    deadline = None if timeout is None else time.monotonic() + timeout / 1000
    try:
        servers = servers_from_options(host, port)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    with Client(servers, exceptions=True, tls=tls_options.client_tls(tls_args)) as client:
        runner = _Runner(client, prefix, background, verbose)
        bar = _Progress(total, sys.stderr) if show and total else None
        runner.progress = bar
        try:
            for data in _payloads(payload, source, by_line, per_line_strip):
                for function in functions:
                    try:
                        task = client.submit(
                            function, data, unique=unique, priority=priority, background=background
                        )
                    except GeartrainError as exc:
                        click.echo(f"geartrain submit: {exc}", err=True)
                        sys.exit(exit_code(exc))
                    runner.add(task, window, deadline)
            while runner.in_flight:
                runner.retire(deadline)
        finally:
            if bar is not None:
                bar.finish()
    sys.exit(runner.status)
