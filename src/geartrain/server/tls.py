"""TLS on the server's listeners: contexts from the settings, handshakes, verified identities.

Theory of operation:

* A TLS listener accepts plain TCP. Each accepted socket first gets a :class:`Handshake`
  protocol, which upgrades it with ``loop.start_tls`` within ``ssl_handshake_timeout``
  seconds. Only then does the Gearman :class:`~geartrain.server.connection.Connection` see
  it, so a peer that never finishes its handshake holds one socket and one timer, never a
  connection's buffers or a place in the scheduler. A failed handshake is logged with its
  peer and reason (``create_server(ssl=...)`` would drop it without a word).
* The context for a handshake is looked up when the handshake starts
  (:attr:`ServerTLS.context`). SIGHUP builds a new one from the same files
  (:meth:`ServerTLS.reload`): new connections get the new certificate, key and CA list;
  established ones keep the session they negotiated. A reload that fails keeps the old
  context and says why.
* Client certificates: ``none`` asks for none (gearmand's behaviour), ``optional`` checks
  one when sent, ``required`` refuses a handshake without a valid one. A verified
  certificate becomes the peer's :class:`Identity`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from .config import NOTICE, Settings

if TYPE_CHECKING:
    from .connection import Connection

logger = logging.getLogger(__name__)

#: ``--ssl-verify-client`` values and the verify mode each sets on the context.
VERIFY_MODES = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}

#: ``--ssl-min-version`` values. TLS 1.0 and 1.1 are not offered: OpenSSL 3 refuses them at
#: its default security level, and they are broken.
MIN_VERSIONS = {
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


class TLSConfigError(ValueError):
    """TLS was asked for but cannot be set up (a missing or unreadable file, a bad option)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a peer's verified client certificate says it is.

    Attributes:
        subject: the certificate's subject, as ``CN=worker-1,O=Example``.
        common_name: the subject's CN, if it has one.
        alt_names: the subjectAltName entries as ``DNS:worker-1``, ``IP:10.0.0.5``,
            ``URI:spiffe://...``, ``email:ops@example.org``.
    """

    subject: str
    common_name: str | None
    alt_names: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The CN and every alternative name's value: what a permission rule can match."""
        values = [name.split(":", 1)[1] for name in self.alt_names]
        return tuple(dict.fromkeys([self.common_name, *values] if self.common_name else values))


#: How Python's ``getpeercert()`` names subjectAltName kinds, and our shorter spelling.
_ALT_KINDS = {"DNS": "DNS", "IP Address": "IP", "URI": "URI", "email": "email"}


def identity_of(peercert: dict[str, Any] | None) -> Identity | None:
    """The identity in a verified peer certificate (``getpeercert()``), None without one."""
    if not peercert:
        return None
    parts = [
        (str(key), str(value))
        for rdn in peercert.get("subject", ())
        for key, value in rdn  # an RDN may hold several attributes
    ]
    short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU"}
    subject = ",".join(f"{short.get(key, key)}={value}" for key, value in parts)
    common_name = next((value for key, value in parts if key == "commonName"), None)
    alt_names = tuple(
        f"{_ALT_KINDS[kind]}:{value}"
        for kind, value in peercert.get("subjectAltName", ())
        if kind in _ALT_KINDS
    )
    return Identity(subject, common_name, alt_names)


def tls_wanted(settings: Settings) -> bool:
    """Whether any listener speaks TLS (``--ssl`` or ``--ssl-port``)."""
    return settings.ssl or settings.ssl_port is not None


