"""TLS for the client, worker and admin libraries: one place for the options and the context.

Every client class takes ``tls=``: a :class:`TLSOptions` (files and checks, turned into a
context here), a ready :class:`ssl.SSLContext` (anything the ``ssl`` module allows), or None
for plain TCP. The blocking and the asyncio I/O layers both get their context and the
name to check from :class:`ClientTLS`, so they cannot disagree.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: ``min_version`` values. TLS 1.0 and 1.1 are not offered: they are broken, and OpenSSL 3
#: refuses them at its default security level anyway.
MIN_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True, slots=True)
class TLSOptions:
    """How to speak TLS to a job server.

    Attributes:
        ca_file: CA certificates (PEM) the server's certificate must chain to; None = the
            system's trusted CAs.
        certificate: a client certificate (PEM) for servers that ask for one; it may hold
            the key too.
        key: the client certificate's private key (PEM), if not in ``certificate``.
        verify: check the server's certificate and name. Off, TLS still encrypts, but
            anyone in the middle can pose as the server.
        server_name: the name the server's certificate must carry; None = the host
            connected to.
        min_version: the oldest TLS version spoken, ``TLSv1.2`` or ``TLSv1.3``.
    """

    ca_file: str | None = None
    certificate: str | None = None
    key: str | None = None
    verify: bool = True
    server_name: str | None = None
    min_version: str = "TLSv1.2"

    @classmethod
    def from_environment(cls, **overrides: object) -> TLSOptions:
        """Options from libgearman's variables, for programs that mimic ``gearman -S``.

        ``GEARMAND_CA_CERTIFICATE`` names the CA file, ``GEARMAN_CLIENT_PEM`` and
        ``GEARMAN_CLIENT_KEY`` the client certificate and key; ``overrides`` win.
        """
        values: dict[str, object] = {
            "ca_file": os.environ.get("GEARMAND_CA_CERTIFICATE") or None,
            "certificate": os.environ.get("GEARMAN_CLIENT_PEM") or None,
            "key": os.environ.get("GEARMAN_CLIENT_KEY") or None,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def context(self) -> ssl.SSLContext:
        """A client context for these options.

        Raises:
            ValueError: an unknown ``min_version``, or a key without a certificate.
            OSError: a file cannot be read (ssl.SSLError: it is not valid PEM).
        """
        if self.min_version not in MIN_VERSIONS:
            raise ValueError(f"TLS min_version must be one of {list(MIN_VERSIONS)}")
        if self.key and not self.certificate:
            raise ValueError("a TLS key was given without its certificate")
        context = ssl.create_default_context(cafile=self.ca_file)
        context.minimum_version = MIN_VERSIONS[self.min_version]
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.certificate:
            context.load_cert_chain(self.certificate, self.key)
        return context


#: What a client's ``tls=`` argument may be.
TLSArgument = TLSOptions | ssl.SSLContext | None


class ClientTLS:
    """A client's TLS context, made once, and the name each server is checked against.

    Args:
        tls: options or a ready context.
    """

    __slots__ = ("context", "server_name")

    def __init__(self, tls: TLSOptions | ssl.SSLContext) -> None:
        if isinstance(tls, ssl.SSLContext):
            self.context = tls
            self.server_name: str | None = None
        else:
            self.context = tls.context()
            self.server_name = tls.server_name

    @classmethod
    def of(cls, tls: TLSArgument) -> ClientTLS | None:
        """The TLS state for a ``tls=`` argument; None for plain TCP."""
        return None if tls is None else cls(tls)

    def hostname(self, host: str) -> str:
        """The name to send (SNI) and check for a server at ``host``."""
        return self.server_name or host

    def wrap(self, sock: socket.socket, host: str) -> ssl.SSLSocket:
        """Run the handshake on a connected socket, within the socket's timeout.

        Raises:
            ssl.SSLError: the handshake failed (e.g. the server's certificate is not
                trusted); the socket is closed.
            OSError: the connection failed or timed out; the socket is closed.
        """
        try:
            return self.context.wrap_socket(sock, server_hostname=self.hostname(host))
        except BaseException:
            sock.close()
            raise


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
            sock = tls.wrap(sock, address[0])
        except ssl.SSLError as exc:
            logger.warning("TLS handshake with %s:%d failed: %s", *address, exc)
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
