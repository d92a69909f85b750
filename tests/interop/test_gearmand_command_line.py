"""gearmand's whole command line, read from the real ``gearmand --help``, and what it does here."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import geartrain
from tests.interop.wire import Conn, P
from tests.persistence.conftest import MYSQL_URL, POSTGRES_URL, REDIS_URL, build_harness
from tests.support import GEARMAND, admin_command, free_port, start_gearmand, wait_for_port

pytestmark = pytest.mark.interop

SERVE = [sys.executable, "-m", "geartrain", "serve"]

SERVICE_URLS = {"postgres": POSTGRES_URL, "mysql": MYSQL_URL, "redis": REDIS_URL}

#: A value for each gearmand option that takes one (anything else gets "1").
VALUES = {
    "backlog": "64",
    "file-descriptors": "1024",
    "job-handle-prefix": "H:opt",
    "log-file": "none",
    "listen": "127.0.0.1",
    "pid-file": "{tmp}/gearmand.pid",
    "protocol": "http",
    "queue-type": "builtin",
    "config-file": "{tmp}/gearmand.conf",
    "user": "root",
    "verbose": "INFO",
    "libsqlite3-db": "{tmp}/queue.db",
    "libsqlite3-table": "gearman_queue",
    "libpq-table": "queue",
    "mysql-table": "gearman_queue",
    "redis-prefix": "gear",
    "ssl-ca-file": "{tmp}/ca.pem",
    "ssl-certificate": "{tmp}/cert.pem",
    "ssl-key": "{tmp}/key.pem",
}
#: Accepted by the parser but refused at start-up on purpose, with the reason.
REFUSED = {
    # TLS without a certificate: gearmand 1.1 stays plain text (its issue #207); we refuse.
    "ssl": "TLS needs a certificate",
}


def gearmand_options() -> list[tuple[str, str | None, bool]]:
    """(long name, short letter, takes a value) for every option gearmand 1.1 lists."""
    if GEARMAND is None:
        pytest.skip("gearmand is not installed: apt-get install gearman-job-server")
    text = subprocess.run(
        [GEARMAND, "--help"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    found = re.findall(r"^\s+(?:-(\w) \[ )?--([\w-]+)(?: \])?( arg)?", text, re.M)
    options = [(name, short or None, bool(arg)) for short, name, arg in found]
    assert len(options) > 40, text  # the parse really found the list
    return options


def admin_value(port: int, line: bytes, host: str = "127.0.0.1") -> bytes:
    """The one-line reply to an admin command such as ``verbose`` or ``version``."""
    return admin_command(port, line, host, end=b"\n")


def run_serve(args: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVE, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_every_option_of_gearmand_help_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "gearmand.conf").write_text("--port=4731\n")
    for name, short, takes_value in gearmand_options():
        if name == "help":
            continue
        value = VALUES.get(name, "1").format(tmp=tmp_path) if takes_value else None
        for spelling in [f"--{name}", *([f"-{short}"] if short else [])]:
            args = [spelling, *([value] if value is not None else [])]
            if name == "version":
                result = run_serve(args)
                assert result.returncode == 0 and "geartrain" in result.stdout, args
                continue
            result = run_serve([*args, "--queue", "none", "--check-args"])
            if name in REFUSED:
                assert result.returncode == 2 and REFUSED[name] in result.stderr, args
            else:
                assert result.returncode == 0, (args, result.stderr)


def test_gearmand_queue_types_choose_our_stores(tmp_path: Path) -> None:
    ok = run_serve(["-q", "Postgres", "--libpq-conninfo", "host=127.0.0.1 dbname=test", "-h"])
    assert ok.returncode == 0
    for args, error in [
        (["-q", "libmemcached"], "not supported"),
        (["-q", "libsqlite3"], "needs --libsqlite3-db"),
        (["-q", "nosuch"], "unknown queue type"),
        (["-r", "nosuch"], "unknown protocol module"),
        (["@" + str(tmp_path / "missing.conf")], "cannot read option file"),
    ]:
        result = run_serve([*args, "--check-args"])
        assert result.returncode == 2 and error in result.stderr, (args, result.stderr)


class Server:
    """``geartrain serve`` with some options, on a free port, stopped at the end."""

    def __init__(
        self, args: Sequence[str], env: dict[str, str] | None = None, prefix: Sequence[str] = ()
    ) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [*prefix, *SERVE, "-L", "127.0.0.1", *args],
            env={**os.environ, "GEARMAND_PORT": str(self.port), **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port("127.0.0.1", self.port, proc=self.proc)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def proc_field(pid: int, name: str, field: str) -> str:
    for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
        if line.startswith(field):
            return line
    raise AssertionError(f"{field} not in /proc/{pid}/{name}")


def test_backlog_file_descriptors_and_verbosity_act(servers: list[Server]) -> None:
    server = Server(["--queue", "none", "-b", "77", "-f", "4321", "-v"])
    servers.append(server)
    assert proc_field(server.proc.pid, "limits", "Max open files").split()[3] == "4321"
    listing = subprocess.run(
        ["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True, check=True
    ).stdout
    assert listing.split()[2] == "77", listing  # Send-Q of a listener is its backlog
    assert admin_value(server.port, b"verbose") == b"OK INFO\n"  # NOTICE, one -v up


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is not installed")
def test_coredump_lets_a_crash_leave_a_core_file(servers: list[Server]) -> None:
    # Started with no core files allowed, as most services are: --coredump lifts that.
    server = Server(["--queue", "none", "--coredump"], prefix=["prlimit", "--core=0:", "--"])
    servers.append(server)
    soft, hard = proc_field(server.proc.pid, "limits", "Max core file size").split()[4:6]
    assert soft == hard, (soft, hard)
    plain = Server(["--queue", "none"], prefix=["prlimit", "--core=0:", "--"])
    servers.append(plain)
    assert proc_field(plain.proc.pid, "limits", "Max core file size").split()[4] == "0"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_user_drops_privileges(servers: list[Server]) -> None:
    server = Server(["--queue", "none", "-u", "nobody"])
    servers.append(server)
    nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout)
    assert proc_field(server.proc.pid, "status", "Uid:").split()[1:] == [str(nobody)] * 4


def test_syslog_receives_the_log(tmp_path: Path, servers: list[Server]) -> None:
    path = str(tmp_path / "log.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    sink.settimeout(10)
    try:
        servers.append(Server(["--queue", "none", "--syslog"], {"GEARTRAIN_SYSLOG_SOCKET": path}))
        messages = b""
        while b"listening on" not in messages:
            messages += sink.recv(4096)
    finally:
        sink.close()
    assert b"geartrain[" in messages


def test_option_files_and_environment_names(tmp_path: Path, servers: list[Server]) -> None:
    (tmp_path / "opts").write_text("--verbose=DEBUG  # gearmand's format\n--queue=none\n")
    server = Server([f"@{tmp_path / 'opts'}"])
    servers.append(server)
    assert admin_value(server.port, b"verbose") == b"OK DEBUG\n"
    server = Server(["--config-file", str(tmp_path / "opts")], {"GEARTRAIN_VERBOSE": "INFO"})
    servers.append(server)
    # The file's options stand where it was named, so they win over the environment.
    assert admin_value(server.port, b"verbose") == b"OK DEBUG\n"
    port = free_port()
    env = {**os.environ, "GEARTRAIN_PORT": str(port), "GEARTRAIN_QUEUE": "none"}
    proc = subprocess.Popen([*SERVE, "-L", "127.0.0.1"], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, proc=proc)  # the documented GEARTRAIN_<OPTION> name
    finally:
        proc.terminate()
        proc.wait(15)


def test_command_line_beats_environment_beats_config_file(
    tmp_path: Path, servers: list[Server]
) -> None:
    config = tmp_path / "geartrain.toml"
    config.write_text('[server]\nverbose = "WARNING"\nqueue = "none"\n')
    layers: list[tuple[list[str], dict[str, str], bytes]] = [
        ([], {}, b"OK NOTICE\n"),  # the default
        (["-c", str(config)], {}, b"OK WARNING\n"),
        (["-c", str(config)], {"GEARTRAIN_VERBOSE": "INFO"}, b"OK INFO\n"),
        (["-c", str(config), "--verbose", "ERROR"], {"GEARTRAIN_VERBOSE": "INFO"}, b"OK ERROR\n"),
        # click's own spelling still works, below the documented one
        (["-c", str(config)], {"GEARTRAIN_SERVE_VERBOSE": "DEBUG"}, b"OK DEBUG\n"),
        # --config's long spelling; a GEARTRAIN_VERSION left in the environment stops nothing
        ([], {"GEARTRAIN_CONFIG": str(config), "GEARTRAIN_VERSION": "1"}, b"OK WARNING\n"),
    ]
    for args, env, level in layers:
        server = Server(["--queue", "none", *args], env)
        servers.append(server)
        assert admin_value(server.port, b"verbose") == level, (args, env)


def test_gearmands_sqlite_queue_carries_over_to_geartrain(tmp_path: Path) -> None:
    """gearmand's own command line, geartrain in its place: gearmand's queued jobs come back."""
    args = ["-q", "libsqlite3", f"--libsqlite3-db={tmp_path / 'q.db'}", "--store-queue-on-shutdown"]
    expected = [b"kept\t1\t0\t0"]
    if GEARMAND is not None:
        # --store-queue-on-shutdown: gearmand writes its queue when stopped.
        gearmand = start_gearmand(args=args)
        try:
            with Conn(gearmand) as conn:
                conn.submit(b"from_gearmand", b"g1", b"payload", P.SUBMIT_JOB_BG)
        finally:
            gearmand.stop()
        expected.append(b"from_gearmand\t1\t0\t0")
    server = Server(args)
    try:
        with Conn(("127.0.0.1", server.port)) as conn:
            conn.submit(b"kept", b"u1", b"payload", P.SUBMIT_JOB_BG)
    finally:
        assert server.stop() == 0
    again = Server(args)  # the import happened once; nothing is imported twice
    try:
        status = admin_command(again.port, b"status")
        for line in expected:
            assert line in status, status
    finally:
        again.stop()


def plugin_options(kind: str, url: str, table: str) -> list[str]:
    """gearmand's ``-q`` options naming the database at ``url`` (our test service)."""
    parts = urlsplit(url)
    host, port, user = parts.hostname or "127.0.0.1", str(parts.port), parts.username or ""
    database, password = parts.path.lstrip("/"), parts.password
    if kind == "postgres":
        conninfo = f"host={host} port={port} user={user} dbname={database}"
        conninfo += f" password='{password}'" if password else ""
        return ["-q", "Postgres", "--libpq-conninfo", conninfo, "--libpq-table", table]
    if kind == "mysql":
        args = ["-q", "MySQL", f"--mysql-host={host}", f"--mysql-port={port}"]
        args += [f"--mysql-user={user}", f"--mysql-db={database}", f"--mysql-table={table}"]
        return args + ([f"--mysql-password={password}"] if password else [])
    args = ["-q", "redis", "--redis-server", host, "--redis-port", port, "--redis-prefix", table]
    return args + (["--redis-password", password] if password else [])