def server_context(settings: Settings) -> ssl.SSLContext:
    """A server context from the certificate, key and CA files the settings name.

    Raises:
        TLSConfigError: a file is missing or unreadable, or the options do not fit.
    """
    if not settings.ssl_certificate:
        raise TLSConfigError(
            "TLS needs a certificate: --ssl-certificate FILE (or GEARMAND_SERVER_PEM)"
        )
    verify = VERIFY_MODES[settings.ssl_verify_client]
    if verify != ssl.CERT_NONE and not settings.ssl_ca_file:
        raise TLSConfigError(
            f"--ssl-verify-client {settings.ssl_verify_client} needs --ssl-ca-file "
            "(the CA that signs client certificates)"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MIN_VERSIONS[settings.ssl_min_version]
    try:
        context.load_cert_chain(settings.ssl_certificate, settings.ssl_key or None)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(
            f"cannot load the TLS certificate {settings.ssl_certificate}"
            f"{' and key ' + settings.ssl_key if settings.ssl_key else ''}: {exc}"
        ) from exc
    if settings.ssl_ca_file:
        try:
            context.load_verify_locations(cafile=settings.ssl_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(f"cannot load the CA file {settings.ssl_ca_file}: {exc}") from exc
    context.verify_mode = verify
    return context


class ServerTLS:
    """The server's current TLS context, and the handshakes in progress.

    Args:
        settings: the TLS options (``ssl_*``); the files are read at once.

    Raises:
        TLSConfigError: as :func:`server_context`.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.context = server_context(settings)
        #: Handshakes not finished yet: aborted when the server stops.
        self.pending: dict[Handshake, None] = {}
        #: Handshakes that failed (refused certificate, timeout, garbage), for the metrics.
        self.handshake_failures = 0

    def reload(self) -> bool:
        """Read the certificate, key and CA files again; for new connections only.

        Returns:
            whether the new files were taken (else the old context stays, and why is logged).
        """
        try:
            self.context = server_context(self.settings)
        except TLSConfigError as exc:
            logger.error("TLS files not reloaded, the old ones stay in use: %s", exc)
            return False
        logger.log(NOTICE, "TLS certificate, key and CA file reloaded")
        return True

    def abort_pending(self) -> None:
        for handshake in list(self.pending):
            handshake.abort()


class Handshake(asyncio.Protocol):
    """An accepted TLS socket until its handshake ends; then a Connection takes it over.

    Args:
        tls: the server's TLS state (context, handshake timeout, the pending set).
        make_connection: builds the Connection that gets the socket once TLS is up.
    """

    def __init__(self, tls: ServerTLS, make_connection: Callable[[], Connection]) -> None:
        self.tls = tls
        self.make_connection = make_connection
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.peer = "-"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a TCP socket's transport
        # Nothing may be read before start_tls takes over: the ClientHello is its to read.
        self.transport.pause_reading()
        address = transport.get_extra_info("peername")
        self.peer = f"{address[0]} port {address[1]}" if address else "-"
        self.tls.pending[self] = None
        self.task = asyncio.get_running_loop().create_task(self._handshake())

    def connection_lost(self, exc: Exception | None) -> None:
        self.tls.pending.pop(self, None)

    def data_received(self, data: bytes) -> None:
        """Never called: reading is paused until start_tls owns the socket."""

    def abort(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.transport.abort()

    async def _handshake(self) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        connection = self.make_connection()
        try:
            transport = await loop.start_tls(
                self.transport,
                connection,
                self.tls.context,
                server_side=True,
                ssl_handshake_timeout=self.tls.settings.ssl_handshake_timeout,
            )
        except OSError as exc:  # ssl.SSLError, a reset, the handshake timeout
            logger.log(NOTICE, "TLS handshake with %s failed: %s", self.peer, _reason(exc))
            self.tls.handshake_failures += 1
            self.transport.close()  # not abort: the TLS alert saying why may still go out
            return
        finally:
            self.tls.pending.pop(self, None)
        # start_tls leaves connection_made to its caller. Requests that arrived with the
        # end of the handshake (a TLS 1.3 client writes right after its Finished) have been
        # handled already; their replies wait in the connection's output until this call
        # gives it the transport. A peer that left meanwhile has had connection_lost.
        if transport is not None and not connection.closed:
            connection.connection_made(transport)


def _reason(exc: BaseException) -> str:
    """A short reason for a failed handshake: OpenSSL's own words where there are some."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        verify = getattr(exc, "verify_message", None)
        return f"{exc.reason}{': ' + verify if verify else ''}"
    if isinstance(exc, ConnectionResetError) and not str(exc):
        return "the peer closed the connection during the handshake"
    return str(exc) or type(exc).__name__
