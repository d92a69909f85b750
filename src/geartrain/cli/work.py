"""``geartrain work``: serve jobs with a shell command, like ``gearman -w``.

Each job runs ``COMMAND ARGS...`` once with the payload on standard input; its
standard output is the result and a non-zero exit status fails the job
(WORK_FAIL). Without a command the payload is sent back unchanged.

With ``--processes N`` (or ``--max-jobs`` / ``--max-lifetime``) a supervisor
runs N worker processes, restarts any that crash, and replaces those that
reached their job or age limit. Exit status: 0 normal end, 1 aborted, 2 usage.
A server that cannot be reached is reported on stderr and retried.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

import click

from geartrain.client.servers import Address, servers_from_options
from geartrain.errors import WorkerAborted, WorkFail
from geartrain.tls import TLSOptions
from geartrain.worker import Job, Worker

from . import tls_options

logger = logging.getLogger(__name__)

#: A child that stopped because of --max-jobs / --max-lifetime exits with this
#: status (EX_TEMPFAIL) and is replaced; 0 means it is done for good.
EXIT_RECYCLE = 75
#: Seconds to wait before restarting a child that crashed, doubling up to 30.
RESTART_DELAY = 0.5


@dataclass(frozen=True)
class WorkConfig:
    """Everything a worker process needs (picklable for child processes)."""

    servers: list[Address]
    functions: tuple[str, ...]
    command: tuple[str, ...]
    count: int | None
    max_jobs: int | None
    max_lifetime: float | None
    per_line: bool
    strip: bool
    timeout: float | None
    client_id: str | None
    poll_interval: float
    tls: TLSOptions | None = None


def run_command(config: WorkConfig, job: Job) -> bytes:
    """Run the configured command for one job; its stdout is the result."""
    if not config.command:
        return job.payload
    if config.per_line:
        return _run_streaming(config, job)
    proc = subprocess.run(config.command, input=job.payload, stdout=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise WorkFail(f"command exited with {proc.returncode}")
    return proc.stdout


def _run_streaming(config: WorkConfig, job: Job) -> bytes:
    # -n / -N: every output line is sent as WORK_DATA as soon as it is printed.
    with subprocess.Popen(config.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(job.payload)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        for line in proc.stdout:
            job.send_data(line.rstrip(b"\r\n") if config.strip else line)
        code = proc.wait()
    if code != 0:
        raise WorkFail(f"command exited with {code}")
    return b""


def run_worker(config: WorkConfig) -> int:
    """One worker process; returns its exit status."""
    worker = Worker(
        config.servers,
        client_id=config.client_id,
        poll_interval=config.poll_interval,
        tls=config.tls,
    )
    for function in config.functions:
        worker.register(function, lambda job: run_command(config, job), timeout=config.timeout)
    limit = config.count
    if config.max_jobs is not None:
        limit = config.max_jobs if limit is None else min(limit, config.max_jobs)
    started = time.monotonic()
    try:
        done = worker.work(max_jobs=limit, max_time=config.max_lifetime)
    except WorkerAborted:
        return 1
    if worker.stopping or (config.count is not None and done >= config.count):
        return 0  # asked to stop, or finished its -c COUNT: not replaced
    aged = config.max_lifetime is not None and time.monotonic() - started >= config.max_lifetime
    used_up = config.max_jobs is not None and done >= config.max_jobs
    return EXIT_RECYCLE if aged or used_up else 0


def _report_on_stderr() -> None:
    """Print the worker's warnings on stderr, as ``gearman -w`` prints its errors.

    Above all that a server cannot be reached: the worker keeps retrying, and without
    this a mistyped port would look like a worker waiting for jobs. The library logs
    such failures rate-limited, so a server that stays down does not flood stderr.
    Does nothing if logging was configured already.
    """
    logging.basicConfig(level=logging.WARNING, format="geartrain work: %(message)s")


_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _child(config: WorkConfig) -> None:
    # Forked with the supervisor's handlers and with the signals blocked (see
    # Supervisor._start): take the default action until the worker installs its
    # own, so a signal that arrives during start-up ends this process.
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    sys.exit(run_worker(config))


class Supervisor:
    """Keeps N worker processes running."""

    def __init__(self, config: WorkConfig, processes: int) -> None:
        self.config = config
        self.processes = processes
        self.context = multiprocessing.get_context("fork")
        self.children: dict[int, multiprocessing.process.BaseProcess] = {}
        self.delay: dict[int, float] = {}
        self.signals = 0

    def run(self) -> int:
        previous = {s: signal.signal(s, self._signal) for s in _SIGNALS}
        try:
            for slot in range(self.processes):
                self._start(slot)
            while self.children:
                self._reap()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 1 if self.signals > 1 else 0

    def _start(self, slot: int) -> None:
        # Block the signals while forking so that a signal cannot reach the new
        # child before it is in self.children (and would be forwarded to it).
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            child = self.context.Process(target=_child, args=(self.config,), daemon=False)
            child.start()
            self.children[slot] = child
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def _reap(self) -> None:
        for slot, child in list(self.children.items()):
            child.join(timeout=0.1)
            if child.exitcode is None:
                continue
            del self.children[slot]
            if self.signals or child.exitcode == 0:
                continue
            if child.exitcode == EXIT_RECYCLE:
                self.delay.pop(slot, None)
            else:
                delay = min(self.delay.get(slot, RESTART_DELAY / 2) * 2, 30.0)
                self.delay[slot] = delay
                click.echo(
                    f"geartrain work: worker exited with {child.exitcode}, "
                    f"restarting in {delay:.1f}s",
                    err=True,
                )
                time.sleep(delay)
                if self.signals:
                    continue  # told to stop while waiting
            self._start(slot)

    def _signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        for child in self.children.values():
            if child.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signum)


@click.command("work", context_settings={"ignore_unknown_options": True})
@click.option(
    "-f",
    "--function",
    "functions",
    multiple=True,
    required=True,
    help="Function to serve (repeat for several).",
)
@click.option("-h", "--host", help="Job server host, or host:port,host:port,...")
@click.option("-p", "--port", type=int, help="Job server port (default 4730).")
@click.option("-c", "--count", type=click.IntRange(1), help="Exit after this many jobs.")
@click.option("-n", "per_line", is_flag=True, help="Send each output line as WORK_DATA.")
@click.option("-N", "per_line_strip", is_flag=True, help="Like -n, newline stripped.")
@click.option("--processes", type=click.IntRange(1), help="Run N worker processes.")
@click.option("--max-jobs", type=click.IntRange(1), help="Replace a process after N jobs.")
@click.option(
    "--max-lifetime",
    type=click.FloatRange(min=0, min_open=True),
    help="Replace a process after this many seconds.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds the server lets one job run (CAN_DO_TIMEOUT).",
)
@click.option("--client-id", help="Worker id shown by the server's workers listing.")
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds between re-polls while idle.",
)
@tls_options.client_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def work(
    functions: tuple[str, ...],
    host: str | None,
    port: int | None,
    count: int | None,
    per_line: bool,
    per_line_strip: bool,
    processes: int | None,
    max_jobs: int | None,
    max_lifetime: float | None,
    timeout: float | None,
    client_id: str | None,
    poll_interval: float,
    command: tuple[str, ...],
    **tls_args: Any,
) -> None:
    """Serve FUNCTION jobs by running COMMAND (put it after --) once per job.

    The payload goes to the command's standard input; its standard output is
    the result; a non-zero exit status fails the job. The first SIGTERM lets
    running jobs finish, the second aborts them.
    """
    try:
        servers = servers_from_options(host, port)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    _report_on_stderr()
    config = WorkConfig(
        servers=servers,
        functions=functions,
        command=command,
        count=count,
        max_jobs=max_jobs,
        max_lifetime=max_lifetime,
        per_line=per_line or per_line_strip,
        strip=per_line_strip,
        timeout=timeout,
        client_id=client_id,
        poll_interval=poll_interval,
        tls=tls_options.client_tls(tls_args),
    )
    if processes is None and max_jobs is None and max_lifetime is None:
        status = run_worker(config)
        sys.exit(0 if status == EXIT_RECYCLE else status)
    sys.exit(Supervisor(config, processes or 1).run())
