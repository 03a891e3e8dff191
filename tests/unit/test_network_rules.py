"""Network rules (IPv4 and IPv6) and the client address they are checked against."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from openkeyvault.access.network import (
    ClientAddresses,
    InvalidNetworkRule,
    NetworkAcls,
    parse_address,
    parse_rule,
)
from openkeyvault.config import ENV_VAR, Settings, default_trusted_proxies


def _acls(*rules: str, action: str = "Deny") -> NetworkAcls:
    return NetworkAcls.from_wire({"defaultAction": action,
                                  "ipRules": [{"value": r} for r in rules]})


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_allow_lets_everyone_in_deny_only_the_rules() -> None:
    assert _acls(action="Allow").allows(_ip("203.0.113.9"))
    assert _acls(action="Allow").allows(None)
    deny = _acls("10.1.0.0/16", "192.0.2.7")
    assert deny.allows(_ip("10.1.255.255"))
    assert deny.allows(_ip("192.0.2.7"))
    assert not deny.allows(_ip("10.2.0.1"))
    assert not deny.allows(_ip("192.0.2.8"))
    assert not deny.allows(None)
    assert not _acls().allows(_ip("127.0.0.1"))


def test_ipv6_rules() -> None:
    deny = _acls("::1", "2001:db8:abcd::/48")
    assert deny.allows(_ip("::1"))
    assert deny.allows(_ip("2001:db8:abcd:12::5"))
    assert not deny.allows(_ip("2001:db8:abce::1"))
    assert not deny.allows(_ip("127.0.0.1"))
    assert not _acls("0.0.0.0/0").allows(_ip("::1"))  # an IPv4 rule never matches IPv6
    assert _acls("::/0").allows(_ip("2001:db8::1"))


def test_ipv4_mapped_addresses_count_as_ipv4() -> None:
    assert parse_address("::ffff:127.0.0.1") == _ip("127.0.0.1")
    assert _acls("127.0.0.1").allows(parse_address("::ffff:127.0.0.1"))


@pytest.mark.parametrize("bad", ["", " ", "10.0.0.1/8", "10.0.0.0/33", "1.2.3", "::g",
                                 "example.com", "10.0.0.0/8 extra", "1" * 65, None, 7])
def test_malformed_rules_are_refused(bad: object) -> None:
    with pytest.raises(InvalidNetworkRule):
        parse_rule(bad)


def test_rules_are_stored_as_cidr() -> None:
    assert str(parse_rule("192.0.2.7")) == "192.0.2.7/32"
    assert str(parse_rule("2001:DB8::/32")) == "2001:db8::/32"


PROXY = "10.0.0.5"


@pytest.fixture
def behind_proxy() -> ClientAddresses:
    return ClientAddresses(["10.0.0.0/24", "fd00::/8"])


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    plain = ClientAddresses()
    assert plain.resolve("127.0.0.1", ["203.0.113.9"]) == _ip("127.0.0.1")
    assert plain.resolve(None) is None
    assert plain.resolve("not-an-address") is None


def test_forwarded_for_is_honoured_only_from_a_trusted_proxy(
        behind_proxy: ClientAddresses) -> None:
    assert behind_proxy.resolve(PROXY, ["203.0.113.9"]) == _ip("203.0.113.9")
    assert behind_proxy.resolve("198.51.100.1", ["203.0.113.9"]) == _ip("198.51.100.1")
    assert behind_proxy.resolve(PROXY, []) == _ip(PROXY)


def test_the_right_most_untrusted_entry_is_the_client(behind_proxy: ClientAddresses) -> None:
    # A client can put anything on the left; only what trusted proxies appended counts.
    assert behind_proxy.resolve(PROXY, ["1.1.1.1, 203.0.113.9, 10.0.0.7"]) == \
        _ip("203.0.113.9")
    assert behind_proxy.resolve(PROXY, ["1.1.1.1", "203.0.113.9"]) == _ip("203.0.113.9")
    assert behind_proxy.resolve(PROXY, ["2001:db8::7, fd00::1"]) == _ip("2001:db8::7")
    # Only trusted proxies: the left-most is where the request came from.
    assert behind_proxy.resolve(PROXY, ["10.0.0.9, 10.0.0.8"]) == _ip("10.0.0.9")


@pytest.mark.parametrize("header", ["garbage", "203.0.113.9, nonsense", "203.0.113.9,",
                                    "[2001:db8::1]:443", "203.0.113.9:8080", "",
                                    "1.1.1.1," * 2000])
def test_malformed_forwarded_for_falls_back_to_the_proxy(behind_proxy: ClientAddresses,
                                                         header: str) -> None:
    assert behind_proxy.resolve(PROXY, [header]) == _ip(PROXY)


def test_trusted_proxies_setting_reaches_the_workers(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setenv("OKV_TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8  192.0.2.1")
    assert default_trusted_proxies() == ("10.0.0.0/8", "fd00::/8", "192.0.2.1")
    monkeypatch.delenv("OKV_TRUSTED_PROXIES")
    assert default_trusted_proxies() == ()
    settings = Settings(data_dir=tmp_path, trusted_proxies=("10.0.0.0/8",))
    monkeypatch.setenv(ENV_VAR, settings.to_env())
    assert Settings.from_env() == settings
