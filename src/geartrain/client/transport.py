"""Connections to job servers, plain or TLS, for the blocking and asyncio I/O layers.

Clients, workers and admin clients all connect through here, so TCP_NODELAY, the TLS
handshake and its failures are handled once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from geartrain.tls import ClientTLS

logger = logging.getLogger(__name__)


def connect(address: tuple[str, int], tls: ClientTLS | None, timeout: float) -> socket.socket:
    """A TCP connection to ``address``, with the TLS handshake done when ``tls`` is given.

    The socket is left in blocking mode; connecting and the handshake share ``timeout``.

    Raises:
        OSError: connecting failed or timed out; ssl.SSLError: the handshake failed
            (logged, since it usually means a certificate or CA mismatch to fix).
    """
    sock = socket.create_connection(address, timeout=timeout)
    if tls is not None:
        try:
            sock = tls.context.wrap_socket(sock, server_hostname=tls.hostname(address[0]))
        except ssl.SSLError as exc:
            sock.close()
            logger.warning("TLS handshake with %s:%d failed: %s", *address, exc)
            raise
        except BaseException:
            sock.close()
            raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)
    return sock


async def open_stream(
    address: tuple[str, int], tls: ClientTLS | None, limit: int = 2**16
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` to ``address``, over TLS when ``tls`` is given.

    Raises:
        OSError: as :func:`connect` (a failed handshake is logged).
    """
    if tls is None:
        reader, writer = await asyncio.open_connection(*address, limit=limit)
    else:
        try:
            reader, writer = await asyncio.open_connection(
                *address, limit=limit, ssl=tls.context, server_hostname=tls.hostname(address[0])
            )
        except ssl.SSLError as exc:
            logger.warning("TLS handshake with %s:%d failed: %s", *address, exc)
            raise
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


def receive(sock: socket.socket, size: int) -> bytes | None:
    """Read what a socket the selector found readable has, without blocking under TLS.

    A readable TLS socket may hold no application data (a TLS 1.3 session ticket, half a
    record), and data already decrypted is invisible to select: a blocking ``recv`` could
    wait for the server's next message, and leftovers could wait forever. So TLS sockets
    are read without blocking, and everything decrypted is taken at once.

    Returns:
        the bytes read (``b""``: the peer closed), or None: nothing to deliver yet.
    """
    if not isinstance(sock, ssl.SSLSocket):
        return sock.recv(size)
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        data = sock.recv(size)
        while data and sock.pending():
            data += sock.recv(sock.pending())
        return data
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return None
    finally:
        sock.settimeout(timeout)
