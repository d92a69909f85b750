"""The Dockerfile, without a Docker engine: its instructions, and its command line run here."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

from geartrain.admin import AdminClient
from geartrain.client import Client
from tests.packaging.helpers import ROOT, clean_env, installed_command, running
from tests.support import free_port

Instruction = tuple[str, str]


def final_stage() -> list[Instruction]:
    """(INSTRUCTION, arguments) of the image's last stage, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    instructions = [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
        for line in joined.splitlines()
        if line.strip()
    ]
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def one(stage: list[Instruction], name: str) -> str:
    values = [args for instr, args in stage if instr == name]
    assert len(values) == 1, f"{name}: {values}"
    return values[0]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def the_volume(stage: list[Instruction]) -> str:
    args = one(stage, "VOLUME")
    (volume,) = exec_form(args) if args.startswith("[") else args.split()
    return volume


def health_check(stage: list[Instruction]) -> list[str]:
    """The HEALTHCHECK's command (its options, such as --interval, before CMD)."""
    return exec_form(one(stage, "HEALTHCHECK").split(" CMD ", 1)[1])


def image_command() -> list[str]:
    stage = final_stage()
    return exec_form(one(stage, "ENTRYPOINT")) + exec_form(one(stage, "CMD"))


def test_image_runs_serve_as_a_user_with_the_queue_in_a_volume() -> None:
    stage = final_stage()
    assert one(stage, "USER") not in ("root", "0")
    assert "4730" in one(stage, "EXPOSE").split()
    volume = the_volume(stage)
    command = image_command()
    assert command[:2] == ["geartrain", "serve"]
    queue = command[command.index("--queue") + 1]
    assert queue.startswith(f"sqlite:///{volume}/"), "the queue must live in the volume"
    assert one(stage, "STOPSIGNAL") == "SIGTERM"
    assert health_check(stage)[:2] == ["geartrain", "admin"]
    assert health_check(stage)[-1] == "ping"


def test_build_copies_only_what_exists_and_is_not_ignored() -> None:
    text = (ROOT / "Dockerfile").read_text()
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for source in sources.split():
            assert (ROOT / source).exists(), source
            assert source.split("/")[0] not in ignored, source


def volume_at(directory: Path, argv: list[str], volume: str) -> list[str]:
    """``argv`` with the volume's path replaced by ``directory``."""
    return [arg.replace(volume, str(directory)) for arg in argv]


def test_the_image_command_serves_and_keeps_jobs_across_restarts(tmp_path: Path) -> None:
    stage = final_stage()
    volume = the_volume(stage)
    port = free_port()
    argv = installed_command(volume_at(tmp_path, image_command(), volume))
    argv += ["-L", "127.0.0.1", "-p", str(port)]  # docker -p maps 4730; here a free port
    # The health check, pointed at this port: its last word is the ping sub-command.
    health = installed_command([*health_check(stage)[:-1], "-p", str(port), "ping"])
    with running(argv, port) as server:
        with Client([("127.0.0.1", port)], timeout=10) as client:
            client.submit_background("resize", b"kept")
        assert subprocess.run(health, env=clean_env(), timeout=30, check=False).returncode == 0
        server.send_signal(getattr(signal, one(stage, "STOPSIGNAL")))
        assert server.wait(20) == 0
    assert list(tmp_path.glob("*.sqlite3")), "no queue file in the volume"
    with running(argv, port), AdminClient(("127.0.0.1", port), timeout=10) as admin:
        (row,) = [r for r in admin.status() if r.function == "resize"]
        assert row.queued == 1
