"""HSM keys whose versions storage no longer names are destroyed in the token by the
scheduled clean-up: a purged vault's keys (a vault purge removes its rows), after two
scans a grace apart (OKV_HSM_ORPHAN_GRACE, short here), while a soft-deleted vault's
keys stay (the vault can be recovered). Checked in the token itself."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from azure.identity import DefaultAzureCredential
from azure.keyvault.certificates import (
    CertificateClient,
    CertificateOperation,
    CertificatePolicy,
    KeyCurveName,
    KeyType,
    WellKnownIssuerNames,
)
from azure.keyvault.keys import KeyClient
from cryptography import x509

from tests.sdk.certs_support import Authority, der
from tests.sdk.clients import unique
from tests.sdk.keys_support import environment
from tests.support.dns import localhost_subdomains
from tests.support.server import DevServer, running
from tests.support.softhsm import token_objects

GRACE = 0.5
DEADLINE = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    mp = pytest.MonkeyPatch()
    mp.setenv("OKV_SCHEDULER_INTERVAL", "0.2")
    mp.setenv("OKV_HSM_ORPHAN_GRACE", str(GRACE))
    try:
        with running(tmp_path_factory.mktemp("orphans") / "data") as started:
            yield started
    finally:
        mp.undo()


def ids(server: DevServer) -> set[str]:
    """The ids of the key versions' objects (not the deployment's backup key, a secret key
    made with the first HSM key)."""
    return {str(o["id"]) for o in token_objects(server.data_dir)
            if o["class"] in ("PRIVATE_KEY", "PUBLIC_KEY")}


def wait_for(what: str, check: object) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    pytest.fail(f"not within {DEADLINE:.0f}s: {what}")


@pytest.fixture(scope="module")
def env(server: DevServer) -> Iterator[dict[str, str]]:
    yield from environment(server)


def test_a_purged_vaults_hsm_keys_leave_the_token(server: DevServer,
                                                  env: dict[str, str]) -> None:
    kept, purged = unique("keep")[:20], unique("gone")[:20]
    made: dict[str, set[str]] = {}
    with localhost_subdomains():
        for vault in (kept, purged):
            done = server.okv("vault", "create", vault, "--sku", "premium")
            assert done.returncode == 0, done.stderr
            before = ids(server)
            kc = KeyClient(server.vault_url(vault), DefaultAzureCredential())
            kc.create_rsa_key(unique("k"), size=2048, hardware_protected=True)
            kc.create_ec_key(unique("k"), curve="P-256", hardware_protected=True)
            made[vault] = ids(server) - before
            assert len(made[vault]) == 2  # a private and a public object share an id
    for vault in (kept, purged):
        assert server.okv("vault", "delete", vault).returncode == 0
    # deleted, not purged: several grace periods later, every key is still there
    time.sleep(6 * GRACE)
    assert made[kept] | made[purged] <= ids(server)
    assert server.okv("vault", "purge", purged).returncode == 0
    gone = made[purged]
    wait_for("the purged vault's keys are destroyed", lambda: not gone & ids(server))
    assert made[kept] <= ids(server)
    assert "destroyed an HSM key no key version names" in server.log()


def test_a_pending_certificates_hsm_key_is_kept(server: DevServer,
                                                env: dict[str, str]) -> None:
    """The key of a certificate operation waiting for a merge is named by no key version
    yet, only by the operation: the clean-up keeps it, and the merge later finds it."""
    vault = unique("pend")[:20]
    with localhost_subdomains():
        assert server.okv("vault", "create", vault, "--sku", "premium").returncode == 0
        cc = CertificateClient(server.vault_url(vault), DefaultAzureCredential())
        before = ids(server)
        name = unique("c")
        op = cc.begin_create_certificate(name, CertificatePolicy(
            issuer_name=WellKnownIssuerNames.unknown, subject="CN=pending",
            key_type=KeyType.ec_hsm, key_curve_name=KeyCurveName.p_256)).result()
        assert isinstance(op, CertificateOperation) and op.csr is not None
        pending = ids(server) - before
        assert len(pending) == 1
        time.sleep(6 * GRACE)
        assert pending <= ids(server)
        ca = Authority.make("Pending Root")
        signed = ca.sign_csr(x509.load_der_x509_csr(bytes(op.csr)))
        merged = cc.merge_certificate(name, [der(signed)])
        assert merged.cer == der(signed)
        time.sleep(6 * GRACE)
        assert pending <= ids(server)  # named by the key version now
