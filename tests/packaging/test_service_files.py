"""The systemd units and the supervisord sample: valid, and their command lines work as shipped."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from geartrain.admin import AdminClient
from geartrain.client import Client
from tests.client.helpers import registered, wait_until
from tests.packaging.helpers import GEARTRAIN, ROOT, clean_env, installed_command, running
from tests.support import free_port, start_geartrain

SYSTEMD = ROOT / "packaging" / "systemd"
SUPERVISORD = ROOT / "packaging" / "supervisord" / "geartrain-worker.conf"
INSTALLED_AT = "/usr/local/bin/geartrain"


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Key -> values of a unit file's [Service] section (systemd allows repeated keys)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def expand(command: str, instance: str, env: dict[str, str]) -> list[str]:
    """An ExecStart line as systemd runs it: %i, ${VAR} as one word, $VAR split on spaces."""
    words: list[str] = []
    for word in shlex.split(command.replace("%i", instance)):
        alone = re.fullmatch(r"\$(\w+)", word)
        if alone:
            words += env[alone[1]].split()
        else:
            words.append(re.sub(r"\$\{(\w+)\}", lambda m: env[m[1]], word))
    return words


def environment_line(values: list[str]) -> dict[str, str]:
    """The VAR=value words of Environment= lines (quoted words may hold spaces)."""
    words = [word for value in values for word in shlex.split(value)]
    return dict(word.split("=", 1) for word in words)


def environment_file(path: Path) -> dict[str, str]:
    """An EnvironmentFile: one VAR=value a line, the value being the rest of the line."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed: apt-get install systemd")
    # verify checks that ExecStart's program exists and that Documentation= man pages do.
    man1 = tmp_path / "man" / "man1"
    man1.mkdir(parents=True)
    for page in (ROOT / "packaging" / "man").glob("*.1"):
        shutil.copy(page, man1)
    units = tmp_path / "units"
    units.mkdir()
    for unit in SYSTEMD.glob("*.service"):
        (units / unit.name).write_text(unit.read_text().replace(INSTALLED_AT, GEARTRAIN))
    for name in (
        "geartrain.service",
        "geartrain-worker@.service",
        "geartrain-worker@resize.service",
    ):
        result = subprocess.run(
            [analyze, "verify", str(units / name)],
            env=clean_env(MANPATH=str(tmp_path / "man"), SYSTEMD_LOG_LEVEL="notice"),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert (result.returncode, result.stdout + result.stderr) == (0, b""), name


def test_server_unit_starts_serves_and_stops_gracefully(tmp_path: Path) -> None:
    unit = unit_settings(SYSTEMD / "geartrain.service")
    state = f"/var/lib/{unit['StateDirectory'][0]}"
    assert unit["WorkingDirectory"] == [state]
    (command,) = unit["ExecStart"]
    argv = installed_command(expand(command.replace(state, str(tmp_path)), "", {}))
    port = free_port()
    argv += ["-L", "127.0.0.1", "-p", str(port)]  # the shipped line listens on 4730
    with running(argv, port) as server:
        with Client([("127.0.0.1", port)], timeout=10) as client:
            client.submit_background("resize", b"kept")
        server.send_signal(getattr(signal, unit["KillSignal"][0]))
        assert server.wait(float(unit["TimeoutStopSec"][0])) == 0
    assert list(tmp_path.glob("*.sqlite3")), "the queue is not in the state directory"


def test_worker_template_runs_a_pool_for_its_instance(tmp_path: Path) -> None:
    unit = unit_settings(SYSTEMD / "geartrain-worker@.service")
    defaults = environment_line(unit["Environment"])
    example = environment_file(SYSTEMD / "worker.env.example")
    assert set(example) == set(defaults) == {"SERVERS", "PROCESSES", "COMMAND"}
    assert unit["EnvironmentFile"] == ["-/etc/geartrain/worker-%i.env"]
    server = start_geartrain()
    try:
        env = {"SERVERS": f"127.0.0.1:{server.port}", "PROCESSES": "2", "COMMAND": "tr a-z A-Z"}
        (command,) = unit["ExecStart"]
        argv = installed_command(expand(command, "upper", env))
        with running(argv) as pool:
            with AdminClient(server.address, timeout=10) as admin:
                wait_until(lambda: registered(admin.status(), "upper") == 2, timeout=20)
            with Client([server.address], timeout=20) as client:
                assert client.call("upper", b"hello") == b"HELLO"
            pool.send_signal(getattr(signal, unit["KillSignal"][0]))
            assert pool.wait(20) == 0
        assert unit["KillMode"] == ["mixed"]  # else every worker gets the signal twice
    finally:
        server.stop()


def test_supervisord_sample_runs_its_worker_command() -> None:
    config = configparser.ConfigParser(interpolation=None)
    config.read(SUPERVISORD)
    (section,) = [s for s in config.sections() if s.startswith("program:")]
    program = config[section]
    assert int(program["numprocs"]) > 1 and "%(process_num)" in program["process_name"]
    assert program["stopsignal"] == "TERM" and program["stopasgroup"] == "false"
    argv = installed_command(shlex.split(program["command"]))
    assert "--processes" not in argv, "supervisord runs the processes itself"
    server = start_geartrain()
    try:
        # The shipped line with this test's server and a command that exists here.
        argv[argv.index("-h") + 1] = f"127.0.0.1:{server.port}"
        argv[argv.index("--") + 1 :] = ["tr", "a-z", "A-Z"]
        function = argv[argv.index("-f") + 1]
        with running(argv) as worker:
            with Client([server.address], timeout=20) as client:
                assert client.call(function, b"resize me") == b"RESIZE ME"
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(20) == 0
    finally:
        server.stop()
