"""Reading a request body as a job's workload, within the server's limits.

The same limits as a Gearman connection: a body over ``max_packet_size`` is refused (413)
before it is read when its length is announced, or as soon as it grows past the limit;
a body of ``spool_threshold`` bytes or more goes to a spool file as it arrives, so the
server never holds more than the threshold of it in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from geartrain.protocol.codec import Payload
from geartrain.protocol.spool import SpoolWriter

from .errors import HttpError

#: Seconds a request body may pause between two reads before it is refused (408): a client
#: trickling a body must not hold a request open forever. A busy network delivers
#: something far more often than this.
BODY_IDLE_TIMEOUT = 60.0


async def read_workload(
    request: web.Request,
    max_size: int,
    spool_at: int,
    spool: Callable[[], SpoolWriter],
    idle_timeout: float | None = None,
) -> Payload:
    """The body of ``request``, in memory or (from ``spool_at`` bytes) in a spool file.

    Raises:
        HttpError: 413 when the body is larger than ``max_size``; 408 when it stalls
            for ``idle_timeout`` seconds (default :data:`BODY_IDLE_TIMEOUT`); 507 when the
            spool file cannot be written.
    """
    idle = BODY_IDLE_TIMEOUT if idle_timeout is None else idle_timeout
    announced = request.content_length
    if announced is not None and announced > max_size:
        raise _too_large(max_size)
    parts: list[bytes] = []
    size = 0
    writer: SpoolWriter | None = None
    try:
        while chunk := await _next_chunk(request, idle):
            size += len(chunk)
            if size > max_size:
                raise _too_large(max_size)
            if writer is None and size >= spool_at:
                writer = _spool(spool, parts)
                parts = []
            if writer is None:
                parts.append(chunk)
            else:
                _write(writer, chunk)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return writer.finish() if writer is not None else b"".join(parts)


async def _next_chunk(request: web.Request, idle_timeout: float) -> bytes:
    try:
        async with asyncio.timeout(idle_timeout):
            return await request.content.readany()
    except TimeoutError:
        raise HttpError(408, "body_timeout", "the request body stalled") from None


def _spool(spool: Callable[[], SpoolWriter], parts: list[bytes]) -> SpoolWriter:
    try:
        writer = spool()
    except OSError as exc:
        raise _spool_failed(exc) from exc
    _write(writer, b"".join(parts))
    return writer


def _write(writer: SpoolWriter, chunk: bytes) -> None:
    try:
        writer.write(chunk)
    except OSError as exc:
        raise _spool_failed(exc) from exc


def _spool_failed(exc: OSError) -> HttpError:
    return HttpError(507, "spool_failed", f"cannot spool the body: {exc.strerror or exc}")


def _too_large(max_size: int) -> HttpError:
    return HttpError(
        413, "payload_too_large", f"the body is larger than the server's limit of {max_size} bytes"
    )
