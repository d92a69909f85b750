"""``geartrain certs``: a private CA, a server certificate and client certificates."""

from __future__ import annotations

from pathlib import Path

import click

from geartrain.certs import LEAF_DAYS, make_certificates


@click.command("certs")
@click.option(
    "--out",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory of the files (made if missing; a CA already there is reused).",
)
@click.option(
    "--server-name",
    "server_names",
    multiple=True,
    help="DNS name or IP address of the server; repeat for several "
    "(default: localhost, 127.0.0.1, ::1).",
)
@click.option(
    "--client", "clients", multiple=True, help="Make a client certificate with this CN; repeat."
)
@click.option(
    "--days",
    type=click.IntRange(1),
    default=LEAF_DAYS,
    show_default=True,
    help="Validity of the server and client certificates.",
)
def certs(
    directory: Path, server_names: tuple[str, ...], clients: tuple[str, ...], days: int
) -> None:
    """Make a private CA, a server certificate and client certificates (PEM files).

    For testing and small deployments: ca.pem goes to every client and to the server
    (--ssl-ca-file), server.pem and server.key to the server, NAME.pem and NAME.key to
    the client called NAME. Running it again with more --client names signs them with the
    same CA. Needs the cryptography package: pip install 'geartrain[tls]'.
    """
    try:
        issued = make_certificates(
            directory, server_names=list(server_names), clients=list(clients), days=days
        )
    except (RuntimeError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    for path in [issued.ca, issued.server, *issued.clients.values()]:
        if path is not None:
            click.echo(f"{path} (key: {path.with_suffix('.key')})")
