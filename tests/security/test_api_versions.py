"""Every api-version Azure publishes gets a normal answer, from one table; anything else is
400 in Azure's words. The table is checked against what the installed SDKs send."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from openkeyvault.api import versions
from openkeyvault.deployment import Deployment
from tests.security.conftest import Rest

MANAGEMENT = "https://management.azure.com"
UNKNOWN = ("7.7", "2099-01-01", "7.6-preview.99", "7.5-preview", "2025-07-02", "")
DATA_PACKAGES = ("keys", "secrets", "certificates", "administration")


def q(version: str) -> str:
    return f"api-version={version}"


@pytest.fixture(scope="module")
def objects(rest: Rest) -> tuple[str, str]:
    """One secret and one key, written at the latest version."""
    secret, key = f"v{uuid.uuid4().hex[:12]}", f"v{uuid.uuid4().hex[:12]}"
    r = rest.call("PUT", f"/secrets/{secret}", query=q(versions.LATEST),
                  json={"value": "walked"})
    assert r.status_code == 200, r.text
    r = rest.call("POST", f"/keys/{key}/create", query=q(versions.LATEST),
                  json={"kty": "EC", "crv": "P-256"})
    assert r.status_code == 200, r.text
    return secret, key


@pytest.fixture(scope="module")
def mgmt_token(rest: Rest) -> str:
    return str(rest.msi_token(MANAGEMENT)["access_token"])


@pytest.fixture(scope="module")
def vault(rest: Rest, mgmt_token: str, deployment: Deployment) -> tuple[str, str]:
    """A vault created through the management API: its subscription and name."""
    sub, name = str(uuid.uuid4()), f"m{uuid.uuid4().hex[:12]}"
    body = {"location": "local", "properties": {
        "tenantId": deployment.tenant_id, "sku": {"family": "A", "name": "standard"}}}
    r = rest.call("PUT", vault_path(sub, name), token=mgmt_token,
                  query=q(versions.MANAGEMENT_LATEST), json=body)
    assert r.status_code == 201, r.text
    return sub, name


def vault_path(sub: str, name: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/{name}"


def error(r: Any, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"] and body["error"]["code"] == code, body
    return str(body["error"]["message"])


# ---- the table ---------------------------------------------------------------------------


def test_the_table_is_well_formed() -> None:
    for table, latest in ((versions.DATA_PLANE, versions.LATEST),
                          (versions.MANAGEMENT, versions.MANAGEMENT_LATEST)):
        names = [v.version for v in table]
        assert len(names) == len(set(names))
        ga = {v.version for v in table if v.kind == "GA"}
        assert latest == names[-1] and latest in ga
        for v in table:
            assert v.behaves_as in ga
            assert (v.kind == "GA") == (v.behaves_as == v.version)
            assert (v.kind == "preview") == ("preview" in v.version)


def test_previews_behave_as_the_ga_they_lead_to() -> None:
    assert versions.behaves_as("7.6-preview.2") == "7.6"
    assert versions.behaves_as("7.4-preview.1") == "7.4"
    assert versions.behaves_as("2026-03-01-preview") == "2026-04-01"
    assert versions.at_least("2026-04-01", "2026-04-01")
    assert not versions.at_least("2025-07-01", "2026-04-01")
    assert not versions.at_least("7.6-preview.2", "2025-07-01")
    assert versions.management_behaves_as("2024-12-01-preview") == "2025-05-01"
    assert versions.management_at_least("2026-05-15", "2026-02-01")
    assert not versions.management_at_least("2025-05-01", "2026-02-01")


def _decorator_versions(module: Any) -> set[str]:
    """Every version named in a generated module's `api_version_validation` decorators."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.keyword) and node.arg in (
                "api_versions_list", "method_added_on", "params_added_on"):
            for leaf in ast.walk(node.value):
                if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str) and (
                        leaf.value[:1].isdigit()):
                    found.add(leaf.value)
    return found


