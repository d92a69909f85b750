"""asyncio Gearman worker: up to N jobs at once, any number of servers.

Worker functions may be coroutine functions (awaited on the loop) or plain
functions (run in a thread with :func:`asyncio.to_thread`, so blocking code
does not stall the other jobs). Each server connection is kept up by its own
task, which reconnects with jittered exponential backoff and re-registers.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import threading
from typing import Any, Unpack

from geartrain.client.servers import Address, ServerSpec, format_address
from geartrain.client.transport import open_stream
from geartrain.errors import GeartrainError, WorkerAborted
from geartrain.protocol import PacketType

from .core import READ_SIZE, BaseWorker, WorkerSettings, connect_error
from .job import Job, outcome
from .protocol import Assignment

logger = logging.getLogger(__name__)

#: Default number of jobs an :class:`AsyncWorker` runs at once.
CONCURRENCY = 10


class AsyncWorker(BaseWorker):
    """An asyncio Gearman worker.

    Args:
        servers: job servers; the worker connects to all of them.
        concurrency: the most jobs running at once.
        client_id: label shown by the server's ``workers`` command.
        exceptions: report unexpected exceptions as WORK_EXCEPTION (True) or WORK_FAIL.
        poll_interval: seconds after which a sleeping connection grabs anyway.
        connect_timeout: seconds allowed per TCP connect (and TLS handshake).
        tls: as for :class:`geartrain.worker.Worker`.
    """

    def __init__(
        self,
        servers: ServerSpec | None = None,
        *,
        concurrency: int = CONCURRENCY,
        **settings: Unpack[WorkerSettings],
    ) -> None:
        super().__init__(servers, capacity=concurrency, **settings)
        self._writers: dict[Address, asyncio.StreamWriter] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._signals = 0
        self._aborted = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    @property
    def connected(self) -> list[Address]:
        """Servers this worker is connected to right now."""
        return list(self._writers)

    def stop(self) -> None:
        """Stop taking jobs; :meth:`work` returns once the running ones finished."""
        self.state.accepting = False
        self._stop.set()
        self._wake.set()

    def abort(self) -> None:
        """Cancel the running jobs and make :meth:`work` raise :class:`WorkerAborted`."""
        self._aborted = True
        self.stop()
        for task in self._jobs:
            task.cancel()

    async def work(
        self,
        *,
        max_jobs: int | None = None,
        idle_timeout: float | None = None,
        handle_signals: bool = True,
    ) -> int:
        """Take and run up to ``concurrency`` jobs at a time until stopped.

        Args:
            idle_timeout: return after this many seconds without a running job.
            max_jobs: return after this many jobs.
            handle_signals: in the main thread, the first SIGTERM or SIGINT
                stops taking jobs and returns when the running ones are done;
                the second cancels them (:class:`WorkerAborted`).

        Returns:
            How many jobs were run.

        Raises:
            WorkerAborted: :meth:`abort` was called or a second signal arrived.
        """
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        # stop() may come before this coroutine first runs; it must still count.
        self.state.accepting = not self._stop.is_set()
        self.state.limit = max_jobs
        start = self.jobs_done
        uninstall = self._install_signals() if handle_signals else None
        keepers = [asyncio.create_task(self._keep_connected(a)) for a in self.servers]
        try:
            await self._supervise(start, max_jobs, idle_timeout)
            while self._jobs:
                await asyncio.wait(set(self._jobs))
        finally:
            if uninstall is not None:
                uninstall()
            for keeper in keepers:
                keeper.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
            await self._close_all()
            self._stop = asyncio.Event()  # ready for another work()
        if self._aborted:
            self._aborted = False
            raise WorkerAborted("worker aborted")
        return self.jobs_done - start

    # -- internals -----------------------------------------------------------------

    async def _supervise(self, start: int, max_jobs: int | None, idle: float | None) -> None:
        loop = asyncio.get_running_loop()
        last_busy = loop.time()
        last_poll = loop.time()
        while not self._stop.is_set():
            now = loop.time()
            if self._jobs:
                last_busy = now
            if max_jobs is not None and self.jobs_done - start >= max_jobs:
                break
            if idle is not None and now - last_busy >= idle:
                break
            if now - last_poll >= self.poll_interval:
                self.state.wake()
                self._flush()
                last_poll = now
            limits = [last_poll + self.poll_interval - now]
            if idle is not None:
                limits.append(last_busy + idle - now)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(limits))):
                    await self._wake.wait()
        self.state.accepting = False

    async def _keep_connected(self, address: Address) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            delay = self.backoff.due.get(address, 0.0) - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
                continue
            try:
                async with asyncio.timeout(self.connect_timeout):
                    reader, writer = await open_stream(address, self.tls, READ_SIZE)
            except (OSError, TimeoutError) as exc:
                error = connect_error(exc, self.connect_timeout)
                self.unreachable.failed(address, error, loop.time())
                self.backoff.failed(address, loop.time())
                continue
            self.unreachable.connected(address, loop.time())
            self.backoff.succeeded(address)
            await self._serve(address, reader, writer)
            self.backoff.failed(address, loop.time())

    async def _serve(
        self, address: Address, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._writers[address] = writer
        self.state.connection_made(address)
        self._flush()
        try:
            while data := await reader.read(READ_SIZE):
                for event in self.state.receive_data(address, data):
                    if isinstance(event, Assignment):
                        self._start(event)
                    else:
                        self._log_message(event)
                self._flush()
        except (OSError, GeartrainError) as exc:
            logger.info("lost %s: %s", format_address(address), exc)
        finally:
            if self._writers.get(address) is writer:
                del self._writers[address]
            self.state.connection_lost(address)
            writer.close()
            self._flush()

    def _start(self, assignment: Assignment) -> None:
        task = asyncio.create_task(self._run(assignment))
        self._jobs.add(task)
        task.add_done_callback(self._job_done)
        self._wake.set()

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        self._wake.set()

    async def _run(self, assignment: Assignment) -> None:
        registration = self.registry.get(assignment.function)
        job = Job(assignment, lambda ptype, args, data: self._emit(assignment, ptype, args, data))
        ptype, data = PacketType.WORK_FAIL, b""
        try:
            if registration is not None:
                ptype, data = outcome(
                    await self._call(registration.func, job), exceptions=self.exceptions
                )
        except asyncio.CancelledError:
            # Aborted: send nothing, the server re-queues the job when we disconnect.
            self.state.running.pop((assignment.connection, assignment.handle), None)
            raise
        except Exception as exc:
            ptype, data = self._failed(job, exc)
        self._finish(assignment, ptype, data)

    @staticmethod
    async def _call(func: Any, job: Job) -> object:
        if inspect.iscoroutinefunction(func):
            return await func(job)
        return await asyncio.to_thread(func, job)

    def _emit(
        self, job: Assignment, ptype: PacketType, args: tuple[bytes, ...], data: bytes
    ) -> None:
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread:
            loop.call_soon_threadsafe(self._progress, job, ptype, args, data)
        else:
            self._progress(job, ptype, args, data)

    def _flush(self) -> None:
        for address, data in list(self.state.pending_output()):
            writer = self._writers.get(address)  # type: ignore[call-overload]
            if writer is not None and not writer.is_closing():
                writer.write(data)

    async def _close_all(self) -> None:
        writers = list(self._writers.values())
        self._writers.clear()
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _install_signals(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return None
        loop = asyncio.get_running_loop()
        self._signals = 0

        def handler(signum: int) -> None:
            self._signals += 1
            if self._signals == 1:
                logger.info("signal %d: finishing running jobs, then exiting", signum)
                self.stop()
            else:
                self.abort()

        sigs = (signal.SIGTERM, signal.SIGINT)
        try:
            for sig in sigs:
                loop.add_signal_handler(sig, handler, sig)
        except (NotImplementedError, RuntimeError):
            return None

        def uninstall() -> None:
            for sig in sigs:
                loop.remove_signal_handler(sig)

        return uninstall
