"""The permissions file: its schema, its errors, and which rights a peer gets."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from geartrain.server.permissions import (
    ADMIN_NONE,
    ADMIN_READ,
    ADMIN_WRITE,
    Permissions,
    PermissionsError,
    peer_address,
)
from geartrain.server.tls import Identity

RULES = """
[default]
submit = ["public-*"]

[[grant]]
identity = {cn = "worker-*"}
work = ["resize*", "thumbnail"]

[[grant]]
identity = {dns = ["ops.example.org", "ops2.example.org"]}
admin = "write"

[[grant]]
identity = {email = "*@example.org"}
admin = "read"

[[grant]]
identity = {uri = "spiffe://example.org/client/*"}
submit = ["resize*"]

[[grant]]
identity = {address = ["10.0.0.0/8", "2001:db8::/32"]}
submit = ["resize*"]
admin = "read"
"""


def identity(cn: str | None, *alt_names: str) -> Identity:
    return Identity(f"CN={cn}" if cn else "", cn, alt_names)


@pytest.fixture
def rules(tmp_path: Path) -> Permissions:
    path = tmp_path / "permissions.toml"
    path.write_text(RULES)
    return Permissions.load(path)


def test_the_default_applies_to_everyone_and_grants_add_to_it(rules: Permissions) -> None:
    stranger = rules.rights_for(None, "192.0.2.1")
    assert stranger.may_submit(b"public-feed")
    assert not stranger.may_submit(b"resize")
    assert not stranger.may_work(b"public-feed")
    assert stranger.admin == ADMIN_NONE
    worker = rules.rights_for(identity("worker-7"), "192.0.2.1")
    assert worker.may_work(b"resize-large") and worker.may_work(b"thumbnail")
    assert not worker.may_work(b"thumbnails")  # a name without a * matches itself only
    assert worker.may_submit(b"public-feed")


@pytest.mark.parametrize(
    ("who", "admin"),
    [
        (identity("anyone", "DNS:ops2.example.org"), ADMIN_WRITE),
        (identity("anyone", "email:alice@example.org"), ADMIN_READ),
        (identity("anyone", "email:alice@example.com"), ADMIN_NONE),
        (identity(None, "DNS:ops.example.org", "email:bob@example.org"), ADMIN_WRITE),
    ],
)
def test_subject_alt_names_match_by_kind(rules: Permissions, who: Identity, admin: int) -> None:
    assert rules.rights_for(who, "127.0.0.1").admin == admin


def test_a_uri_name_grants_submit(rules: Permissions) -> None:
    client = identity("c", "URI:spiffe://example.org/client/web")
    assert rules.rights_for(client, "127.0.0.1").may_submit(b"resize")
    # A DNS name that reads like the URI is a different kind of name.
    other = identity("c", "DNS:spiffe://example.org/client/web")
    assert not rules.rights_for(other, "127.0.0.1").may_submit(b"resize")


@pytest.mark.parametrize("ip", ["10.1.2.3", "::ffff:10.1.2.3", "2001:db8::5"])
def test_address_rules_match_ipv4_ipv6_and_mapped_addresses(rules: Permissions, ip: str) -> None:
    rights = rules.rights_for(None, ip)
    assert rights.may_submit(b"resize-small")
    assert rights.admin == ADMIN_READ


def test_a_peer_with_a_certificate_is_not_judged_by_its_address(rules: Permissions) -> None:
    rights = rules.rights_for(identity("someone"), "10.1.2.3")
    assert not rights.may_submit(b"resize")
    assert rights.admin == ADMIN_NONE


def test_an_address_that_is_no_ip_matches_no_address_rule(rules: Permissions) -> None:
    assert peer_address("-") is None
    assert not rules.rights_for(None, "-").may_submit(b"resize")


def test_peers_matching_the_same_grants_share_their_rights(rules: Permissions) -> None:
    assert rules.rights_for(None, "10.0.0.1") is rules.rights_for(None, "10.200.0.1")
    assert rules.rights_for(None, "10.0.0.1") is not rules.rights_for(None, "192.0.2.1")


def test_status_needs_submit_on_the_function_or_admin_read(rules: Permissions) -> None:
    stranger = rules.rights_for(None, "192.0.2.1")
    assert stranger.may_see_status(b"public-x")
    assert not stranger.may_see_status(b"resize")
    assert rules.rights_for(identity("x", "email:a@example.org"), "-").may_see_status(b"resize")


def test_an_empty_file_denies_everything(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("")
    rights = Permissions.load(path).rights_for(None, "127.0.0.1")
    assert not rights.may_submit(b"x") and not rights.may_work(b"x")
    assert rights.admin == ADMIN_NONE


def test_undecodable_bytes_in_function_names_are_matched_by_wildcards() -> None:
    raw = {"default": {"submit": ["a*"], "work": ["*"]}}
    rights = Permissions.parse(raw).rights_for(None, "127.0.0.1")
    assert rights.may_submit(b"a\xff")
    assert not rights.may_submit(b"\xffa")
    assert rights.may_work(b"\xff\xfe")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[default\n", "cannot read the permissions file"),
        ("[defaults]\n", "unknown section 'defaults'"),
        ("[default]\nsubmit = 'resize'\n", "[default] submit must be a list"),
        ("[default]\nadmin = 'all'\n", 'admin must be "none", "read" or "write"'),
        ("[default]\nidentity = {cn = 'x'}\n", "[default]: unknown key 'identity'"),
        ("[[grant]]\nsubmit = ['x']\n", "grant #1: identity must be a table with one key"),
        ("[[grant]]\nidentity = {cn = 'a', dns = 'b'}\n", "identity must be a table with one"),
        ("[[grant]]\nidentity = {ip = '10.0.0.1'}\n", "grant #1: unknown identity key 'ip'"),
        ("[[grant]]\nidentity = {address = '10.0.0.0/33'}\n", "'10.0.0.0/33' is not an address"),
        ("[[grant]]\nidentity = {cn = 'a'}\nwork = [1]\n", "grant #1 work must be a list"),
        ("[[grant]]\nidentity = {cn = 'a'}\nsubmt = ['x']\n", "grant #1: unknown key 'submt'"),
        ("grant = 1\n", "grant must be [[grant]] tables"),
    ],
)
def test_mistakes_are_refused_with_the_file_and_the_place(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "permissions.toml"
    path.write_text(text)
    with pytest.raises(PermissionsError) as refused:
        Permissions.load(path)
    assert message in str(refused.value)
    assert str(path) in str(refused.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PermissionsError, match=r"cannot read the permissions file .*absent\.toml"):
        Permissions.load(tmp_path / "absent.toml")


def test_the_per_function_cache_is_bounded() -> None:
    rights = Permissions.parse({"default": {"submit": ["f-1*"]}}).rights_for(None, "-")
    decided = [rights.may_submit(b"f-%d" % n) for n in range(10_000)]
    assert decided.count(True) == 1111  # f-1, f-10..f-19, f-100..f-199, f-1000..f-1999
    assert len(rights._submit_allowed) <= 4096


def test_the_documented_example_means_what_its_comments_say() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    section = page[page.index("## Permissions") :]
    example = section[section.index("```toml\n") + 8 : section.index("```\n", 8)]
    rules = Permissions.parse(tomllib.loads(example))
    worker = rules.rights_for(identity("worker-3"), "10.0.0.7")
    assert worker.may_work(b"resize-png") and not worker.may_submit(b"resize-png")
    assert worker.may_submit(b"public-feed")  # the default's
    ops = rules.rights_for(identity("x", "DNS:ops-2.example.org"), "192.0.2.1")
    assert ops.admin == ADMIN_WRITE
    network = rules.rights_for(None, "fd00::7")
    assert network.may_submit(b"resize") and network.admin == ADMIN_READ