@pytest.mark.parametrize("kind", ["postgres", "mysql", "redis"])
def test_gearmand_queue_options_open_our_database_queues(kind: str, tmp_path: Path) -> None:
    """-q Postgres/MySQL/redis with gearmand's options: a background job outlives a restart."""
    harness = build_harness(kind, tmp_path)  # a fresh table/key prefix, dropped at the end
    try:
        check_database_queue(kind, harness.prefix, tmp_path)
    finally:
        asyncio.run(harness.teardown())


def check_database_queue(kind: str, table: str, tmp_path: Path) -> None:
    scheme = {"postgres": "postgresql", "mysql": "mysql", "redis": "redis"}[kind]
    args = [*plugin_options(kind, SERVICE_URLS[kind], table)]
    function = f"cli_options_{os.getpid()}".encode()  # this run's own, in a shared database
    log = tmp_path / "first.log"
    server = Server([*args, "-l", str(log)])
    try:
        with Conn(("127.0.0.1", server.port)) as conn:
            conn.submit(function, b"u1", b"payload", P.SUBMIT_JOB_BG)
    finally:
        assert server.stop() == 0
    assert f"persistent queue: {scheme}://" in log.read_text()
    again = Server(args)
    try:
        assert function + b"\t1\t0\t0" in admin_command(again.port, b"status")
        with Conn(("127.0.0.1", again.port)) as worker:  # run it, leaving the database empty
            worker.register(function)
            handle, _, unique, data = worker.grab_next()
            assert (unique, data) == (b"u1", b"payload")
            worker.send(P.WORK_COMPLETE, handle, b"")
            worker.sync()
    finally:
        assert again.stop() == 0
    third = Server(args)  # the finished job left the queue for good
    try:
        assert function not in admin_command(third.port, b"status")
    finally:
        third.stop()


