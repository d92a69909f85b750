"""A private CA with a server certificate and client certificates, for a first TLS setup.

Made with the ``cryptography`` package (``pip install 'geartrain[tls]'``). Keys are ECDSA
P-256: small, fast, and accepted by every TLS library the Gearman clients use. The CA is
kept in ``ca.pem`` / ``ca.key``; run again with more client names and it signs them with
the same CA, so certificates issued earlier stay valid.

Files (PEM), all in one directory; keys are readable by their owner only:

    ca.pem, ca.key            the CA: give ca.pem to every client and to the server
    server.pem, server.key    the server's certificate (its names as subjectAltName)
    NAME.pem, NAME.key        one per client; the server sees CN=NAME as the identity
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

#: Days a CA made here is valid: long, since replacing it means reissuing everything.
CA_DAYS = 3650
#: Days a server or client certificate is valid by default (what browsers accept at most
#: for public certificates; private ones follow the same habit of renewing).
LEAF_DAYS = 825


@dataclass
class Issued:
    """The files one run wrote, by role."""

    ca: Path
    server: Path | None = None
    clients: dict[str, Path] = field(default_factory=dict)


def _require_cryptography() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "making certificates needs the cryptography package: pip install 'geartrain[tls]'"
        ) from None


def make_certificates(
    directory: Path,
    *,
    server_names: list[str] | None = None,
    clients: list[str] | None = None,
    days: int = LEAF_DAYS,
) -> Issued:
    """Write a CA (unless one is there), a server certificate and client certificates.

    Args:
        directory: where the files go (made if missing).
        server_names: the server's DNS names and IP addresses; the server certificate is
            (re)written when given, or when there is none yet (then for localhost,
            127.0.0.1 and ::1).
        clients: a client certificate is written for each name (CN=name).
        days: validity of the server and client certificates.

    Returns:
        the paths of the certificates written.

    Raises:
        RuntimeError: the cryptography package is not installed.
        ValueError: a name is empty or not usable in a certificate.
    """
    _require_cryptography()
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _load_or_make_ca(directory)
    issued = Issued(directory / "ca.pem")
    server_file = directory / "server.pem"
    if server_names or not server_file.exists():
        names = server_names or ["localhost", "127.0.0.1", "::1"]
        _issue(directory, "server", names[0], names, ca_cert, ca_key, days, server=True)
        issued.server = server_file
    for name in clients or []:
        _issue(directory, name, name, [name], ca_cert, ca_key, days, server=False)
        issued.clients[name] = directory / f"{name}.pem"
    return issued


def _load_or_make_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    cert_file, key_file = directory / "ca.pem", directory / "ca.key"
    if cert_file.exists() and key_file.exists():
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_file}: not a CA key made by geartrain certs")
        return x509.load_pem_x509_certificate(cert_file.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "geartrain private CA")])
    builder = _builder(name, name, key.public_key(), CA_DAYS)
    builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    builder = builder.add_extension(_key_usage(ca=True), critical=True)
    cert = builder.sign(key, _sha256())
    _write(cert_file, key_file, cert, key)
    return cert, key


def _issue(
    directory: Path,
    stem: str,
    common_name: str,
    names: list[str],
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    days: int,
    *,
    server: bool,
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    if not common_name or "/" in stem or stem.startswith("."):
        raise ValueError(f"unusable certificate name {common_name!r}")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])
    builder = _builder(subject, ca_cert.subject, key.public_key(), days)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
    builder = builder.add_extension(_key_usage(ca=False), critical=True)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    builder = builder.add_extension(
        x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
    )
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
    )
    _write(
        directory / f"{stem}.pem", directory / f"{stem}.key", builder.sign(ca_key, _sha256()), key
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    from cryptography import x509

    # A little in the past: a peer whose clock is a few minutes behind still accepts it.
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(name: str) -> x509.GeneralName:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _sha256() -> hashes.SHA256:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def _write(
    cert_file: Path, key_file: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    from cryptography.hazmat.primitives import serialization

    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    # Created private from the start: never readable by others, even for a moment.
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
