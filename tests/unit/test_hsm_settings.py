"""Where HSM keys live, as a deployment is told: the [pkcs11] table of the configuration
file, the PIN read from a file or the environment (never kept), the dev server's
SoftHSM2 token made once in its data directory, and the keystores built from them."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from openkeyvault.config import ENV_VAR, ConfigError, Settings, load_config
from openkeyvault.keystore import softhsm
from openkeyvault.keystore.base import KeyStoreUnavailable
from openkeyvault.keystore.configured import DEV_TOKEN_LABEL, keystores, pin_reader

DEPLOYMENT = "3f2c1e0a-9b8d-4c7e-a6f5-0123456789ab"
BASE = """[server]\ndata_dir = "data"\n[tls]\ncertificate = "tls.crt"\nkey = "tls.key"
[seal]\ntype = "shamir"\nshares = 3\nthreshold = 2\n"""


def test_the_pkcs11_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "okv.toml"
    path.write_text(BASE + '[pkcs11]\nmodule = "lib/p11.so"\ntoken = "okv"\n'
                    'pin_file = "p11.pin"\n[pkcs11.environment]\nSOFTHSM2_CONF = "/x.conf"\n')
    settings = load_config(path)
    assert settings.pkcs11 == {"module": str(tmp_path / "lib/p11.so"), "token": "okv",
                               "pin_file": str(tmp_path / "p11.pin"),
                               "environment": {"SOFTHSM2_CONF": "/x.conf"}}
    monkeypatch.setenv(ENV_VAR, settings.to_env())
    assert Settings.from_env() == settings  # what each worker gets
    path.write_text(BASE + '[pkcs11]\nmodule = "/p11.so"\ntoken = "t"\npin_env = "PIN"\n')
    assert load_config(path).pkcs11 == {"module": "/p11.so", "token": "t", "pin_env": "PIN",
                                        "environment": {}}
    path.write_text(BASE)
    assert load_config(path).pkcs11 is None


@pytest.mark.parametrize(("table", "says"), [
    ('token = "t"\npin_env = "P"\n', "module is required"),
    ('module = "/m.so"\npin_env = "P"\n', "token is required"),
    ('module = "/m.so"\ntoken = "t"\n', "exactly one of pin_file"),
    ('module = "/m.so"\ntoken = "t"\npin_env = "P"\npin_file = "f"\n', "exactly one of"),
    ('module = "/m.so"\ntoken = "t"\npin_env = "P"\npin = "1234"\n', "unknown key(s) pin"),
    ('module = "/m.so"\ntoken = "t"\npin_env = "P"\nenvironment = 3\n', "environment must"),
    ('module = 5\ntoken = "t"\npin_env = "P"\n', "module is required"),
])
def test_a_bad_pkcs11_table_is_refused(tmp_path: Path, table: str, says: str) -> None:
    path = tmp_path / "okv.toml"
    path.write_text(BASE + "[pkcs11]\n" + table)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert says in str(e.value)
    assert "1234" not in str(e.value)


def test_the_pin_is_read_when_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pin_file = tmp_path / "pin"
    read = pin_reader({"pin_file": str(pin_file)})
    with pytest.raises(KeyStoreUnavailable, match="cannot be read"):
        read()
    pin_file.write_text("s3cret-pin\n")
    assert read() == "s3cret-pin"
    from_env = pin_reader({"pin_env": "OKV_TEST_PIN"})
    monkeypatch.delenv("OKV_TEST_PIN", raising=False)
    with pytest.raises(KeyStoreUnavailable) as e:
        from_env()
    assert "OKV_TEST_PIN" in str(e.value)
    monkeypatch.setenv("OKV_TEST_PIN", "from-env")
    assert from_env() == "from-env"


def test_the_dev_token_is_made_once(tmp_path: Path) -> None:
    assert softhsm.find_module() is not None, "SoftHSM2 is missing: `make test` installs it"
    assert softhsm.existing_token(tmp_path, DEV_TOKEN_LABEL) is None
    settings = Settings(data_dir=tmp_path, dev=True)
    assert set(keystores(settings, DEPLOYMENT)) == {"software"}  # no token yet: HSM types refused
    token = softhsm.ensure_token(tmp_path, DEV_TOKEN_LABEL)
    assert token.conf.read_text().startswith(f"directories.tokendir = {tmp_path}/softhsm/")
    assert stat.S_IMODE(token.pin_file.stat().st_mode) == 0o600
    assert len(token.pin()) == 32
    stamp = (token.pin_file.stat().st_mtime_ns, token.conf.stat().st_mtime_ns)
    again = softhsm.ensure_token(tmp_path, DEV_TOKEN_LABEL)  # a restart writes nothing
    assert again == token
    assert (token.pin_file.stat().st_mtime_ns, token.conf.stat().st_mtime_ns) == stamp
    stores = keystores(settings, DEPLOYMENT)
    assert list(stores) == ["software", "pkcs11"]
    assert [s.capabilities().hardware for s in stores.values()] == [False, True]
    # a production deployment never uses a dev token it finds
    assert set(keystores(Settings(data_dir=tmp_path, dev=False), DEPLOYMENT)) == {"software"}


def test_without_softhsm_the_token_cannot_be_made(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(softhsm.MODULE_ENV, str(tmp_path / "missing.so"))
    assert softhsm.find_module() is None
    with pytest.raises(softhsm.SoftHsmError, match="not installed"):
        softhsm.ensure_token(tmp_path)
