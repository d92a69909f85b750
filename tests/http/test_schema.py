"""The served OpenAPI document, and schemathesis holding the server to it.

Schemathesis generates requests for every operation of ``/openapi.json`` (valid ones and
deliberately invalid ones) and sends them to a running server with a worker attached;
each response must not be a 500 and must conform to the document: a documented status,
content type, headers and body schema.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis

from geartrain import __version__
from geartrain.server.app import Server
from geartrain.server.http.openapi import openapi_document
from geartrain.worker import AsyncWorker

from .conftest import Gate, base_url, http_server, register_functions
from .processes import http_json

schema = schemathesis.openapi.from_dict(openapi_document(__version__))


class ServerThread:
    """A server (HTTP on, jobs capped at a fraction of a second) and our worker, run on an
    event loop of their own so that schemathesis can send blocking requests to them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.url = ""
        self._stop: asyncio.Event | None = None
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._main)

    def _main(self) -> None:
        try:
            self.loop.run_until_complete(self._run())
        except BaseException as exc:
            self.failure = exc
        finally:
            self.started.set()  # also when it failed to start: __enter__ says why

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        gate = Gate()
        gate.open.set()  # the wait function returns at once here
        async with http_server(http_job_timeout=0.2) as server:
            worker = AsyncWorker([server.addresses[0]], concurrency=4, poll_interval=0.2)
            register_functions(worker, gate)
            working = asyncio.create_task(worker.work(handle_signals=False))
            self.url = base_url(server)
            self.server: Server = server
            self.started.set()
            await self._stop.wait()
            worker.stop()
            await asyncio.wait_for(working, 10)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self.started.wait(30):
            raise TimeoutError("the server thread did not start")
        if self.failure is not None:
            self._thread.join(30)
            self.loop.close()
            raise RuntimeError("the server thread failed") from self.failure
        return self

    def __exit__(self, *exc: object) -> None:
        stop = self._stop
        assert stop is not None
        self.loop.call_soon_threadsafe(stop.set)
        self._thread.join(30)
        self.loop.close()


@pytest.fixture(scope="module")
def running() -> Iterator[ServerThread]:
    with ServerThread() as thread:
        yield thread


def test_the_served_document_is_the_one_tested(running: ServerThread) -> None:
    status, served = http_json("GET", f"{running.url}/openapi.json")
    assert status == 200 and served == openapi_document(__version__)


@schema.parametrize()
@hypothesis.settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_every_generated_request_conforms(
    case: schemathesis.Case[Any], running: ServerThread
) -> None:
    hypothesis.assume(not _positive_with_unprintable_names(case))
    # 502, 503 and 504 are a gateway's answers (the job failed, the queue is full, the job
    # took too long), documented per operation; only 500, a bug, is never right.
    case.call_and_validate(
        base_url=running.url,
        timeout=20,
        excluded_checks=[schemathesis.checks.not_a_server_error],
        additional_checks=[no_internal_error],
    )


#: The parameters the document holds to printable ASCII (pattern ``^[ -~]*$``).
_NAMES = ("function", "unique", "X-Gearman-Unique")


def _positive_with_unprintable_names(case: schemathesis.Case[Any]) -> bool:
    """A case meant to be valid whose function name or unique is not printable ASCII.

    The document's pattern is ECMA-262, where ``$`` is the end of the text; the generator
    reads it as a Python regex, where ``$`` also matches before a final newline, and its
    positive cases may carry values of its own. Such cases are not valid by the document,
    and the server rightly refuses them, so they are discarded rather than counted as
    valid requests rejected. Negative cases keep them: there a refusal is what is checked.
    """
    if case.meta is None or case.meta.generation.mode != "positive":
        return False
    given: dict[str, Any] = {
        **(case.path_parameters or {}),
        **(case.query or {}),
        **dict((case.headers or {}).items()),
    }
    return any(
        isinstance(value, str) and not (value.isascii() and value.isprintable())
        for key, value in given.items()
        if key in _NAMES
    )


def no_internal_error(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> None:
    assert response.status_code != 500, response.text
