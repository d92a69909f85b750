"""Who may do what: the permissions file, and each connection's rights under it.

Theory of operation:

* The file (TOML) is read and checked by :mod:`.grants` into a :class:`Permissions`: a
  ``[default]`` section for everyone, and ``[[grant]]`` tables, each naming one kind of
  identity (a certificate's CN, one of its DNS, email or URI subjectAltNames, or, for peers
  without a certificate, a source address in CIDR form) and the rights it adds. Rights
  only add up: a peer has the default's rights plus those of every grant it matches.
* A connection's rights are resolved once, when it is made (and again on reload): the
  grants it matches decide a :class:`Rights`, shared by every connection that matches the
  same grants. A Rights answers "may it submit to / work on this function?" from a
  per-function cache, so the glob patterns are matched once per function, not per packet.
* With no permissions file a peer's ``rights`` is None and nothing here runs: every
  entry point tests that one attribute first.
* A denial is logged with the identity, the address and what was asked, counted by kind
  for the metrics, and answered with ``ERROR PERMISSION_DENIED`` (or an ``ERR`` admin
  line); the connection carries on.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from geartrain.protocol.constants import ErrorCode

from .grants import (
    ADMIN_NONE,
    ADMIN_READ,
    ADMIN_WRITE,
    Grant,
    PermissionsError,
    parse_grants,
    peer_address,
    read_grants,
)

if TYPE_CHECKING:
    from .jobs import Peer
    from .tls import Identity

__all__ = [
    "ADMIN_NONE",
    "ADMIN_READ",
    "ADMIN_WRITE",
    "DENIAL_KINDS",
    "Permissions",
    "PermissionsError",
    "Rights",
    "admin_denied",
    "apply_rights",
    "describe",
    "peer_address",
]

logger = logging.getLogger(__name__)

#: The kinds of denial, as the metrics label them.
DENIAL_KINDS: Final = ("submit", "work", "status", "admin")

#: Per-function decisions kept per Rights before the cache starts over: a client making up
#: function names must not grow the server's memory without bound.
_CACHE_LIMIT: Final = 4096


class Requester(Protocol):
    """A peer as a denial describes it: who it is and where it comes from."""

    @property
    def identity(self) -> Identity | None: ...

    @property
    def ip(self) -> str: ...


class Rights:
    """What the peers matching one set of grants may do; shared by all such peers.

    Args:
        submit: glob patterns of functions they may submit to.
        work: glob patterns of functions they may work on.
        admin: their admin level.
        denials: counts of denials by kind, shared with the server's metrics.
    """

    __slots__ = ("_submit", "_submit_allowed", "_work", "_work_allowed", "admin", "denials")

    def __init__(
        self, submit: Iterable[str], work: Iterable[str], admin: int, denials: dict[str, int]
    ) -> None:
        self._submit = _matcher(submit)
        self._work = _matcher(work)
        self.admin = admin
        self.denials = denials
        self._submit_allowed: dict[bytes, bool] = {}
        self._work_allowed: dict[bytes, bool] = {}

    def may_submit(self, function: bytes) -> bool:
        """Whether jobs may be submitted to ``function``."""
        allowed = self._submit_allowed.get(function)
        if allowed is None:
            allowed = _decide(self._submit_allowed, self._submit, function)
        return allowed

    def may_work(self, function: bytes) -> bool:
        """Whether a worker may register for ``function`` (and so be given its jobs)."""
        allowed = self._work_allowed.get(function)
        if allowed is None:
            allowed = _decide(self._work_allowed, self._work, function)
        return allowed

    def may_see_status(self, function: bytes) -> bool:
        """Whether the status of a job of ``function`` may be read: admin read or submit."""
        return self.admin >= ADMIN_READ or self.may_submit(function)

    def refuses_submit(self, peer: Peer, function: bytes) -> bool:
        """True, with the denial logged and the ERROR queued, if ``peer`` may not submit."""
        # The cache is read here rather than through may_submit: this runs for every
        # submission, and a method call costs more than the lookup itself.
        if self._submit_allowed.get(function) or self.may_submit(function):
            return False
        _send_error(peer, self.denied(peer, "submit", f"submit jobs to {_text(function)}"))
        return True

    def refuses_work(self, peer: Peer, function: bytes) -> bool:
        """True, with the denial logged and the ERROR queued, if ``peer`` may not work on it."""
        if self.may_work(function):
            return False
        _send_error(peer, self.denied(peer, "work", f"work on {_text(function)}"))
        return True

    def refuses_status(self, peer: Peer, function: bytes) -> bool:
        """True, with the denial logged and the ERROR queued, if ``peer`` may not see it."""
        if self.may_see_status(function):
            return False
        what = f"see the status of jobs of {_text(function)}"
        _send_error(peer, self.denied(peer, "status", what))
        return True

    def denied(self, peer: Requester, kind: str, what: str) -> str:
        """Log and count a denial; returns the text that tells the peer.

        Args:
            peer: who asked.
            kind: one of :data:`DENIAL_KINDS`.
            what: what was asked, as a phrase after "may not".
        """
        self.denials[kind] = self.denials.get(kind, 0) + 1
        who = describe(peer)
        logger.warning("permission denied: %s (from %s) may not %s", who, peer.ip, what)
        return f"{who} may not {what}"


def describe(peer: Requester) -> str:
    """Who a peer is, as denials name it: its certificate subject, else its address."""
    identity = peer.identity
    if identity is not None:
        # A certificate may have no subject at all, only subjectAltNames.
        return identity.subject or ",".join(identity.alt_names) or "a certificate without names"
    return f"address {peer.ip}"


def admin_denied(rights: Rights, peer: Requester, line: bytes, level: int) -> bytes:
    """The ``ERR PERMISSION_DENIED`` admin reply to ``line``, the denial logged and counted."""
    needed = "admin write" if level >= ADMIN_WRITE else "admin read"
    command = line.decode("utf-8", "replace").strip()
    text = rights.denied(peer, "admin", f"run {command!r} (needs {needed})")
    return b"ERR PERMISSION_DENIED %s\r\n" % text.replace(" ", "+").encode()


def _send_error(peer: Peer, text: str) -> None:
    peer.send_error(ErrorCode.PERMISSION_DENIED, text.encode())


def _text(function: bytes) -> str:
    return f"function {function.decode('utf-8', 'replace')!r}"


def _matcher(patterns: Iterable[str]) -> Callable[[str], re.Match[str] | None] | None:
    """One compiled regular expression for a list of globs; None when there are none."""
    globs = list(patterns)
    if not globs:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(glob)})" for glob in globs)).match


def _decide(
    cache: dict[bytes, bool], match: Callable[[str], re.Match[str] | None] | None, name: bytes
) -> bool:
    # Function names are bytes, patterns text: undecodable bytes become surrogates, which
    # a wildcard matches like any other character and no plain name in a pattern does.
    allowed = match is not None and match(name.decode("utf-8", "surrogateescape")) is not None
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[name] = allowed
    return allowed


class Permissions:
    """The rules of one permissions file.

    Args:
        default: the rights of everyone (``[default]``).
        grants: the ``[[grant]]`` tables, in file order.
        source: where the rules came from, for log messages.
        denials: counts of denials by kind; the server passes its metrics counters, so
            the counts survive a reload.
    """

    def __init__(
        self,
        default: Grant,
        grants: list[Grant],
        source: str = "-",
        denials: dict[str, int] | None = None,
    ) -> None:
        self.default = default
        self.grants = grants
        self.source = source
        self.denials = denials if denials is not None else {}
        self._rights: dict[tuple[int, ...], Rights] = {}

    @classmethod
    def load(cls, path: str | Path, denials: dict[str, int] | None = None) -> Permissions:
        """Read and check a permissions file.

        Raises:
            PermissionsError: the file cannot be read, is not TOML, or a rule is wrong; the
                message names the file, the table and the key.
        """
        default, grants = read_grants(path)
        return cls(default, grants, str(path), denials)

    @classmethod
    def parse(
        cls, raw: dict[str, Any], source: str = "-", denials: dict[str, int] | None = None
    ) -> Permissions:
        """Rules from a parsed TOML document (see :meth:`load`)."""
        default, grants = parse_grants(raw)
        return cls(default, grants, source, denials)

    def rights_for(self, identity: Identity | None, ip: str) -> Rights:
        """The rights of a peer: the default's plus those of every grant it matches."""
        address = peer_address(ip)
        matched = tuple(i for i, g in enumerate(self.grants) if g.matches(identity, address))
        rights = self._rights.get(matched)
        if rights is None:
            chosen = [self.default, *(self.grants[i] for i in matched)]
            rights = self._rights[matched] = Rights(
                (p for g in chosen for p in g.submit),
                (p for g in chosen for p in g.work),
                max(g.admin for g in chosen),
                self.denials,
            )
        return rights


def apply_rights(peer: Peer, rights: Rights) -> None:
    """Give a connected peer new rights (a reload); registrations they deny are dropped.

    A worker registered for a function it may no longer work on is unregistered as by
    CANT_DO, so it is given none of its jobs from now on (a job it is running goes back to
    the queue). It is not told: it sees NO_JOB for that function like for any other.
    """
    peer.rights = rights
    for function in list(peer.ability_list):
        if not rights.may_work(function.name):
            logger.warning(
                "permissions reloaded: %s (from %s) no longer works on %s",
                describe(peer),
                peer.ip,
                _text(function.name),
            )
            peer.scheduler.cant_do(peer, function.name)
