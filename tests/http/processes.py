"""Servers with the HTTP listener as child processes, and plain HTTP from a test thread."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support import ServerProcess, free_port, start_geartrain, wait_for_port


@contextmanager
def geartrain_with_http(*args: str) -> Iterator[tuple[ServerProcess, int]]:
    """``geartrain serve --http-port PORT ARGS`` on 127.0.0.1; yields it and PORT."""
    http_port = free_port()
    server = start_geartrain(args=["--http-port", str(http_port), *args])
    try:
        wait_for_port("127.0.0.1", http_port, proc=server.proc)
        yield server, http_port
    finally:
        server.stop()


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request with the standard library: status, headers and body, 4xx/5xx included."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def http_json(method: str, url: str) -> tuple[int, Any]:
    status, _, body = http(method, url)
    return status, json.loads(body)