def test_default_queue_and_daemon_log_go_to_the_state_directory(tmp_path: Path) -> None:
    pid_file = tmp_path / "g.pid"
    port = free_port()
    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path), "GEARMAND_PORT": str(port)}
    started = subprocess.run(
        [*SERVE, "-L", "127.0.0.1", "-d", "-P", str(pid_file)],
        env=env,
        cwd="/",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    pid = int(pid_file.read_text())
    try:
        assert (tmp_path / "geartrain.sqlite3").exists()
        log = (tmp_path / "geartrain.log").read_text()
        assert f"persistent queue: sqlite:///{tmp_path}/geartrain.sqlite3" in log
        assert "listening on 127.0.0.1" in log
        assert not Path("/geartrain.sqlite3").exists()
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not pid_file.exists()


# -- Debian's gearman-job-server units, with geartrain where they call gearmand -------------

UNIT = Path("/lib/systemd/system/gearman-job-server.service")
INIT = Path("/etc/init.d/gearman-job-server")
DEFAULTS = Path("/etc/default/gearman-job-server")


def debian_params() -> list[str]:
    """$PARAMS as /etc/default/gearman-job-server sets it (the shell does the parsing)."""
    if not DEFAULTS.exists():
        pytest.skip("Debian's gearman-job-server is not installed")
    out = subprocess.run(
        ["sh", "-c", f'. {DEFAULTS}; printf "%s" "$PARAMS"'],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def relocated(words: list[str], tmp: Path) -> list[str]:
    # The only change besides the binary: the pid and log directories move to a temporary
    # one, so the test leaves the machine's own files alone.
    text = " ".join(words)
    text = text.replace("/run/gearman", str(tmp)).replace("/var/log/gearman-job-server", str(tmp))
    return text.split()


def serve_command_for(user: str) -> tuple[list[str], dict[str, str]]:
    """How ``user`` runs ``geartrain serve``: this interpreter, or the system's of its version.

    The tests' interpreter may live where the gearman user cannot read it (a Python under
    root's home); an installed geartrain would not, so the system's Python of the same
    version stands in, reading geartrain and its dependencies from where they are.
    """
    candidates: list[tuple[list[str], dict[str, str]]] = [(SERVE, {})]
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if system.exists():
        path = [str(Path(geartrain.__file__).parents[1]), sysconfig.get_paths()["purelib"]]
        env = {"PYTHONPATH": os.pathsep.join(path)}
        candidates.append(([str(system), "-m", "geartrain", "serve"], env))
    for command, env in candidates:
        probe = ["runuser", "-u", user, "--", "env", *(f"{k}={v}" for k, v in env.items())]
        if subprocess.run([*probe, *command, "--version"], capture_output=True).returncode == 0:
            return command, env
    pytest.skip(f"the {user} user cannot run geartrain with {sys.executable} or {system}")


def start_as_debian(
    serve: list[str], env: dict[str, str], args: list[str], tmp: Path, user: str | None
) -> tuple[int, int]:
    port = free_port()
    # Only the environment differs, leaving the argument list as shipped: the port, and the
    # state directory (the default SQLite queue is there) inside the test's own directory.
    env = {**os.environ, **env, "GEARMAND_PORT": str(port), "STATE_DIRECTORY": str(tmp)}
    prefix = ["runuser", "-u", user, "--"] if user else []
    started = subprocess.run(
        [*prefix, *serve, *args], env=env, capture_output=True, timeout=30, check=False
    )
    assert started.returncode == 0, started.stderr
    wait_for_port("localhost", port)
    return port, int((tmp / "gearmand.pid").read_text())


def stop_by_pid_file(pid: int, pid_file: Path) -> None:
    os.kill(pid, signal.SIGTERM)  # what systemd sends the unit's main process
    wait_until_removed(pid_file)


def wait_until_removed(pid_file: Path) -> None:
    deadline = time.monotonic() + 15
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_file.exists()


def queue_round_trip(port: int, state: Path) -> None:
    """A background job reaches the default SQLite queue in the state directory."""
    with Conn(("localhost", port)) as conn:
        conn.submit(b"debian_unit", b"u1", b"payload", P.SUBMIT_JOB_BG)
    assert b"debian_unit\t1\t0\t0" in admin_command(port, b"status", host="localhost")
    assert (state / "geartrain.sqlite3").exists()


@pytest.fixture
def gearman_dir() -> Iterator[Path]:
    """A directory the gearman user owns and can reach (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="geartrain-debian-"))
    shutil.chown(path, "gearman", "gearman")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="Debian's units start as root")
def test_debian_systemd_unit_starts_and_stops_geartrain(gearman_dir: Path) -> None:
    if not UNIT.exists():
        pytest.skip("Debian's gearman-job-server unit is not installed")
    exec_start = next(
        line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if line.startswith("ExecStart=")
    )
    binary, *words = exec_start.split()
    assert binary.endswith("/gearmand")
    args = relocated([w for w in words if w != "$PARAMS"] + debian_params(), gearman_dir)
    user = next(
        line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if line.startswith("User=")
    )
    serve, env = serve_command_for(user)
    port, pid = start_as_debian(serve, env, args, gearman_dir, user)
    assert admin_value(port, b"version", host="localhost").startswith(b"OK ")
    queue_round_trip(port, gearman_dir)
    assert "listening on" in (gearman_dir / "gearmand.log").read_text()
    stop_by_pid_file(pid, gearman_dir / "gearmand.pid")


def init_script_arguments(script: str) -> list[str]:
    """The arguments start() hands gearmand, expanded by sh from the script's own variables."""
    call = re.search(r"--start\b.*?\s--\s(.*?)\n\s*then\b", script, re.S)
    assert call is not None, "no start-stop-daemon --start ... -- ARGS in the init script"
    variables = "\n".join(re.findall(r"^[A-Za-z_]\w*=.*$", script, re.M))
    defaults = f". {DEFAULTS}" if DEFAULTS.exists() else ""
    arguments = call[1].replace("\\\n", " ")
    shell = f'{variables}\n{defaults}\nset -- {arguments}\nprintf "%s\\n" "$@"'
    out = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


@pytest.mark.skipif(os.geteuid() != 0, reason="Debian's init script starts as root")
def test_debian_init_script_starts_and_stops_geartrain(gearman_dir: Path) -> None:
    if not INIT.exists():
        pytest.skip("Debian's gearman-job-server init script is not installed")
    args = init_script_arguments(INIT.read_text())
    assert "--pid-file=/run/gearman/gearmand.pid" in args and "--user=gearman" in args, args
    serve, env = serve_command_for("gearman")  # what the server runs once it is gearman
    port, pid = start_as_debian(serve, env, relocated(args, gearman_dir), gearman_dir, None)
    gearman = int(subprocess.run(["id", "-u", "gearman"], capture_output=True, text=True).stdout)
    assert proc_field(pid, "status", "Uid:").split()[1:] == [str(gearman)] * 4  # --user acted
    assert admin_value(port, b"version", host="localhost").startswith(b"OK ")
    queue_round_trip(port, gearman_dir)
    # stop(): start-stop-daemon --stop --oknodo --exec $DAEMON --pidfile $PIDFILE, with the
    # interpreter in gearmand's place.
    pid_file = gearman_dir / "gearmand.pid"
    interpreter = os.path.realpath(serve[0])
    stop = ["start-stop-daemon", "--stop", "--oknodo", "--exec", interpreter]
    subprocess.run([*stop, "--pidfile", str(pid_file)], check=True, timeout=30)
    wait_until_removed(pid_file)
