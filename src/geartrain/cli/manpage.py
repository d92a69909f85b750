"""Man pages for ``geartrain`` and its sub-commands, rendered from the click commands.

    python -m geartrain.cli.manpage DIR [--date YYYY-MM-DD]

writes ``geartrain.1`` and one ``geartrain-COMMAND.1`` per sub-command into DIR
(``scripts/manpages`` refreshes the copies in ``packaging/man``). Everything on a
page comes from the commands themselves (usage, help texts, options, defaults), so
a page cannot say something the CLI does not do; the test suite checks that the
shipped pages are current. Sub-commands of a group (``geartrain admin status``)
are described on their group's page.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
from pathlib import Path

import click

from geartrain import __version__

from .main import cli

PROGRAM = "geartrain"
SEE_ALSO = ("gearmand(8)", "gearman(1)", "gearadmin(1)")


def roff_text(text: str) -> str:
    """Text as roff reads it literally: backslashes, hyphens, non-ASCII and leading dots."""
    escaped = []
    for char in text.replace("\\", "\\e"):
        if char == "-":
            escaped.append("\\-")
        elif ord(char) > 127:
            escaped.append(f"\\[u{ord(char):04X}]")
        else:
            escaped.append(char)
    lines = "".join(escaped).split("\n")
    # A line starting with '.' or "'" would be read as a request.
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in lines)


def _paragraphs(help_text: str | None) -> list[str]:
    text = inspect.cleandoc(help_text or "")
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]


def _summary(command: click.Command) -> str:
    """The first sentence of a command's help, for NAME and command lists."""
    return command.get_short_help_str(limit=200).rstrip(".")


def _switches(record: str) -> str:
    """``-f, --function TEXT`` with the switches bold and the value italic."""
    words = []
    for word in record.split():
        plain = word.rstrip(",")
        style = "B" if plain.startswith("-") else "I"
        words.append(f"\\f{style}{roff_text(plain)}\\fR" + word[len(plain) :])
    return " ".join(words)


def _options(ctx: click.Context) -> list[str]:
    lines = []
    help_option = ctx.command.get_help_option(ctx)
    for param in ctx.command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or not isinstance(param, click.Option) or param is help_option:
            continue
        switches, help_text = record
        lines += [".TP", _switches(switches), roff_text(help_text or "")]
    return lines


def _usage(ctx: click.Context) -> str:
    pieces = ctx.command.collect_usage_pieces(ctx)
    if not _options(ctx):  # --help alone is not worth an [OPTIONS] in every synopsis
        pieces = [p for p in pieces if p != ctx.command.options_metavar]
    return " ".join(pieces)


def _visible_commands(ctx: click.Context) -> list[tuple[str, click.Command]]:
    group = ctx.command
    assert isinstance(group, click.Group)
    commands = [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]
    return [(name, c) for name, c in commands if c is not None and not c.hidden]


def _subcommands(ctx: click.Context) -> list[str]:
    """Each sub-command of a group in full: usage, help and options."""
    lines = [".SH COMMANDS"]
    for name, command in _visible_commands(ctx):
        sub = click.Context(command, info_name=name, parent=ctx)
        usage = roff_text(_usage(sub))
        lines += [".TP", f"\\fB{roff_text(name)}\\fR {usage}".rstrip()]
        lines += [roff_text(p) for p in _paragraphs(command.help)]
        options = _options(sub)
        if options:
            lines += [".RS", *options, ".RE"]
    return lines


def _command_list(ctx: click.Context) -> list[str]:
    """The top page's commands: a summary and where each is described."""
    lines = [".SH COMMANDS"]
    for name, command in _visible_commands(ctx):
        page = f"{PROGRAM}-{name}(1)"
        lines += [".TP", f"\\fB{roff_text(name)}\\fR"]
        lines.append(f"{roff_text(_summary(command))}; see \\fB{roff_text(page)}\\fR.")
    return lines


def render(ctx: click.Context, date: str) -> str:
    """The man page of the command in ``ctx``."""
    command = ctx.command
    path = ctx.command_path
    lines = [
        f'.TH "{path.upper().replace(" ", "-")}" "1" "{date}" '
        f'"{PROGRAM} {__version__}" "{PROGRAM} manual"',
        ".SH NAME",
        f"{roff_text(path.replace(' ', '-'))} \\- {roff_text(_summary(command))}",
        ".SH SYNOPSIS",
        f".B {roff_text(path)}",
        roff_text(_usage(ctx)),
        ".SH DESCRIPTION",
    ]
    for n, paragraph in enumerate(_paragraphs(command.help)):
        lines += [".PP"] if n else []
        lines.append(roff_text(paragraph))
    options = _options(ctx)
    if options:
        lines += [".SH OPTIONS", *options]
    if isinstance(command, click.Group):
        lines += _command_list(ctx) if ctx.parent is None else _subcommands(ctx)
    lines += [".SH SEE ALSO", _see_also(ctx)]
    return "\n".join(lines) + "\n"


def _see_also(ctx: click.Context) -> str:
    if ctx.parent is None:
        pages = [f"{PROGRAM}-{name}(1)" for name, _ in _visible_commands(ctx)]
    else:
        pages = [f"{PROGRAM}(1)"]
    return ", ".join(f"\\fB{roff_text(p)}\\fR" for p in [*pages, *SEE_ALSO])


def pages(date: str) -> dict[str, str]:
    """File name -> roff text of every page: ``geartrain.1`` and one per sub-command."""
    top = click.Context(cli, info_name=PROGRAM)
    out = {f"{PROGRAM}.1": render(top, date)}
    for name, command in _visible_commands(top):
        ctx = click.Context(command, info_name=name, parent=top)
        out[f"{PROGRAM}-{name}.1"] = render(ctx, date)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--date", default=dt.date.today().isoformat(), help="date on the pages")
    args = parser.parse_args(argv)
    args.directory.mkdir(parents=True, exist_ok=True)
    for name, text in pages(args.date).items():
        (args.directory / name).write_text(text, encoding="ascii")


if __name__ == "__main__":
    main()
