"""Server addresses: parsing, and choosing a server for a job.

Shared by the client, the worker and the admin library. Nothing here does I/O.

A client with several servers sends each job to the server picked by hashing
its unique id, so every client configured with the same list sends the same
unique to the same server, where it coalesces. When that server is down the
next one in the list (wrapping around) takes the job; that order is the same
for every client too.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Sequence

from geartrain.protocol import DEFAULT_PORT

Address = tuple[str, int]

#: What a caller may pass where servers are expected: ``"host:port"``, a
#: comma-separated list of those, an ``(host, port)`` pair, or a sequence of either.
ServerSpec = str | Address | Sequence[str | Address]


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> Address:
    """Parse ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``.

    Raises:
        ValueError: the port is not a number between 1 and 65535.
    """
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unterminated IPv6 address: {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {text!r}")
    return (host or "127.0.0.1", port)


def parse_servers(spec: ServerSpec | None = None) -> list[Address]:
    """Normalise a server specification into a list of ``(host, port)``.

    ``None`` means the environment: ``GEARMAN_SERVERS`` (comma-separated, as
    libgearman reads it), then ``GEARMAN_SERVER``, then ``127.0.0.1:4730``.
    Duplicates are dropped, order kept.
    """
    if spec is None:
        spec = os.environ.get("GEARMAN_SERVERS") or os.environ.get("GEARMAN_SERVER") or ""
        if not spec.strip():
            return [("127.0.0.1", DEFAULT_PORT)]
    items: Iterable[str | Address]
    if isinstance(spec, str):
        items = [part for part in spec.split(",") if part.strip()]
    elif len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], int):
        items = [(spec[0], spec[1])]
    else:
        items = spec  # type: ignore[assignment]
    result: list[Address] = []
    for item in items:
        address = parse_address(item) if isinstance(item, str) else (item[0], int(item[1]))
        if address not in result:
            result.append(address)
    if not result:
        raise ValueError("no job server given")
    return result


def server_order(key: bytes, count: int, fallback: int = 0) -> list[int]:
    """Indexes of ``count`` servers in the order a job with this key tries them.

    Args:
        key: the job's unique id; an empty key cannot be hashed meaningfully,
            so ``fallback`` (a rotating counter) picks the first server instead.
        count: how many servers there are.
        fallback: start index for jobs without a unique id.

    Returns:
        Every index once, starting at the chosen server and wrapping around.
    """
    # CRC-32 is stable across processes and Python versions (unlike hash()).
    start = (zlib.crc32(key) if key else fallback) % count
    return [(start + i) % count for i in range(count)]


def format_address(address: Address) -> str:
    """``host:port``, with brackets around IPv6 hosts."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def servers_from_options(host: str | None, port: int | None) -> list[Address]:
    """Servers from ``gearman``-style ``-h HOST -p PORT`` options, else the environment.

    ``host`` may itself be a comma-separated list; ``port`` is the default port
    for entries without one.
    """
    if host is None and port is None:
        return parse_servers(None)
    default_port = port or DEFAULT_PORT
    hosts = (host or "127.0.0.1").split(",")
    return parse_servers([parse_address(h, default_port) for h in hosts if h.strip()])
