"""The shipped man pages are current with the CLI and render cleanly."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from geartrain.cli.main import cli
from geartrain.cli.manpage import pages, roff_text
from tests.packaging.helpers import ROOT

MAN_DIR = ROOT / "packaging" / "man"
STALE = "packaging/man is stale: run scripts/manpages and commit the result"


def shipped() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(MAN_DIR.glob("*.1"))}


def shipped_date() -> str:
    header = (MAN_DIR / "geartrain.1").read_text().split("\n", 1)[0]
    found = re.match(r'\.TH "GEARTRAIN" "1" "(\d{4}-\d{2}-\d{2})"', header)
    assert found, header
    return found[1]


def test_the_shipped_pages_are_what_the_cli_renders_today() -> None:
    current = pages(shipped_date())
    assert sorted(current) == sorted(shipped()), STALE
    for name, text in current.items():
        assert shipped()[name] == text, f"{name}: {STALE}"


def test_every_command_and_option_has_its_place() -> None:
    expected = {"geartrain.1"} | {f"geartrain-{command}.1" for command in cli.commands}
    assert set(shipped()) == expected
    serve = shipped()["geartrain-serve.1"]
    for option in ("--listen", "--port", "--queue", "--import-gearmand", "--daemon"):
        assert f"\\fB{roff_text(option)}\\fR" in serve
    admin = shipped()["geartrain-admin.1"]
    for sub in ("status", "workers", "cancel", "maxqueue", "ping", "top"):
        assert f".TP\n\\fB{sub}\\fR" in admin  # sub-commands are on their group's page


@pytest.mark.parametrize(
    ("text", "roff"),
    [
        ("--queue", "\\-\\-queue"),
        ("a\\b", "a\\eb"),
        ("postgresql://…", "postgresql://\\[u2026]"),
        (".starts with a dot", "\\&.starts with a dot"),
        ("'quote", "\\&'quote"),
    ],
)
def test_roff_text_escapes_what_roff_would_interpret(text: str, roff: str) -> None:
    assert roff_text(text) == roff


def test_pages_render_without_a_warning() -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff not installed: apt-get install groff-base")
    for path in sorted(MAN_DIR.glob("*.1")):
        result = subprocess.run(
            [groff, "-man", "-ww", "-z", str(path)], capture_output=True, timeout=30, check=False
        )
        assert (result.returncode, result.stderr) == (0, b""), path.name
        shown = subprocess.run(
            [groff, "-man", "-Tutf8", "-P-cbou", str(path)],  # plain text, no overstrike
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout.decode()
        assert "NAME" in shown and "SYNOPSIS" in shown
