"""Helpers for running real TLS clients (openssl, libgearman, Perl) against a server."""

from __future__ import annotations

import functools
import os
import selectors
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence

import pytest

from tests.interop.helpers import MISSING
from tests.support import GEARMAND, start_gearmand
from tests.tls.pki import PKI


def need(program: str, package: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} {MISSING}: apt-get install {package}")
    return path


def talk(cmd: Sequence[str], lines: bytes, until: bytes, timeout: float = 15.0) -> bytes:
    """Start ``cmd``, write ``lines``, read its output until ``until`` appears, then stop it.

    For interactive programs (openssl s_client) that would close the connection as soon as
    their input ends, before the server's reply has come.
    """
    proc = subprocess.Popen(
        list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdin is not None and proc.stdout is not None
    output = b""
    try:
        proc.stdin.write(lines)
        proc.stdin.flush()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while until not in output and time.monotonic() < deadline:
                if selector.select(max(0.0, deadline - time.monotonic())):
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    output += chunk
    finally:
        proc.kill()
        proc.communicate(timeout=5)  # reaps it and closes the pipes
    return output


def s_client(port: int, pki: PKI, *extra: str) -> list[str]:
    """``openssl s_client`` trusting our CA, quiet, failing on a bad server certificate."""
    return [
        need("openssl", "openssl"),
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-CAfile",
        str(pki.ca_file),
        "-verify_return_error",
        "-quiet",
        *extra,
    ]


@functools.cache
def libgearman_speaks_tls() -> bool:
    """Whether ``gearadmin -S`` starts a TLS handshake (Debian's build sends plain text)."""
    gearadmin = need("gearadmin", "gearman-tools")
    first = _first_bytes([gearadmin, "-S", "-h", "127.0.0.1", "--server-version"])
    return first.startswith(b"\x16\x03")  # a TLS handshake record


def gearmand_speaks_tls(pki: PKI) -> bool:
    """Whether ``gearmand --ssl`` answers a TLS handshake (issue #207: a build without TLS
    accepts --ssl and stays plain text)."""
    if GEARMAND is None:
        pytest.skip(f"gearmand {MISSING}: apt-get install gearman-job-server")
    server = start_gearmand(args=gearmand_tls_args(pki))
    try:
        context = ssl.create_default_context(cafile=str(pki.ca_file))
        with socket.create_connection(server.address, timeout=5) as raw:
            try:
                with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                    return True
            except (ssl.SSLError, OSError):
                return False
    finally:
        server.stop()


def gearmand_tls_args(pki: PKI) -> list[str]:
    return [
        "--ssl",
        f"--ssl-ca-file={pki.ca_file}",
        f"--ssl-certificate={pki.server_certificate}",
        f"--ssl-key={pki.server_key}",
    ]


def _first_bytes(cmd: list[str], timeout: float = 5.0) -> bytes:
    """The first bytes ``cmd`` sends to a listener made for it (its ``-p`` is appended)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(timeout)
        port = listener.getsockname()[1]
        proc = subprocess.Popen(
            [*cmd, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(timeout)
                return conn.recv(16)
        except OSError:
            return b""
        finally:
            proc.kill()
            proc.wait(5)
