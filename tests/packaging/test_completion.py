"""Shell completion as docs/install.md documents it: ``_GEARTRAIN_COMPLETE=<shell>_source``."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.packaging.helpers import GEARTRAIN, ROOT, clean_env

SHELLS = {"bash": "complete -o nosort -F", "zsh": "#compdef geartrain", "fish": "complete "}


def geartrain_env(**extra: str) -> dict[str, str]:
    # The generated scripts call `geartrain` by name, as an installed one is found.
    path = f"{os.path.dirname(GEARTRAIN)}{os.pathsep}{os.environ.get('PATH', '')}"
    return clean_env(PATH=path, **extra)


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_each_documented_shell_gets_a_script(shell: str) -> None:
    result = subprocess.run(
        [GEARTRAIN],
        env=geartrain_env(_GEARTRAIN_COMPLETE=f"{shell}_source"),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert SHELLS[shell] in result.stdout.decode()
    assert f"_GEARTRAIN_COMPLETE={shell}_source" in (ROOT / "docs" / "install.md").read_text()


def complete_in_bash(line: str) -> list[str]:
    """What bash offers for ``line`` (TAB at its end) after sourcing the documented script."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed")
    words = line.split(" ")
    script = (
        'eval "$(_GEARTRAIN_COMPLETE=bash_source geartrain)"\n'
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        '_geartrain_completion geartrain; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        [bash, "--norc", "--noprofile", "-c", script],
        env=geartrain_env(),
        capture_output=True,
        timeout=30,
        check=True,
    )
    return result.stdout.decode().split()


def test_bash_completes_sub_commands_and_options() -> None:
    assert complete_in_bash("geartrain s") == ["serve", "submit"]
    assert complete_in_bash("geartrain work --max-") == ["--max-jobs", "--max-lifetime"]
    assert "priority-status" in complete_in_bash("geartrain admin p")


# zsh's script passes the index of the word being completed, fish's the word itself.
@pytest.mark.parametrize(("shell", "cword"), [("zsh", "1"), ("fish", "se")])
def test_zsh_and_fish_get_answers_from_the_program(shell: str, cword: str) -> None:
    # What their scripts ask the program; the shells themselves need not be installed.
    result = subprocess.run(
        [GEARTRAIN],
        env=geartrain_env(
            _GEARTRAIN_COMPLETE=f"{shell}_complete", COMP_WORDS="geartrain se", COMP_CWORD=cword
        ),
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert "serve" in result.stdout.decode()
