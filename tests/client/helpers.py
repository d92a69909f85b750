"""Helpers for the client, worker, admin and CLI tests: workers in threads, polling."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from geartrain.client.servers import Address
from geartrain.worker import Worker

PHP = shutil.which("php")
GEARMAN = shutil.which("gearman")
GEARADMIN = shutil.which("gearadmin")


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll until ``predicate()`` is truthy; return its value or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def php_has_gearman() -> bool:
    if PHP is None:
        return False
    import subprocess

    proc = subprocess.run(
        [PHP, "-r", "echo extension_loaded('gearman') ? 'yes' : 'no';"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return proc.stdout.strip() == b"yes"


@contextmanager
def worker_thread(
    servers: list[Address] | Address,
    functions: dict[str, Callable[..., Any]],
    **options: Any,
) -> Iterator[Worker]:
    """Run a blocking :class:`Worker` in a thread for the duration of the block."""
    if isinstance(servers, tuple):
        servers = [servers]
    options.setdefault("poll_interval", 0.2)
    timeouts = options.pop("timeouts", {})
    worker = Worker(servers, **options)
    for name, func in functions.items():
        worker.register(name, func, timeout=timeouts.get(name))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.work(handle_signals=False)
        except BaseException as exc:  # surfaced by the test below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        # work() must be running before stop() can end it, and connected before
        # tests look at registrations.
        wait_until(lambda: worker.connected or errors)
        yield worker
    finally:
        worker.stop()
        thread.join(10)
        assert not thread.is_alive(), "worker thread did not stop"
    if errors:
        raise errors[0]


def registered(admin_status: list[Any], function: str) -> int:
    """Worker count of ``function`` in a parsed ``status`` listing."""
    for row in admin_status:
        if row.function == function:
            return int(row.workers)
    return 0
