"""The HTTP/JSON gateway: submit jobs, ask their status, cancel them.

Two spellings of a submission share one path through the scheduler:

* the gateway's own, ``POST /v1/functions/{function}/jobs`` with query parameters
  ``background``, ``priority``, ``unique`` and ``timeout``;
* gearmand's ``-r http`` form, ``POST /{function}`` (or GET, with an empty workload) with
  ``X-Gearman-Unique`` (default ``-``: coalesce identical bodies, as gearmand),
  ``X-Gearman-Background: true`` and ``X-Gearman-Priority: high|low``.

Both take the foreground timeout from ``timeout`` and the ``X-Gearman-Timeout`` header
(seconds, the shorter wins), capped by the server's ``http_job_timeout``; with none of
them, a request waits as long as its client does. A foreground job is submitted for an
:class:`~.peer.HttpPeer` and answered by :mod:`.results`; whatever way the request ends,
the peer is detached from the scheduler afterwards.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from geartrain.protocol.codec import Payload
from geartrain.protocol.constants import MAX_UNIQUE_SIZE, ErrorCode, Priority

from ..jobs import Job, JobState
from ..status import text as _text
from ..writes import WriteGroup
from .access import require
from .body import read_workload
from .errors import HttpError
from .peer import HttpPeer
from .results import respond_with_result, result_headers

if TYPE_CHECKING:
    from ..app import Server

#: Longest function name accepted (gearmand's GEARMAN_FUNCTION_MAX_SIZE).
MAX_FUNCTION_SIZE = 512
#: Largest timeout accepted, in seconds (a day); longer waits belong to background jobs.
MAX_TIMEOUT = 86400.0
#: Undelivered reply bytes per request: as a Gearman connection's unread-output limit.
_MAX_BUFFERED = 64 * 1024 * 1024

PRIORITIES = {"high": int(Priority.HIGH), "normal": int(Priority.NORMAL), "low": int(Priority.LOW)}
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
_CANCELLABLE = (JobState.STORING, JobState.SCHEDULED, JobState.QUEUED)


@dataclass(frozen=True, slots=True)
class Submission:
    """What one request asks for."""

    function: bytes
    unique: bytes
    priority: int
    background: bool
    timeout: float | None


class Gateway:
    """The gateway's request handlers, bound to one server."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.scheduler = server.scheduler
        #: Peers of the foreground requests waiting right now.
        self.waiting: set[HttpPeer] = set()

    def stop(self) -> None:
        """End every foreground request's wait (503, or a cut-short stream)."""
        for peer in list(self.waiting):
            peer.stop()

    # -- submission ---------------------------------------------------------------------

    async def submit(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/functions/{function}/jobs``."""
        query = request.query
        submission = Submission(
            function=function_name(request.match_info["function"]),
            unique=unique_value(query.get("unique", "")),
            priority=_choice("priority", query.get("priority", "normal"), PRIORITIES),
            background=bool(_choice("background", query.get("background", "false"), _BOOLEANS)),
            timeout=_shorter(_timeout(query.get("timeout")), _header_timeout(request)),
        )
        return await self._run(request, submission, gearmand_form=False)

    async def submit_gearmand_form(self, request: web.Request) -> web.StreamResponse:
        """gearmand's ``POST /FUNCTION`` (GET: empty workload)."""
        name = request.match_info["function"].lstrip("/")
        if not name:
            raise HttpError(404, "not_found", "no function named in the path")
        headers = request.headers
        submission = Submission(
            function=function_name(name),
            unique=unique_value(headers.get("X-Gearman-Unique", "-")),
            priority=PRIORITIES.get(headers.get("X-Gearman-Priority", "").lower(), 1),
            background=headers.get("X-Gearman-Background", "").lower() == "true",
            timeout=_header_timeout(request),
        )
        return await self._run(request, submission, gearmand_form=True)

    async def _run(
        self, request: web.Request, submission: Submission, gearmand_form: bool
    ) -> web.StreamResponse:
        settings = self.server.settings
        self._require(request, "submit", submission.function)  # before reading the body
        workload: Payload = b""
        if request.method != "GET":
            workload = await read_workload(
                request,
                settings.max_packet_size,
                settings.spool_threshold,
                self.server.spool_writer,
            )
        if submission.background:
            return await self._background(submission, workload, gearmand_form)
        wait = _shorter(submission.timeout, settings.http_job_timeout or None)
        peer = HttpPeer(self.scheduler, request.remote or "-", self._max_buffered())
        # The gateway's own form reports exceptions; gearmand's sees them as WORK_FAIL.
        peer.exceptions = not gearmand_form
        self.waiting.add(peer)
        try:
            job = self._submit(peer, submission, workload)
            return await respond_with_result(request, peer, job.handle, wait, gearmand_form)
        finally:
            self.waiting.discard(peer)
            peer.detach()

    async def _background(
        self, submission: Submission, workload: Payload, gearmand_form: bool
    ) -> web.StreamResponse:
        job = self._submit(None, submission, workload)
        if job.write is not None:
            await _settled(job.write)
        headers = result_headers(job.handle, "JOB_CREATED")
        if gearmand_form:
            # gearmand answers with an empty body; say what kind it is, as a result would.
            return web.Response(
                status=200, headers=headers, body=b"", content_type="application/octet-stream"
            )
        return web.json_response({"handle": _text(job.handle)}, status=202, headers=headers)

    def _submit(self, peer: HttpPeer | None, submission: Submission, workload: Payload) -> Job:
        s = submission
        # A Gearman connection sets the scheduler's clock once per read; do the same,
        # so that this job's queue wait starts now.
        self.scheduler.now_ns = time.monotonic_ns()
        result = self.scheduler.submit(
            peer, s.function, s.unique, workload, s.priority, s.background
        )
        if isinstance(result, tuple):
            code, text = result
            status = 503 if code == ErrorCode.QUEUE_ERROR else 400
            raise HttpError(status, code.decode().lower(), text.decode("utf-8", "replace"))
        return result

    def _require(self, request: web.Request, kind: str, function: bytes) -> None:
        require(self.server, request, kind, function)

    def _max_buffered(self) -> int:
        return min(4 * self.server.settings.max_packet_size, _MAX_BUFFERED)

    # -- status and cancel ----------------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        """``GET /v1/jobs/{handle}``: as GET_STATUS."""
        handle = request.match_info["handle"].encode("utf-8", "surrogateescape")
        job = self.scheduler.jobs.get(handle)
        if job is not None:
            self._require(request, "status", job.function.name)
        return web.json_response({"handle": _text(handle), **_status_fields(job)})

    async def status_by_unique(self, request: web.Request) -> web.Response:
        """``GET /v1/functions/{function}/uniques/{unique}``: as GET_STATUS_UNIQUE."""
        name = function_name(request.match_info["function"])
        unique = unique_value(request.match_info["unique"])
        self._require(request, "status", name)
        f = self.scheduler.functions.get(name)
        job = f.uniques.get(unique) if f is not None and unique else None
        body = {
            "function": _text(name),
            "unique": _text(unique),
            "handle": None if job is None else _text(job.handle),
            **_status_fields(job),
            "waiting": 0 if job is None else len(job.clients),
        }
        return web.json_response(body)

    async def cancel(self, request: web.Request) -> web.Response:
        """``DELETE /v1/jobs/{handle}``: the admin ``cancel job``, for jobs not yet running."""
        handle = request.match_info["handle"].encode("utf-8", "surrogateescape")
        self._require(request, "cancel", b"")
        job = self.scheduler.jobs.get(handle)
        if job is None:
            raise HttpError(404, "unknown_job", "no such job (it may have ended)")
        if job.state not in _CANCELLABLE:
            raise HttpError(409, "job_running", "the job is running; only queued jobs cancel")
        self.scheduler.cancel(handle)
        return web.json_response({"handle": _text(handle), "cancelled": True})


# -- parameters ----------------------------------------------------------------------------


def function_name(text: str) -> bytes:
    """A function name from the request: printable ASCII, as the OpenAPI document says.

    Over HTTP names and uniques are text in a URL, while Gearman counts bytes; holding
    them to printable ASCII makes the two counts the same, so the document can state the
    limit exactly. Any other name is reachable over the Gearman protocol.
    """
    if not text or not _printable_ascii(text) or len(text) > MAX_FUNCTION_SIZE:
        raise HttpError(
            400,
            "bad_function",
            f"a function name is 1 to {MAX_FUNCTION_SIZE} printable ASCII characters",
        )
    return text.encode("ascii")


def unique_value(text: str) -> bytes:
    """A unique from the request: at most MAX_UNIQUE_SIZE printable ASCII characters."""
    if not _printable_ascii(text) or len(text) > MAX_UNIQUE_SIZE:
        raise HttpError(
            400, "bad_unique", f"a unique is at most {MAX_UNIQUE_SIZE} printable ASCII characters"
        )
    return text.encode("ascii")


def _printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable()


def _choice(name: str, text: str, choices: dict[str, int] | dict[str, bool]) -> int:
    try:
        return int(choices[text.lower()])
    except KeyError:
        raise HttpError(400, f"bad_{name}", f"{name} is one of {', '.join(choices)}") from None


def _timeout(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_TIMEOUT:  # also refuses nan
        raise HttpError(400, "bad_timeout", f"timeout is seconds, above 0, at most {MAX_TIMEOUT:g}")
    return value


def _header_timeout(request: web.Request) -> float | None:
    return _timeout(request.headers.get("X-Gearman-Timeout"))


def _shorter(first: float | None, second: float | None) -> float | None:
    """The shorter of two time limits, None meaning none."""
    if first is None or second is None:
        return second if first is None else first
    return min(first, second)


async def _settled(write: WriteGroup) -> None:
    """Wait for a background job's store write; raise 503 if the store refused it."""
    if not write.settled:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def settled() -> None:
            if not done.done():  # the request may have been cancelled meanwhile
                done.set_result(None)

        write.when_settled(settled)
        await done
    if write.refused is not None:
        raise HttpError(503, "queue_error", write.refused.decode("utf-8", "replace"))


def _status_fields(job: Job | None) -> dict[str, object]:
    if job is None:
        return {"known": False, "running": False, "numerator": 0, "denominator": 0}
    return {
        "known": True,
        "running": job.state is JobState.RUNNING,
        "numerator": job.numerator,
        "denominator": job.denominator,
    }
