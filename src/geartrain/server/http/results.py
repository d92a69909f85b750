"""Turning what a foreground job's peer receives into the HTTP response.

Theory of operation
-------------------
The status line must go out before the body, but a job's outcome is known only at its
end, and a job may stream WORK_DATA long before that. So:

* A job that ends before sending any WORK_DATA gets a complete answer: 200 with the
  WORK_COMPLETE data as body, or the failure (an error status in the gateway's form,
  ``X-Gearman-Command: WORK_FAIL`` in gearmand's).
* At the first WORK_DATA the headers go out (200, chunked transfer encoding,
  ``X-Gearman-Command: WORK_DATA``) and every WORK_DATA and then the WORK_COMPLETE data
  follow as chunks, in order. A failure or timeout after that point cannot change the
  status any more: the connection is closed without the final empty chunk, which every
  HTTP client reports as an incomplete response.

WORK_STATUS and WORK_WARNING are not part of the response (status can be polled).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from geartrain.protocol.codec import Payload
from geartrain.protocol.constants import PacketType as P
from geartrain.protocol.spool import Spooled

from .errors import HttpError, error_response
from .peer import HttpPeer

logger = logging.getLogger(__name__)

_WORK_DATA = int(P.WORK_DATA)
_WORK_COMPLETE = int(P.WORK_COMPLETE)
_WORK_FAIL = int(P.WORK_FAIL)
_WORK_EXCEPTION = int(P.WORK_EXCEPTION)
_ERROR = int(P.ERROR)

BINARY = "application/octet-stream"
HANDLE_HEADER = "X-Gearman-Job-Handle"
COMMAND_HEADER = "X-Gearman-Command"


def result_headers(handle: bytes, command: str = "") -> dict[str, str]:
    """The headers naming a job (and the packet that ended it, when there was one)."""
    headers = {HANDLE_HEADER: handle.decode("ascii", "replace")}
    if command:
        headers[COMMAND_HEADER] = command
    return headers


async def respond_with_result(
    request: web.Request,
    peer: HttpPeer,
    handle: bytes,
    wait: float | None,
    gearmand_form: bool,
) -> web.StreamResponse:
    """Wait up to ``wait`` seconds (None: no limit) for the job ``peer`` waits on, and
    answer with its outcome.

    Raises:
        HttpError: 504 on timeout, 502 when the job failed (gateway form only).
    """
    stream: web.StreamResponse | None = None
    try:
        async with asyncio.timeout(wait):
            while (reply := await peer.next_reply()) is not None:
                kind = reply.type
                if kind == _WORK_DATA:
                    if stream is None:
                        stream = await _start_stream(request, handle)
                    await write_payload(stream, reply.data)
                elif kind == _WORK_COMPLETE:
                    if stream is None:
                        return await _complete(request, handle, reply.data)
                    await write_payload(stream, reply.data)
                    await stream.write_eof()
                    return stream
                elif kind in (_WORK_FAIL, _WORK_EXCEPTION, _ERROR):
                    if stream is None:
                        return _failed(handle, kind, reply.data, gearmand_form)
                    return _cut_short(request, stream, handle, "failed")
            return _left(request, peer, stream, handle)
    except TimeoutError:
        if stream is None:
            raise HttpError(
                504, "timeout", "the job did not finish in time", result_headers(handle)
            ) from None
        return _cut_short(request, stream, handle, "timed out")


def _left(
    request: web.Request, peer: HttpPeer, stream: web.StreamResponse | None, handle: bytes
) -> web.StreamResponse:
    """The answer when the wait ended without a result: stopping, or too much data."""
    if peer.stopping:
        if stream is None:
            raise HttpError(503, "stopping", "the server is stopping")
        return _cut_short(request, stream, handle, "was left: the server is stopping")
    # The client read the streamed data too slowly: it was dropped, as a Gearman client
    # that does not read its replies is.
    if stream is None:
        raise HttpError(502, "too_much_data", "the job sent more than could be held")
    return _cut_short(request, stream, handle, "outgrew the client's reading")


async def _start_stream(request: web.Request, handle: bytes) -> web.StreamResponse:
    stream = web.StreamResponse(status=200, headers=result_headers(handle, "WORK_DATA"))
    stream.content_type = BINARY
    stream.enable_chunked_encoding()
    await stream.prepare(request)
    return stream


async def _complete(request: web.Request, handle: bytes, data: Payload) -> web.StreamResponse:
    headers = result_headers(handle, "WORK_COMPLETE")
    if not isinstance(data, Spooled):
        return web.Response(body=bytes(data), headers=headers, content_type=BINARY)
    response = web.StreamResponse(status=200, headers=headers)
    response.content_type = BINARY
    response.content_length = len(data)
    await response.prepare(request)
    await write_payload(response, data)
    await response.write_eof()
    return response


async def write_payload(response: web.StreamResponse, data: Payload) -> None:
    """Write ``data`` to a prepared response; a spooled payload a chunk at a time."""
    if isinstance(data, Spooled):
        for chunk in data.chunks():
            await response.write(chunk)
    elif data:
        await response.write(bytes(data))


def _failed(handle: bytes, kind: int, data: Payload, gearmand_form: bool) -> web.StreamResponse:
    if kind == _ERROR:
        # The persistent queue refused a job it was to store (background only, so rare).
        return error_response(503, "queue_error", _text(data))
    if gearmand_form:
        # gearmand answers a failed job with 200 and the command header, empty body.
        return web.Response(status=200, headers=result_headers(handle, "WORK_FAIL"))
    headers = result_headers(handle, "WORK_FAIL" if kind == _WORK_FAIL else "WORK_EXCEPTION")
    if kind == _WORK_EXCEPTION:
        return error_response(502, "job_exception", _text(data), headers)
    return error_response(502, "job_failed", "the job failed", headers)


def _cut_short(
    request: web.Request, stream: web.StreamResponse, handle: bytes, why: str
) -> web.StreamResponse:
    logger.info("HTTP response for job %r cut short: the job %s", handle, why)
    # Closing without the last chunk tells the client the response is incomplete.
    if request.transport is not None:
        request.transport.close()
    return stream


def _text(data: Payload) -> str:
    raw = data.to_bytes() if isinstance(data, Spooled) else bytes(data)
    return raw.decode("utf-8", "replace")
