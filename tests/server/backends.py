"""Private database servers on free ports that a test may stop and start at will.

The machine's own PostgreSQL, MariaDB and Redis are shared and must stay up; these
throw-away instances live in a temporary directory and belong to one test.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import free_port, wait_for_port


class PrivateServer:
    """Base: a server process with start/stop around a fixed data directory and port."""

    name = "server"

    def __init__(self, owner: str | None = None) -> None:
        # Not under pytest's tmp_path: that is private to root, and PostgreSQL and
        # MariaDB refuse to run as root, so their user must reach the directory.
        self.root = Path(tempfile.mkdtemp(prefix=f"geartrain-{self.name}-"))
        if owner is not None and os.geteuid() == 0:
            shutil.chown(self.root, owner)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> str | None:
        """Why this server cannot run here, or None."""
        return None

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self, down_for: float = 0.5) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()


class PrivateRedis(PrivateServer):
    """redis-server with an fsync-always append-only file: a restart loses nothing."""

    name = "redis"

    @staticmethod
    def available() -> str | None:
        return None if shutil.which("redis-server") else "redis-server is not installed"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.root),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


def _pg_bin(tool: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    return found[-1] if found else None


class PrivatePostgres(PrivateServer):
    """A PostgreSQL cluster of its own (initdb), run as the postgres user."""

    name = "postgres"

    @staticmethod
    def available() -> str | None:
        if _pg_bin("initdb") is None or _pg_bin("pg_ctl") is None:
            return "PostgreSQL server binaries are not installed"
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            return "runuser is needed to run PostgreSQL as a non-root user"
        return None

    def __init__(self) -> None:
        super().__init__(owner="postgres")
        self.data = self.root / "pgdata"
        self._as_owner(
            [
                str(_pg_bin("initdb")),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )

    def _as_owner(self, cmd: list[str]) -> None:
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._as_owner(
            [
                str(_pg_bin("pg_ctl")),
                "-D",
                str(self.data),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "-l",
                str(self.root / "pg.log"),
                "start",
            ]
        )
        wait_for_port("127.0.0.1", self.port)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._as_owner(
                [
                    str(_pg_bin("pg_ctl")),
                    "-D",
                    str(self.data),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "60",
                    "stop",
                ]
            )


class PrivateMariadb(PrivateServer):
    """A MariaDB server of its own (mariadb-install-db), root without a password."""

    name = "mysql"

    @staticmethod
    def available() -> str | None:
        if not shutil.which("mariadb-install-db") or not os.path.exists("/usr/sbin/mariadbd"):
            return "MariaDB server binaries are not installed"
        return None

    def __init__(self) -> None:
        super().__init__(owner="mysql")
        self.data = self.root / "mariadb"
        self.user = "mysql" if os.geteuid() == 0 else os.environ.get("USER", "")
        subprocess.run(
            [
                "mariadb-install-db",
                f"--datadir={self.data}",
                f"--user={self.user}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )

    @property
    def url(self) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/mysql"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "/usr/sbin/mariadbd",
                "--no-defaults",
                f"--datadir={self.data}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.root}/mariadb.sock",
                f"--pid-file={self.root}/mariadb.pid",
                f"--user={self.user}",
                "--skip-log-bin",
                "--innodb-flush-log-at-trx-commit=1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.port, timeout=60, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)
