"""``geartrain``: one click group; each sub-command lives in its own module."""

from __future__ import annotations

import click

from .version import version_option


@click.group(context_settings={"help_option_names": ["--help"]})
@version_option()
def cli() -> None:
    """Gearman job server, client, worker and admin tools."""


def _register() -> None:
    # Imported here so that `geartrain --help` does not pay for every sub-command's
    # dependencies at import time of this module, and to keep the import arrow
    # cli -> server/client one-way.
    from .serve import serve

    cli.add_command(serve)

    from .admin import admin
    from .certs import certs
    from .submit import submit
    from .work import work

    cli.add_command(submit)
    cli.add_command(work)
    cli.add_command(admin)
    cli.add_command(certs)


_register()


def main() -> None:
    cli(auto_envvar_prefix="GEARTRAIN")
