"""``--retry`` on the command line and ``[retry]`` in the config file."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from geartrain.cli.serve import _settings, serve
from geartrain.server.config import Settings, load_file
from geartrain.server.retry import Backoff, Outcome


def test_retry_options_are_kept_in_order_and_parsed() -> None:
    settings = _settings(None, {"retry": ("img.*=3", "*=2,backoff=fixed,min=1")})
    policies = settings.retry_policies()
    assert settings.retry == ["img.*=3", "*=2,backoff=fixed,min=1"]
    assert [p.pattern for p in policies.policies] == ["img.*", "*"]
    assert policies.policies[1].backoff is Backoff.FIXED


def test_a_malformed_retry_option_is_a_usage_error() -> None:
    result = CliRunner().invoke(serve, ["--retry", "resize=3,backoff=linear", "--check-args"])
    assert result.exit_code == 2
    assert "backoff must be fixed or exponential" in result.output


def test_a_retry_table_beside_server_in_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "geartrain.toml"
    config.write_text(
        "[server]\nport = 4731\n\n"
        "[retry]\n"
        '"report.*" = "5,backoff=exponential,min=10,max=600"\n'
        '"mail.send" = { attempts = 3, backoff = "fixed", min = 30, on = ["fail", "lost"] }\n'
        '"*" = 2\n'
    )
    values = load_file(config)
    settings = Settings(**values)
    settings.validate()
    first, second, third = settings.retry_policies().policies
    assert (first.pattern, first.attempts, first.max_delay) == ("report.*", 5, 600.0)
    assert (second.backoff, second.min_delay) == (Backoff.FIXED, 30.0)
    assert second.outcomes == Outcome.FAIL | Outcome.LOST
    assert (third.pattern, third.attempts) == ("*", 2)


def test_a_retry_table_at_top_level_and_its_errors(tmp_path: Path) -> None:
    config = tmp_path / "geartrain.toml"
    config.write_text('port = 4731\n[retry]\n"f" = 3\n')
    assert load_file(config)["retry"] == ["f=3"]
    config.write_text('[retry]\n"f" = "3,on=crash"\n')
    with pytest.raises(ValueError, match=r"\[retry\].*unknown outcome 'crash'"):
        load_file(config)


def test_the_command_line_replaces_the_file_s_policies(tmp_path: Path) -> None:
    config = tmp_path / "geartrain.toml"
    config.write_text('[retry]\n"f" = 3\n')
    assert _settings(str(config), {"retry": ("g=4",)}).retry == ["g=4"]
    assert _settings(str(config), {"retry": ()}).retry == ["f=3"]
