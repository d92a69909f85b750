"""What the permissions file lets an HTTP client do, judged by its address.

An HTTP request carries no certificate (the listener is plain HTTP), so the client is known
by its address: only the ``[default]`` and ``address`` grants apply to it. Submitting
needs ``submit`` on the function; a job's status ``submit`` on its function or ``admin =
"read"``; cancelling ``admin = "write"`` (it is the admin ``cancel job``); the status page's
data, the metrics and the dead-letter queue ``admin = "read"`` (they show what ``status``,
``workers`` and ``dead list`` show); requeueing or purging a dead job ``admin = "write"``.
Health probes need nothing. A refusal is a 403 ``permission_denied``, logged and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from ..permissions import ADMIN_READ, ADMIN_WRITE
from .errors import HttpError

if TYPE_CHECKING:
    from ..app import Server


@dataclass(frozen=True, slots=True)
class HttpClient:
    """An HTTP client as permission denials name it: an address, never a certificate."""

    ip: str
    identity: None = None


def require(server: Server, request: web.Request, kind: str, function: bytes = b"") -> None:
    """Refuse (403) what the permissions file does not let this HTTP client do.

    Args:
        server: the server, whose ``permissions`` decide (None: everything is allowed).
        request: the HTTP request; its client's address is the identity.
        kind: ``submit``, ``status`` (of a job of ``function``), ``cancel``, ``read`` or
            ``write`` (admin rights, for the dead-letter queue's reads and changes).
        function: the function submitted to, or of the job asked about.

    Raises:
        HttpError: 403 ``permission_denied``, naming the address and what it may not do.
    """
    permissions = server.permissions
    if permissions is None:
        return
    client = HttpClient(request.remote or "-")
    rights = permissions.rights_for(None, client.ip)
    name = function.decode("utf-8", "replace")
    if kind == "submit" and not rights.may_submit(function):
        text = rights.denied(client, "submit", f"submit jobs to function {name!r}")
    elif kind == "status" and not rights.may_see_status(function):
        text = rights.denied(client, "status", f"see the status of jobs of function {name!r}")
    elif kind == "cancel" and rights.admin < ADMIN_WRITE:
        text = rights.denied(client, "admin", "cancel jobs (needs admin write)")
    elif kind == "read" and rights.admin < ADMIN_READ:
        text = rights.denied(client, "admin", f"read {request.path} (needs admin read)")
    elif kind == "write" and rights.admin < ADMIN_WRITE:
        text = rights.denied(client, "admin", f"change {request.path} (needs admin write)")
    else:
        return
    raise HttpError(403, "permission_denied", text)
