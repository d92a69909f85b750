"""gearmand's queue plug-in options, option files and user switching, read the way we read them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from geartrain.cli import serve as serve_module
from geartrain.cli.gearmand_options import GearmandQueue, expand_option_files, gearmand_queue
from geartrain.cli.serve import serve
from geartrain.server.config import Settings
from tests.tls.pki import make_pki


@pytest.mark.parametrize(
    ("conninfo", "url"),
    [
        (
            "host=127.0.0.1 port=5432 user=gear password=s3cret dbname=jobs",
            "postgresql://gear:s3cret@127.0.0.1:5432/jobs",
        ),
        # libpq allows blanks around '=', quoted values with escapes, and any other keyword.
        (
            "host = db.example  dbname=jobs password='a b\\'c' sslmode=require",
            "postgresql://:a%20b%27c@db.example/jobs?sslmode=require",
        ),
        ("host=/var/run/postgresql dbname=jobs", "postgresql:///jobs?host=/var/run/postgresql"),
        ("host=::1 dbname=jobs", "postgresql://[::1]/jobs"),
        ("postgres://gear@db/jobs", "postgres://gear@db/jobs"),  # a URL stays as given
    ],
)
def test_libpq_conninfo_becomes_our_postgres_url(conninfo: str, url: str) -> None:
    queue = gearmand_queue("Postgres", {"libpq_conninfo": conninfo})
    assert queue == GearmandQueue(url, url)  # gearmand's default table is imported


def test_libpq_conninfo_that_is_not_key_value_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot read 'dbname' as key=value"):
        gearmand_queue("postgres", {"libpq_conninfo": "host=db dbname"})


def test_gearmand_tables_become_our_prefix_and_the_import_source(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    queue = gearmand_queue("libsqlite3", {"libsqlite3_db": str(db), "libsqlite3_table": "q2"})
    assert queue == GearmandQueue(f"sqlite:///{db}", f"sqlite:///{db}?table=q2", "q2")
    mysql = gearmand_queue(
        "MySQL",
        {
            "mysql_host": "db",
            "mysql_port": 3307,
            "mysql_user": "gear",
            "mysql_password": "p@ss",
            "mysql_db": "jobs",
            "mysql_table": "t1",
        },
    )
    assert mysql == GearmandQueue(
        "mysql://gear:p%40ss@db:3307/jobs", "mysql://gear:p%40ss@db:3307/jobs?table=t1", "t1"
    )


def test_mysql_and_redis_defaults_are_gearmands() -> None:
    assert gearmand_queue("mysql", {"mysql_db": "jobs"}).url == "mysql://localhost:3306/jobs"
    with pytest.raises(ValueError, match="needs --mysql-db"):
        gearmand_queue("MySQL", {})
    redis = gearmand_queue(
        "redis", {"redis_server": "cache", "redis_password": "pw", "redis_prefix": "gq"}
    )
    assert redis == GearmandQueue("redis://:pw@cache:6379/0", None, "gq")
    assert gearmand_queue("redis", {}).url == "redis://127.0.0.1:6379/0"
    assert gearmand_queue("builtin", {}) == GearmandQueue("none")


def test_option_file_tokens_stand_where_the_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "opts").write_text("--port=4731 # comment\n--queue-type 'lib sqlite'\n")
    args = ["-v", f"@{tmp_path / 'opts'}", "-p", "1", "--config-file", str(tmp_path / "opts")]
    twice = ["--port=4731", "--queue-type", "lib sqlite"]
    assert expand_option_files(args) == ["-v", *twice, "-p", "1", *twice]
    with pytest.raises(ValueError, match="cannot read option file"):
        expand_option_files([f"--config-file={tmp_path / 'missing'}"])


def test_switching_users_needs_root_and_a_known_user(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    unknown = runner.invoke(serve, ["-u", "no-such-user-here", "--check-args"])
    assert unknown.exit_code == 2 and "-u no-such-user-here: no such user" in unknown.output
    # As an ordinary user, as gearmand: switching to another user is refused, not ignored.
    monkeypatch.setattr(os, "geteuid", lambda: 12345)
    refused = runner.invoke(serve, ["-u", "nobody", "--check-args"])
    assert refused.exit_code == 2 and "must be root to switch users" in refused.output


def test_file_descriptor_limit_that_cannot_be_had_is_fatal() -> None:
    result = CliRunner().invoke(serve, ["-f", str(2**62), "--check-args"])
    assert result.exit_code == 2 and "cannot raise the open-files limit" in result.output


def test_each_option_that_does_nothing_here_gets_its_notice() -> None:
    options: dict[str, object] = {name: None for name in serve_module._GEARMAND_ONLY}
    options |= {"protocol": ("http",), "queue": None, "more_verbose": 0}
    options |= {"threads": 8, "hashtable_buckets": 991, "round_robin": True}
    notices = serve_module._apply_gearmand_options(options)
    expected = ["-t/--threads", "--hashtable-buckets", "-R is the rule"]
    assert len(notices) == len(expected)
    for notice, option in zip(notices, expected, strict=True):
        assert option in notice, notice
    assert not set(serve_module._GEARMAND_ONLY) & set(options)  # only our settings are left


def _settings_of(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> Settings:
    """The settings ``geartrain serve ARGS`` would run a server with (none is started)."""
    seen: list[Settings] = []

    def run(settings: Settings, notify: int | None) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(serve_module, "_run", run)
    monkeypatch.setattr(serve_module, "_configure_logging", lambda settings: None)
    result = CliRunner().invoke(serve, args)
    assert result.exit_code == 0, result.output
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize(
    ("args", "port"),
    [
        ([], None),  # off by default
        (["-r", "http"], 8080),  # gearmand's module on its default port
        (["-r", "HTTP", "--http-port", "8181"], 8181),
        (["--http-port", "0"], 0),  # --http-port alone turns it on, as on gearmand
    ],
)
def test_http_listener_follows_gearmands_options(
    monkeypatch: pytest.MonkeyPatch, args: list[str], port: int | None
) -> None:
    assert _settings_of(monkeypatch, args).http_port == port


def test_http_listen_addresses_repeat_and_the_config_file_sets_the_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "geartrain.toml"
    config.write_text('[server]\nhttp-port = 9099\nhttp-listen = ["127.0.0.1"]\n')
    from_file = _settings_of(monkeypatch, ["-c", str(config), "-r", "http"])
    assert (from_file.http_port, from_file.http_listen) == (9099, ["127.0.0.1"])
    args = ["--http-port", "9100", "--http-listen", "127.0.0.1", "--http-listen", "::1"]
    given = _settings_of(monkeypatch, args)
    assert (given.http_port, given.http_listen) == (9100, ["127.0.0.1", "::1"])


def test_http_port_out_of_range_is_refused() -> None:
    result = CliRunner().invoke(serve, ["--http-port", "70000", "--check-args"])
    assert result.exit_code == 2 and "http-port 70000 out of range" in result.output


def test_gearmands_tls_options_and_variables_are_our_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = make_pki(tmp_path)
    assert not {"ssl", "ssl_ca_file", "ssl_certificate", "ssl_key"} & set(
        serve_module._GEARMAND_ONLY
    )
    monkeypatch.setenv("GEARMAND_SERVER_PEM", str(pki.server_certificate))
    monkeypatch.setenv("GEARMAND_SERVER_KEY", str(pki.server_key))
    monkeypatch.setenv("GEARMAND_CA_CERTIFICATE", str(pki.server_certificate))
    settings = serve_module._settings(None, {"ssl": True, "ssl_ca_file": str(pki.ca_file)})
    assert settings.ssl
    assert settings.ssl_certificate == str(pki.server_certificate)
    assert settings.ssl_key == str(pki.server_key)
    assert settings.ssl_ca_file == str(pki.ca_file)  # the option wins over the variable
    result = CliRunner().invoke(serve, ["--ssl", "--queue", "none", "--check-args"])
    assert result.exit_code == 0, result.output


def test_max_memory_takes_a_size_with_a_suffix_and_refuses_nonsense(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _settings_of(monkeypatch, ["--max-memory", "64M"]).max_memory == 64 * 1024 * 1024
    result = CliRunner().invoke(serve, ["--max-memory", "12X", "--check-args"])
    assert result.exit_code == 2 and "--max-memory" in result.output
