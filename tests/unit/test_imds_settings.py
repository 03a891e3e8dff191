"""When the IMDS-style token endpoint is served, and what the server says about it."""

from __future__ import annotations

from pathlib import Path

import pytest

from openkeyvault.api.identity import imds_enabled, imds_notice, is_loopback
from openkeyvault.config import Settings


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("127.255.255.254", True), ("::1", True),
    ("[::1]", True), ("::ffff:127.0.0.1", True), ("localhost", True), ("LOCALHOST", True),
    ("0.0.0.0", False), ("::", False), ("", False), (None, False),  # noqa: S104
    ("192.0.2.2", False), ("10.0.0.1", False), ("fd00::2", False), ("::ffff:10.0.0.1", False),
    ("example.com", False), ("localhost.example.com", False), ("127.0.0.1.nip.io", False),
])
def test_is_loopback(address: str | None, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def settings(host: str, imds: bool | None = None, dev: bool = True) -> Settings:
    return Settings(data_dir=Path("/nonexistent"), host=host, imds=imds, dev=dev)


@pytest.mark.parametrize(("host", "imds", "enabled"), [
    ("127.0.0.1", None, True), ("::1", None, True), ("localhost", None, True),
    ("127.0.0.1", False, False),
    ("0.0.0.0", None, False), ("192.0.2.2", None, False), ("::", None, False),  # noqa: S104
    ("0.0.0.0", True, True), ("192.0.2.2", True, True),  # noqa: S104
])
def test_imds_enabled(host: str, imds: bool | None, enabled: bool) -> None:
    assert imds_enabled(settings(host, imds)) is enabled


def test_imds_is_off_outside_dev_mode() -> None:
    assert not imds_enabled(settings("127.0.0.1", True, dev=False))
    assert imds_notice(settings("0.0.0.0", None, dev=False)) is None  # noqa: S104


def test_notices() -> None:
    assert imds_notice(settings("127.0.0.1")) is None
    off = imds_notice(settings("0.0.0.0"))  # noqa: S104
    assert off is not None and "is off" in off and "0.0.0.0" in off and "--imds" in off
    on = imds_notice(settings("0.0.0.0", True))  # noqa: S104
    assert on is not None and "is on" in on and "only callers on this machine" in on
    no = imds_notice(settings("127.0.0.1", False))
    assert no is not None and "is off" in no
    for line in (off, on, no):
        assert "\n" not in line


def test_settings_carry_the_choice_to_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    for choice in (None, True, False):
        monkeypatch.setenv("OKV_SETTINGS", settings("0.0.0.0", choice).to_env())  # noqa: S104
        assert Settings.from_env().imds is choice
