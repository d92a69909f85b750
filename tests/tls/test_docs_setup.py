"""The locked-down setup of docs/security.md, run as written (port 4730 swapped for a free one):
certificates, a permissions file, the server, a worker, a client, and a client denied."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.interop.helpers import need_program
from tests.support import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "security.md"


def setup_section() -> str:
    text = PAGE.read_text()
    start = text.index("## A locked-down setup")
    return text[start : text.index("\n## ", start + 1)]


def shell_blocks(section: str) -> list[str]:
    """The section's ``sh`` blocks as written (dedented)."""
    return [textwrap.dedent(b) for b in re.findall(r"```sh\n(.*?)```", section, re.DOTALL)]


def shell_commands(section: str) -> list[str]:
    """The section's ``sh`` blocks, each joined into one command line."""
    return [block.replace("\\\n", " ").strip() for block in shell_blocks(section)]


def split(command: str, port: int) -> tuple[dict[str, str], list[str]]:
    """Leading VAR=value words become the environment; the rest is the program's argv."""
    words = shlex.split(command.replace("4730", str(port)))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # geartrain
    while "=" in words[0]:
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    return env, words


def test_the_locked_down_setup_works_when_pasted(tmp_path: Path) -> None:
    need_program("rev", "util-linux")
    section = setup_section()
    certs, _heredoc, serve, work, submit, denied = shell_commands(section)
    port = free_port()

    def run(command: str) -> subprocess.CompletedProcess[str]:
        env, argv = split(command, port)
        return subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30, check=False
        )

    started: list[subprocess.Popen[bytes]] = []

    def spawn(command: str) -> subprocess.Popen[bytes]:
        env, argv = split(command, port)
        proc = subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        started.append(proc)
        return proc

    assert run(certs).returncode == 0
    # A here-document: the shell's to run, as pasted.
    written = subprocess.run(["sh", "-c", shell_blocks(section)[1]], cwd=tmp_path, timeout=30)
    assert written.returncode == 0 and (tmp_path / "permissions.toml").is_file()
    try:
        server = spawn(serve)
        wait_for_port("127.0.0.1", port, proc=server)
        spawn(work)
        submitted = run(submit)
        assert (submitted.returncode, submitted.stdout.strip()) == (0, "olleh"), submitted.stderr
        refused = run(denied)
        assert refused.returncode != 0
        assert refused.stderr.strip() == (
            "geartrain submit: reverse: PERMISSION_DENIED: "
            "CN=worker-1 may not submit jobs to function 'reverse'"
        )
        run_python_example(section, port, tmp_path)
    finally:
        for proc in reversed(started):  # the worker, then the server
            proc.terminate()
            proc.wait(10)


def run_python_example(section: str, port: int, directory: Path) -> None:

    (python,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    script = textwrap.dedent(python).replace("4730", str(port))
    expected = re.findall(r"print\(.*\)  # (.*)$", script, re.MULTILINE)
    (directory / "client.py").write_text(script)
    result = subprocess.run(
        [sys.executable, "client.py"], cwd=directory, capture_output=True, text=True, timeout=30
    )
    assert result.stdout.splitlines() == expected == ["olleh"], result.stderr


def test_the_readme_shows_the_same_setup() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Security") :]
    (block,) = re.findall(r"```sh\n(.*?)```", section[: section.index("\n## ")], re.DOTALL)
    # Certificates, the permissions file, then the server: run above, in the same words.
    documented = "".join(shell_blocks(setup_section())[:3])
    assert block.split() == documented.split()
    assert "docs/security.md" in section
