"""The permissions file's rules: which identities each grant names, and what it gives them.

A grant names one kind of identity (a certificate's CN, one of its DNS, email or URI
subjectAltNames, or, for peers without a certificate, source addresses in CIDR form) and the
rights it adds: function globs to submit to and to work on, and an admin level. Everything
here checks the file and says precisely what is wrong with it; what a peer may then do is
:mod:`.permissions`' business.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .tls import Identity

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Admin levels, each including the one before.
ADMIN_NONE: Final = 0
ADMIN_READ: Final = 1
ADMIN_WRITE: Final = 2
ADMIN_LEVELS: Final = {"none": ADMIN_NONE, "read": ADMIN_READ, "write": ADMIN_WRITE}

#: Identity keys of a grant: the certificate names each matches.
_CERTIFICATE_KEYS: Final = {"cn": None, "dns": "DNS", "email": "email", "uri": "URI"}
_IDENTITY_KEYS: Final = (*_CERTIFICATE_KEYS, "address")
_RIGHT_KEYS: Final = ("submit", "work", "admin")


class PermissionsError(ValueError):
    """The permissions file cannot be read or says something that makes no sense."""


@dataclass(frozen=True, slots=True)
class Grant:
    """Rights given to the identities one ``[[grant]]`` table (or ``[default]``) names.

    Attributes:
        kind: ``cn``, ``dns``, ``email``, ``uri`` or ``address``; ``default`` for everyone.
        patterns: glob patterns on certificate names (``kind`` other than ``address``).
        networks: the source networks (``kind == "address"``).
        submit: glob patterns of the functions it may submit jobs to.
        work: glob patterns of the functions it may work on.
        admin: :data:`ADMIN_NONE`, :data:`ADMIN_READ` or :data:`ADMIN_WRITE`.
    """

    kind: str
    patterns: tuple[str, ...]
    networks: tuple[Network, ...]
    submit: tuple[str, ...]
    work: tuple[str, ...]
    admin: int

    def matches(self, identity: Identity | None, address: Address | None) -> bool:
        """Whether a peer with this certificate identity (or, lacking one, address) matches."""
        if self.kind == "default":
            return True
        if self.kind == "address":
            # A peer with a certificate is known by it, never by where it comes from.
            return identity is None and address is not None and _in_any(address, self.networks)
        if identity is None:
            return False
        return any(
            fnmatch.fnmatchcase(name, pattern)
            for name in _certificate_names(identity, self.kind)
            for pattern in self.patterns
        )


def _in_any(address: Address, networks: Iterable[Network]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def _certificate_names(identity: Identity, kind: str) -> list[str]:
    if kind == "cn":
        return [identity.common_name] if identity.common_name else []
    prefix = f"{_CERTIFICATE_KEYS[kind]}:"
    return [name.removeprefix(prefix) for name in identity.alt_names if name.startswith(prefix)]


def peer_address(ip: str) -> Address | None:
    """A peer's address as address rules compare it; None when it is not an IP address.

    An IPv4 client of a dual-stack listener shows as ``::ffff:10.0.0.5``: it is matched
    as the IPv4 address it is.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def read_grants(path: str | Path) -> tuple[Grant, list[Grant]]:
    """The ``[default]`` grant and the ``[[grant]]`` tables of a permissions file.

    Raises:
        PermissionsError: the file cannot be read, is not TOML, or a rule is wrong; the
            message names the file, the table and the key.
    """
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PermissionsError(f"cannot read the permissions file {path}: {exc}") from exc
    try:
        return parse_grants(raw)
    except PermissionsError as exc:
        raise PermissionsError(f"{path}: {exc}") from None


def parse_grants(raw: dict[str, Any]) -> tuple[Grant, list[Grant]]:
    """The ``[default]`` grant and the ``[[grant]]`` tables of a parsed TOML document."""
    unknown = set(raw) - {"default", "grant"}
    if unknown:
        raise PermissionsError(
            f"unknown section {sorted(unknown)[0]!r}: only [default] and [[grant]]"
        )
    default = _grant(_table(raw.get("default", {}), "[default]"), "[default]", default=True)
    grants_raw = raw.get("grant", [])
    if not isinstance(grants_raw, list):
        raise PermissionsError("grant must be [[grant]] tables")
    grants = [
        _grant(_table(entry, f"grant #{number}"), f"grant #{number}")
        for number, entry in enumerate(grants_raw, 1)
    ]
    return default, grants


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PermissionsError(f"{where} must be a table")
    return value


def _grant(table: dict[str, Any], where: str, default: bool = False) -> Grant:
    allowed = set(_RIGHT_KEYS) | (set() if default else {"identity"})
    unknown = set(table) - allowed
    if unknown:
        raise PermissionsError(
            f"{where}: unknown key {sorted(unknown)[0]!r} (use {', '.join(sorted(allowed))})"
        )
    submit = _globs(table.get("submit", []), f"{where} submit")
    work = _globs(table.get("work", []), f"{where} work")
    admin_name = table.get("admin", "none")
    if admin_name not in ADMIN_LEVELS:
        raise PermissionsError(f'{where}: admin must be "none", "read" or "write"')
    admin = ADMIN_LEVELS[admin_name]
    if default:
        return Grant("default", (), (), submit, work, admin)
    kind, values = _identity(table.get("identity"), where)
    if kind == "address":
        return Grant(kind, (), _networks(values, where), submit, work, admin)
    return Grant(kind, values, (), submit, work, admin)


def _identity(value: object, where: str) -> tuple[str, tuple[str, ...]]:
    keys = ", ".join(_IDENTITY_KEYS)
    if not isinstance(value, dict) or len(value) != 1:
        raise PermissionsError(
            f"{where}: identity must be a table with one key of {keys}, "
            'e.g. identity = {cn = "worker-*"}'
        )
    ((kind, names),) = value.items()
    if kind not in _IDENTITY_KEYS:
        raise PermissionsError(f"{where}: unknown identity key {kind!r} (use one of {keys})")
    return kind, _globs(names if isinstance(names, list) else [names], f"{where} identity")


def _globs(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PermissionsError(f'{where} must be a list of names or patterns, e.g. ["resize*"]')
    return tuple(value)


def _networks(values: tuple[str, ...], where: str) -> tuple[Network, ...]:
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError as exc:
            raise PermissionsError(f"{where}: {value!r} is not an address or CIDR: {exc}") from None
    return tuple(networks)
