"""Client-side TLS options: libgearman's variables, and contexts made from the options."""

from __future__ import annotations

import ssl

import pytest

from geartrain.tls import ClientTLS, TLSOptions
from tests.tls.pki import PKI


def test_from_environment_reads_libgearmans_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEARMAND_CA_CERTIFICATE", "ca.pem")
    monkeypatch.setenv("GEARMAN_CLIENT_PEM", "client.pem")
    monkeypatch.setenv("GEARMAN_CLIENT_KEY", "")
    options = TLSOptions.from_environment(server_name="gear.example.org")
    assert options == TLSOptions(
        ca_file="ca.pem", certificate="client.pem", key=None, server_name="gear.example.org"
    )


def test_a_context_checks_the_server_unless_told_not_to(pki: PKI) -> None:
    checked = pki.options(pki.client("c")).context()
    assert checked.verify_mode == ssl.CERT_REQUIRED and checked.check_hostname
    assert checked.minimum_version == ssl.TLSVersion.TLSv1_2
    unchecked = TLSOptions(verify=False, min_version="TLSv1.3").context()
    assert unchecked.verify_mode == ssl.CERT_NONE and not unchecked.check_hostname
    assert unchecked.minimum_version == ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (TLSOptions(min_version="TLSv1"), "min_version must be one of"),
        (TLSOptions(key="client.key"), "key was given without its certificate"),
    ],
)
def test_unusable_options_are_refused(options: TLSOptions, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        options.context()


def test_a_missing_file_is_an_os_error(pki: PKI) -> None:
    with pytest.raises(OSError):
        TLSOptions(ca_file=str(pki.directory / "missing.pem")).context()


def test_the_name_checked_is_the_host_unless_one_is_given(pki: PKI) -> None:
    context = ssl.create_default_context()
    assert ClientTLS(context).hostname("10.0.0.5") == "10.0.0.5"
    named = ClientTLS(pki.options(server_name="gear.example.org"))
    assert named.hostname("10.0.0.5") == "gear.example.org"
    assert ClientTLS.of(None) is None
