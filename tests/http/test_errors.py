"""The error middleware: JSON for every refusal, a logged 500 only for a bug."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from geartrain.server.http.errors import HttpError, json_errors


async def answer(exc: BaseException) -> web.Response:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise exc

    response = await json_errors(make_mocked_request("GET", "/x"), handler)
    assert isinstance(response, web.Response) and response.text is not None
    return response


async def test_an_http_error_keeps_its_status_code_and_headers() -> None:
    response = await answer(HttpError(409, "job_running", "busy", {"X-Gearman-Job-Handle": "H"}))
    assert response.status == 409 and response.headers["X-Gearman-Job-Handle"] == "H"
    assert json.loads(response.text or "") == {"error": {"code": "job_running", "message": "busy"}}


async def test_aiohttps_refusals_become_json_with_their_allow_header() -> None:
    response = await answer(web.HTTPMethodNotAllowed("PATCH", ["GET", "DELETE"]))
    assert response.status == 405 and response.headers["Allow"] == "DELETE,GET"
    assert json.loads(response.text or "")["error"]["code"] == "method_not_allowed"


async def test_a_bug_is_a_logged_500_without_its_details(caplog: pytest.LogCaptureFixture) -> None:
    response = await answer(RuntimeError("secret internals"))
    assert response.status == 500
    assert "secret" not in (response.text or "")
    assert json.loads(response.text or "")["error"]["code"] == "internal_error"
    assert "secret internals" in caplog.text  # the traceback is in the log


async def test_a_redirect_is_not_an_error() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/elsewhere")

    with pytest.raises(web.HTTPFound):
        await json_errors(make_mocked_request("GET", "/x"), handler)
