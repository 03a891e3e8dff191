"""`okv usage` on a data directory whose usage table has counts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from openkeyvault.ops.usage import month_of
from openkeyvault.storage.db import open_database
from openkeyvault.storage.usage import UsageStore
from tests.support.okvcli import run

THIS = month_of(time.time())[0]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    engines = open_database(tmp_path / "okv.db")
    try:
        UsageStore(engines).add({("alpha", "operations", THIS): 25_000,
                                 ("alpha", "advanced_key_operations", THIS): 10_000,
                                 ("beta", "operations", THIS): 3,
                                 ("alpha", "operations", "2026-01"): 7})
    finally:
        engines.dispose()
    return tmp_path


def test_json_counts_with_list_prices(data_dir: Path) -> None:
    r = run("usage", "--data-dir", str(data_dir), "--output", "json")
    assert r.returncode == 0, r.stderr
    lines = json.loads(r.stdout)["usage"]
    got = {(ln["month"], ln["vault"], ln["meter"]): ln for ln in lines}
    assert set(got) == {(THIS, "alpha", "operations"), (THIS, "alpha", "advanced_key_operations"),
                        (THIS, "beta", "operations"), ("2026-01", "alpha", "operations")}
    ops = got[THIS, "alpha", "operations"]
    assert ops["count"] == 25_000
    assert ops["list_price_usd"] == pytest.approx(0.075)
    assert ops["price"]["per"] == 10_000 and ops["price"]["as_of"] and ops["price"]["source"]
    adv = got[THIS, "alpha", "advanced_key_operations"]
    assert adv["list_price_usd"] == pytest.approx(0.15)
    assert adv["price"]["verified"] is False


def test_filters_by_vault_and_month(data_dir: Path) -> None:
    r = run("usage", "--data-dir", str(data_dir), "--vault", "ALPHA", "--month", "2026-01",
            "-o", "json")
    assert r.returncode == 0, r.stderr
    assert [(ln["vault"], ln["meter"], ln["count"]) for ln in json.loads(r.stdout)["usage"]] \
        == [("alpha", "operations", 7)]
    r = run("usage", "--data-dir", str(data_dir), "--vault", "nobody", "-o", "json")
    assert json.loads(r.stdout) == {"usage": []}


def test_table(data_dir: Path) -> None:
    r = run("usage", "--data-dir", str(data_dir), "--month", THIS)
    assert r.returncode == 0, r.stderr
    assert "advanced_key_operations" in r.stdout and "25000" in r.stdout
    assert "0.075000" in r.stdout and "total" in r.stdout
    assert "0.225000" in r.stdout  # alpha's total: 0.075 + 0.15
    assert "unverified" in r.stdout


@pytest.mark.parametrize("args", [("--month", "2026-13"), ("--month", "26-01"),
                                  ("--output", "yaml")])
def test_refusals(data_dir: Path, args: tuple[str, str]) -> None:
    r = run("usage", "--data-dir", str(data_dir), *args)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ")


def test_no_deployment(tmp_path: Path) -> None:
    r = run("usage", "--data-dir", str(tmp_path / "none"))
    assert r.returncode == 2
    assert "no deployment" in r.stderr
    assert not (tmp_path / "none").exists()


def test_a_production_configuration_names_the_database(data_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "okv.toml"
    config.write_text(f'[server]\ndata_dir = "{data_dir}"\n[tls]\ncertificate = "tls.crt"\n'
                      'key = "tls.key"\n[seal]\ntype = "shamir"\nshares = 3\nthreshold = 2\n'
                      '[metrics]\nport = 9464\n')
    r = run("usage", "--config", str(config), "--vault", "beta", "-o", "json")
    assert r.returncode == 0, r.stderr
    assert [(ln["meter"], ln["count"]) for ln in json.loads(r.stdout)["usage"]] == \
        [("operations", 3)]
    r = run("usage", "--config", str(config), "--data-dir", str(data_dir))
    assert r.returncode == 2 and "not both" in r.stderr
