"""The TLS options of ``geartrain serve`` and of the client commands, with gearmand's spellings.

The server takes gearmand's ``--ssl``, ``--ssl-certificate``, ``--ssl-key`` and
``--ssl-ca-file`` and its environment variables (``GEARMAND_SERVER_PEM``,
``GEARMAND_SERVER_KEY``, ``GEARMAND_CA_CERTIFICATE``); the client commands take libgearman's
``-S`` / ``--ssl`` and its variables (``GEARMAND_CA_CERTIFICATE``, ``GEARMAN_CLIENT_PEM``,
``GEARMAN_CLIENT_KEY``), so scripts written for gearmand and its tools carry over.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from geartrain.tls import TLSOptions

F = TypeVar("F", bound=Callable[..., Any])

#: gearmand's environment variables for its TLS files, by our option name. An option given
#: on the command line, as GEARTRAIN_<OPTION> or in the config file wins over them.
SERVER_ENVIRONMENT = {
    "ssl_certificate": "GEARMAND_SERVER_PEM",
    "ssl_key": "GEARMAND_SERVER_KEY",
    "ssl_ca_file": "GEARMAND_CA_CERTIFICATE",
}


def server_params() -> list[click.Parameter]:
    """The TLS options of ``geartrain serve``."""
    return [
        click.Option(
            ["--ssl"],
            is_flag=True,
            default=None,
            help="The port (-p) speaks TLS only, as gearmand --ssl.",
        ),
        click.Option(
            ["--ssl-port"], type=int, help="Also listen for TLS on this port (plain stays on -p)."
        ),
        click.Option(
            ["--ssl-listen"],
            multiple=True,
            help="Address of the --ssl-port listener; repeat for several (default: as -L).",
        ),
        click.Option(
            ["--ssl-certificate"],
            help="Server certificate chain, PEM (or $GEARMAND_SERVER_PEM); reread on SIGHUP.",
        ),
        click.Option(["--ssl-key"], help="Its private key, PEM (or $GEARMAND_SERVER_KEY)."),
        click.Option(
            ["--ssl-ca-file"],
            help="CA certificates for client certificates, PEM (or $GEARMAND_CA_CERTIFICATE).",
        ),
        click.Option(
            ["--ssl-verify-client"],
            type=click.Choice(["none", "optional", "required"]),
            help="Client certificates: none (default, as gearmand), optional or required.",
        ),
        click.Option(
            ["--ssl-min-version"],
            type=click.Choice(["TLSv1.2", "TLSv1.3"]),
            help="Oldest TLS version accepted (default TLSv1.2).",
        ),
        click.Option(
            ["--ssl-handshake-timeout"],
            type=float,
            help="Seconds a peer has to finish its TLS handshake (default 10).",
        ),
    ]


def server_environment(values: dict[str, Any]) -> None:
    """Fill the TLS files not given otherwise from gearmand's environment variables."""
    for name, variable in SERVER_ENVIRONMENT.items():
        if name not in values and os.environ.get(variable):
            values[name] = os.environ[variable]


def client_options(func: F) -> F:
    """Add the client-side TLS options to a command (``-S``/``--ssl`` and the files)."""
    options = [
        click.option(
            "-S",
            "--ssl",
            "tls",
            is_flag=True,
            help="Speak TLS to the job server (as gearman -S), with the files below.",
        ),
        click.option(
            "--ssl-ca-file",
            "tls_ca_file",
            envvar="GEARMAND_CA_CERTIFICATE",
            help="CA certificates the server's certificate must chain to "
            "(default: $GEARMAND_CA_CERTIFICATE, else the system's).",
        ),
        click.option(
            "--ssl-certificate",
            "tls_certificate",
            envvar="GEARMAN_CLIENT_PEM",
            help="Client certificate, PEM (default: $GEARMAN_CLIENT_PEM).",
        ),
        click.option(
            "--ssl-key",
            "tls_key",
            envvar="GEARMAN_CLIENT_KEY",
            help="Client private key, PEM (default: $GEARMAN_CLIENT_KEY).",
        ),
        click.option(
            "--ssl-server-name",
            "tls_server_name",
            help="Name the server's certificate must carry (default: the host connected to).",
        ),
        click.option(
            "--ssl-no-verify",
            "tls_no_verify",
            is_flag=True,
            help="Do not check the server's certificate (encryption without authentication).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def client_tls(options: dict[str, Any]) -> TLSOptions | None:
    """The TLS options the command line asked for (popped from ``options``); None = plain.

    Only ``-S`` turns TLS on; the other options and gearman's environment variables say
    how, as with libgearman (a variable left in the environment changes nothing alone).
    """
    wanted = options.pop("tls")
    ca_file = options.pop("tls_ca_file")
    certificate = options.pop("tls_certificate")
    key = options.pop("tls_key")
    server_name = options.pop("tls_server_name")
    no_verify = options.pop("tls_no_verify")
    if not wanted:
        return None
    return TLSOptions(
        ca_file=ca_file,
        certificate=certificate,
        key=key,
        verify=not no_verify,
        server_name=server_name,
    )
