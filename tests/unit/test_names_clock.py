"""Input rules and the clocks."""

from __future__ import annotations

import pytest

from openkeyvault.ops.clock import ManualClock, OffsetClock
from openkeyvault.vault import names
from openkeyvault.vault.errors import BadParameter


@pytest.mark.parametrize("name", ["a", "A-1", "x" * 127, "0-0"])
def test_valid_object_names(name: str) -> None:
    assert names.check_object_name(name) == name


@pytest.mark.parametrize("name", ["", "a_b", "a.b", "x" * 128, "ä", "a b", "a/b"])
def test_invalid_object_names(name: str) -> None:
    with pytest.raises(BadParameter):
        names.check_object_name(name)


@pytest.mark.parametrize("name", ["abc", "My-Vault-1", "a" * 24])
def test_valid_vault_names(name: str) -> None:
    assert names.check_vault_name(name) == name.lower()


@pytest.mark.parametrize("name", ["ab", "a" * 25, "1abc", "abc-", "a--b", "a_b"])
def test_invalid_vault_names(name: str) -> None:
    with pytest.raises(BadParameter):
        names.check_vault_name(name)


def test_tags_limits() -> None:
    assert names.check_tags({"k" * 512: "v" * 512}, 512) == {"k" * 512: "v" * 512}
    for bad in ({"k" * 513: "v"}, {"k": "v" * 513}, {"k": 1}, {"": "v"}, [1],
                {str(i): "v" for i in range(16)}):
        with pytest.raises(BadParameter):
            names.check_tags(bad, 512)


def test_times_and_bools() -> None:
    assert names.check_time(5, "nbf") == 5
    assert names.check_time(None, "nbf") is None
    for bad in ("5", True, -1, 10**12):
        with pytest.raises(BadParameter):
            names.check_time(bad, "exp")
    with pytest.raises(BadParameter):
        names.check_bool("yes", "enabled")


def test_manual_clock() -> None:
    c = ManualClock(100.0)
    c.advance(5)
    assert c.now() == 105.0


def test_offset_clock_is_shared_through_its_file(tmp_path) -> None:
    a = OffsetClock(tmp_path / "offset")
    b = OffsetClock(tmp_path / "offset")
    before = b.now()
    a.advance(86_400)
    assert b.offset == 86_400
    assert b.now() - before >= 86_400
