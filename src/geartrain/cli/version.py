"""``-V/--version`` for every command: the version and which build runs (compiled or pure)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from geartrain import __version__, _build

F = TypeVar("F", bound=Callable[..., object])


def _show(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    # Asked here, not at import: finding the hot modules imports the protocol package.
    click.echo(f"geartrain, version {__version__} ({_build.build()} build)")
    ctx.exit()


def version_option() -> Callable[[F], F]:
    """The option, as click's own ``version_option`` spells it."""
    return click.option(
        "-V",
        "--version",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        allow_from_autoenv=False,
        callback=_show,
        help="Show the version and exit.",
    )
