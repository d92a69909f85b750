"""TLS for the client, worker and admin libraries: one place for the options and the context.

Every client class takes ``tls=``: a :class:`TLSOptions` (files and checks, turned into a
context here), a ready :class:`ssl.SSLContext` (anything the ``ssl`` module allows), or None
for plain TCP. The blocking and the asyncio I/O layers both get their context and the
name to check from :class:`ClientTLS`, so they cannot disagree; they open connections
with :mod:`geartrain.client.transport`. Nothing here touches a socket.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

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