@pytest.mark.parametrize("package", DATA_PACKAGES)
def test_every_version_the_data_plane_sdks_know_is_in_the_table(package: str) -> None:
    shared = "_internal" if package == "administration" else "_shared"
    base = importlib.import_module(f"azure.keyvault.{package}.{shared}.client_base")
    known = {str(v.value) for v in base.ApiVersion} | {str(base.DEFAULT_VERSION.value)}
    generated = importlib.import_module(f"azure.keyvault.{package}._generated")
    for sub in ("_operations._operations", "operations._operations"):
        try:
            known |= _decorator_versions(importlib.import_module(f"{generated.__name__}.{sub}"))
        except ModuleNotFoundError:
            continue
    assert str(base.DEFAULT_VERSION.value) in versions.SUPPORTED
    assert known - versions.SUPPORTED == set()


def test_the_management_sdk_default_is_in_the_table() -> None:
    from azure.core.credentials import AccessToken
    from azure.mgmt.keyvault import KeyVaultManagementClient

    class Never:
        def get_token(self, *_: Any, **__: Any) -> AccessToken:
            raise AssertionError("no request is sent")

    client = KeyVaultManagementClient(Never(), "sub")
    assert client._config.api_version in versions.MANAGEMENT_SUPPORTED


# ---- through the server ------------------------------------------------------------------


@pytest.mark.parametrize("version", [v.version for v in versions.DATA_PLANE])
def test_every_data_plane_version_is_served(rest: Rest, objects: tuple[str, str],
                                            version: str) -> None:
    secret, key = objects
    r = rest.call("GET", f"/secrets/{secret}/", query=q(version))
    assert r.status_code == 200, r.text
    assert r.json()["value"] == "walked"
    r = rest.call("GET", f"/keys/{key}/", query=q(version))
    assert r.status_code == 200, r.text
    assert r.json()["key"]["kid"].split("/")[-2] == key
    r = rest.call("GET", "/secrets", query=q(version) + "&maxresults=1")
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("version", [v.version for v in versions.MANAGEMENT])
def test_every_management_version_is_served(rest: Rest, mgmt_token: str,
                                            vault: tuple[str, str], version: str) -> None:
    sub, name = vault
    r = rest.call("GET", vault_path(sub, name), token=mgmt_token, query=q(version))
    assert r.status_code == 200, r.text
    assert r.json()["name"] == name
    r = rest.call("GET", f"/subscriptions/{sub}/resourceGroups/rg1/providers/"
                  "Microsoft.KeyVault/vaults", token=mgmt_token, query=q(version))
    assert r.status_code == 200, r.text
    assert [v["name"] for v in r.json()["value"]] == [name]


@pytest.mark.parametrize("version", UNKNOWN)
def test_unknown_data_plane_versions_are_400(rest: Rest, objects: tuple[str, str],
                                             version: str) -> None:
    secret, key = objects
    expected = (f"The specified version ({version}) is not recognized. Consider using the "
                f"latest supported version ({versions.LATEST}).")
    for path in (f"/secrets/{secret}/", f"/keys/{key}/"):
        r = rest.call("GET", path, query=q(version))
        assert error(r, 400, "BadParameter") == expected


@pytest.mark.parametrize("version", UNKNOWN)
def test_unknown_management_versions_are_400(rest: Rest, mgmt_token: str,
                                             vault: tuple[str, str], version: str) -> None:
    sub, name = vault
    r = rest.call("GET", vault_path(sub, name), token=mgmt_token, query=q(version))
    message = error(r, 400, "InvalidApiVersionParameter")
    assert message.startswith(f"The api-version '{version}' is invalid. The supported "
                              "versions are '")
    assert "2026-02-01" in message and "2026-05-15" in message


def test_the_docs_name_every_version() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    section = docs.split("## api-version", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([0-9][0-9.a-z-]*)`", section))
    assert named == {v.version for v in versions.DATA_PLANE + versions.MANAGEMENT} | {
        "7.7", "7.6-preview.99"}
