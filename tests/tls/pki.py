"""Certificates for the TLS tests, made with trustme in a test's temporary directory."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import trustme

from geartrain.tls import TLSOptions


@dataclass
class ClientFiles:
    """A client certificate and its key, as files."""

    certificate: Path
    key: Path


@dataclass
class PKI:
    """A private CA, a server certificate for 127.0.0.1 and localhost, and client certificates."""

    directory: Path
    ca: trustme.CA
    ca_file: Path
    server_certificate: Path
    server_key: Path

    def client(
        self,
        name: str,
        *,
        ca: trustme.CA | None = None,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> ClientFiles:
        """A client certificate with CN ``name`` (and that DNS name), from our CA or another."""
        issued = (ca or self.ca).issue_cert(
            name, common_name=name, not_before=not_before, not_after=not_after
        )
        files = ClientFiles(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        issued.cert_chain_pems[0].write_to_path(str(files.certificate))
        issued.private_key_pem.write_to_path(str(files.key))
        return files

    def options(self, client: ClientFiles | None = None, **overrides: object) -> TLSOptions:
        """Client-side TLS options trusting our CA, with a client certificate if given."""
        values: dict[str, object] = {"ca_file": str(self.ca_file)}
        if client is not None:
            values.update(certificate=str(client.certificate), key=str(client.key))
        values.update(overrides)
        return TLSOptions(**values)  # type: ignore[arg-type]

    def server_args(self) -> list[str]:
        """``geartrain serve`` options naming the server's files and the CA."""
        return [
            "--ssl-certificate",
            str(self.server_certificate),
            "--ssl-key",
            str(self.server_key),
            "--ssl-ca-file",
            str(self.ca_file),
        ]


def make_pki(directory: Path, ca: trustme.CA | None = None) -> PKI:
    """Write a CA and a server certificate into ``directory``."""
    ca = ca or trustme.CA(organization_name="geartrain tests")
    server = ca.issue_cert("localhost", "127.0.0.1", common_name="localhost")
    pki = PKI(
        directory,
        ca,
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
    )
    ca.cert_pem.write_to_path(str(pki.ca_file))
    server.cert_chain_pems[0].write_to_path(str(pki.server_certificate))
    server.private_key_pem.write_to_path(str(pki.server_key))
    return pki
