"""TLS settings: checked before anything starts, wherever they come from."""

from __future__ import annotations

from pathlib import Path

import pytest

from geartrain.server.app import Server, StartupError
from geartrain.server.config import Settings, load_file
from geartrain.server.tls import identity_of
from tests.tls.conftest import tls_settings
from tests.tls.pki import PKI


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"ssl_verify_client": "maybe"}, "ssl-verify-client must be"),
        ({"ssl_min_version": "TLSv1"}, "ssl-min-version must be"),
        ({"ssl_port": 70000}, "ssl-port 70000 out of range"),
        ({"ssl_handshake_timeout": 0}, "ssl-handshake-timeout must be"),
    ],
)
def test_bad_tls_values_are_refused(values: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Settings(**values).validate()  # type: ignore[arg-type]


def test_the_config_file_holds_tls_options(tmp_path: Path) -> None:
    config = tmp_path / "geartrain.toml"
    config.write_text('[server]\nssl-port = 4731\nssl-listen = ["0.0.0.0"]\n')
    assert load_file(config) == {"ssl_port": 4731, "ssl_listen": ["0.0.0.0"]}


async def test_a_missing_certificate_stops_start_up_before_anything_opens(pki: PKI) -> None:
    settings = tls_settings(pki, ssl=True, ssl_certificate=str(pki.directory / "missing.pem"))
    with pytest.raises(StartupError, match="cannot load the TLS certificate"):
        await Server(settings).start()


def test_uvloop_is_refused_for_tls_listeners(pki: PKI) -> None:
    uvloop = pytest.importorskip("uvloop")
    server = Server(tls_settings(pki, ssl=True))
    loop = uvloop.new_event_loop()
    try:
        with pytest.raises(StartupError, match="asyncio's own event loop"):
            loop.run_until_complete(server.start())
    finally:
        loop.close()
    assert not server.listeners


def test_an_identity_holds_the_subject_and_alternative_names() -> None:
    peercert = {
        "subject": ((("organizationName", "Example"),), (("commonName", "worker-1"),)),
        "subjectAltName": (("DNS", "worker-1"), ("IP Address", "10.0.0.5"), ("URI", "spiffe://x")),
    }
    identity = identity_of(peercert)
    assert identity is not None
    assert identity.subject == "O=Example,CN=worker-1"
    assert identity.alt_names == ("DNS:worker-1", "IP:10.0.0.5", "URI:spiffe://x")
    assert identity.names == ("worker-1", "10.0.0.5", "spiffe://x")
    assert identity_of({}) is None and identity_of(None) is None
