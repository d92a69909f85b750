"""The server as an operator runs it: a real process, signals, files, daemon mode."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from geartrain.protocol.codec import Decoder, Packet, as_bytes, encode_request
from geartrain.protocol.constants import RES
from geartrain.protocol.constants import PacketType as P
from tests.support import free_port, start_geartrain, wait_for_port


def _connect(port: int, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_packets(sock: socket.socket, count: int) -> list[Packet]:
    decoder = Decoder(expect=RES, text=False)
    packets: list[Packet] = []
    while len(packets) < count:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        packets.extend(e for e in decoder.feed(chunk) if isinstance(e, Packet))
    return packets


def _serve(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``geartrain serve ARGS`` to completion (daemon parents and bad options)."""
    return subprocess.run(
        [sys.executable, "-m", "geartrain", "serve", *args],
        capture_output=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def _running_job(port: int) -> tuple[socket.socket, socket.socket, Packet]:
    """A worker running a foreground job a client waits for; returns JOB_CREATED too."""
    worker, client = _connect(port), _connect(port)
    worker.sendall(encode_request(P.CAN_DO, b"slow"))
    client.sendall(encode_request(P.SUBMIT_JOB, b"slow", b"", data=b"x"))
    (created,) = _read_packets(client, 1)
    worker.sendall(encode_request(P.GRAB_JOB))
    (assigned,) = _read_packets(worker, 1)
    assert assigned.type == P.JOB_ASSIGN
    return worker, client, created


def _wait_exit(proc: subprocess.Popen[bytes], seconds: float) -> int | None:
    try:
        return proc.wait(seconds)
    except subprocess.TimeoutExpired:
        return None


def test_sigterm_stops_cleanly_and_removes_the_pid_file(tmp_path: Path) -> None:
    pid_file = tmp_path / "gt.pid"
    server = start_geartrain(["--pid-file", str(pid_file)])
    try:
        deadline = time.monotonic() + 5
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert int(pid_file.read_text()) == server.proc.pid
        server.proc.send_signal(signal.SIGTERM)
        assert _wait_exit(server.proc, 10) == 0
        assert not pid_file.exists()
    finally:
        server.kill()


def test_sigusr1_lets_running_jobs_finish_then_exits(tmp_path: Path) -> None:
    server = start_geartrain()
    try:
        worker, client, created = _running_job(server.port)
        server.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        refused = False
        while time.monotonic() < deadline and not refused:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
                time.sleep(0.05)
            except OSError:
                refused = True
        assert refused, "the listener should close at once"
        assert server.proc.poll() is None, "the running job keeps the server alive"
        worker.sendall(encode_request(P.WORK_COMPLETE, created.args[0], data=b"done"))
        (result,) = _read_packets(client, 1)
        assert (result.type, as_bytes(result.data)) == (P.WORK_COMPLETE, b"done")
        assert _wait_exit(server.proc, 10) == 0
        worker.close()
        client.close()
    finally:
        server.kill()


def test_graceful_stop_never_hangs_forever() -> None:
    server = start_geartrain(["--graceful-timeout", "0.5"])
    try:
        worker, client, _ = _running_job(server.port)
        server.proc.send_signal(signal.SIGUSR1)
        assert _wait_exit(server.proc, 10) == 0
        worker.close()
        client.close()
    finally:
        server.kill()


def test_daemon_parent_exits_zero_only_once_listening(tmp_path: Path) -> None:
    port = free_port()
    pid_file, log_file = tmp_path / "d.pid", tmp_path / "d.log"
    done = _serve(
        "-d",
        "-L",
        "127.0.0.1",
        "-p",
        str(port),
        "--queue",
        "none",
        "--pid-file",
        str(pid_file),
        "--log-file",
        str(log_file),
    )
    assert done.returncode == 0, done.stderr
    pid = int(pid_file.read_text())
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # no waiting needed
        assert b"listening on 127.0.0.1 port %d" % port in log_file.read_bytes()
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_file.exists()


def test_daemon_parent_fails_when_the_port_is_taken(tmp_path: Path) -> None:
    log = str(tmp_path / "d.log")  # without -l a daemon logs into the state directory
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve("-d", "-L", "127.0.0.1", "-p", str(port), "--queue", "none", "-l", log)
    assert done.returncode == 1
    assert b"cannot listen" in done.stderr


def test_config_file_and_several_listen_addresses(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("IPv6 loopback not configured")
    port = free_port()
    config = tmp_path / "geartrain.toml"
    config.write_text(
        f'[server]\nlisten = ["127.0.0.1", "::1"]\nport = {port}\nqueue = "none"\n'
        'job-handle-prefix = "H:conf"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "geartrain", "serve", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
        wait_for_port("::1", port, proc=proc)
        sock = _connect(port, "::1")
        sock.sendall(encode_request(P.SUBMIT_JOB_BG, b"f", b"", data=b"x"))
        (created,) = _read_packets(sock, 1)
        assert created.args[0] == b"H:conf:1"
        sock.sendall(b"workers\n")
        reply = b""
        while not reply.endswith(b".\n"):
            reply += sock.recv(4096)
        assert b" ::1 - :" in reply
        sock.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_sighup_reopens_the_log_file(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    server = start_geartrain(["--log-file", str(log)])
    try:
        rotated = tmp_path / "server.log.1"
        log.rename(rotated)
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert log.exists()
        assert b"listening on" in rotated.read_bytes()
    finally:
        server.stop()
    assert b"log file reopened" in log.read_bytes()


def test_bad_options_fail_fast_with_a_message() -> None:
    done = _serve("--queue", "none", "--verbose", "LOUD")
    assert done.returncode == 2 and b"LOUD" in done.stderr
    done = _serve("--queue", "none", "--job-handle-prefix", "H:" + "x" * 60)
    assert done.returncode == 2 and b"prefix too long" in done.stderr
    done = _serve("--queue", "none", "--import-gearmand", "sqlite:///nowhere.db")
    assert done.returncode == 1 and b"needs a persistent queue" in done.stderr
