"""The 60-second tour of README.md and docs/quickstart.md, run as written.

The Python files of the tour (the code blocks that start with ``# worker.py``, ``# client.py``
or ``# admin.py``) run against a fresh server, with ``127.0.0.1:4730`` pointed at it; each
line they print must be what the comment at the end of its ``print`` says. The Gearman tool
commands of the tour run too, with ``-h``/``-p`` added.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop.helpers import Processes, gearadmin, gearman, gearman_cmd
from tests.interop.wire import wait_workers
from tests.support import ServerProcess

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
TOUR_PAGES = ["README.md", "docs/quickstart.md"]
TOOL_COMMANDS = ["gearman -w -f reverse -- rev", "gearman -f reverse 'hello'", "gearadmin --status"]


def python_files(page: str) -> dict[str, str]:
    """The tour's Python files on a page: name -> source, in the order they appear."""
    text = (ROOT / page).read_text()
    blocks = re.findall(r"```python\n# (\w+\.py)\n(.*?)```", text, re.DOTALL)
    return dict(blocks)


def expected_output(source: str) -> list[str]:
    """What a tour file prints: the comment after each ``print(...)``."""
    return re.findall(r"^\s*print\(.*\)  # (.*)$", source, re.MULTILINE)


@pytest.mark.parametrize("page", TOUR_PAGES)
def test_the_python_tour_prints_what_it_says(
    page: str, geartrain_server: ServerProcess, procs: Processes, tmp_path: Path
) -> None:
    files = python_files(page)
    names = list(files)
    assert names[0] == "worker.py" and len(names) >= 2, names
    address = f"{geartrain_server.host}:{geartrain_server.port}"
    for name, source in files.items():
        assert "127.0.0.1:4730" in source, name
        (tmp_path / name).write_text(source.replace("127.0.0.1:4730", address))
    procs.spawn([sys.executable, str(tmp_path / "worker.py")])
    wait_workers(geartrain_server, "reverse")
    for name in names[1:]:
        expected = expected_output(files[name])
        assert expected, f"{name} of {page} says nothing about what it prints"
        result = subprocess.run(
            [sys.executable, str(tmp_path / name)], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == expected, name


@pytest.mark.parametrize("page", TOUR_PAGES)
def test_the_gearman_tools_tour_runs(
    page: str, geartrain_server: ServerProcess, procs: Processes
) -> None:
    text = (ROOT / page).read_text()
    for command in TOOL_COMMANDS:
        assert command in text
    worker = shlex.split(TOOL_COMMANDS[0])
    assert worker[0] == "gearman"
    procs.spawn(gearman_cmd(geartrain_server, *worker[1:]))
    wait_workers(geartrain_server, "reverse")
    client = shlex.split(TOOL_COMMANDS[1])
    assert gearman(geartrain_server, *client[1:]).ok().out == "olleh"
    status = gearadmin(geartrain_server, *shlex.split(TOOL_COMMANDS[2])[1:]).ok().out
    assert status == "reverse\t0\t0\t1\n.\n"
