"""An HSM that cannot be used (here: the dev token's PIN file holds a wrong PIN) fails
only what needs it: creating or using an HSM key answers 503 ServiceUnavailable with a
message that names no PIN, module or token, and one log line says why; software keys,
secrets and health go on. Once the PIN is right again, the next request works, in the
same worker, without a restart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import DefaultAzureCredential
from azure.keyvault.certificates import CertificateClient, CertificatePolicy, KeyType
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient

from tests.sdk.clients import unique
from tests.sdk.keys_support import digest, environment, local_verify, operate, public_key
from tests.support.dns import localhost_subdomains
from tests.support.server import DevServer, running


@pytest.fixture(scope="module")
def down(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevServer, str]]:
    """A dev server started once (it makes its token), then again with a wrong PIN in the
    token's PIN file: nothing in a worker can log in to the token until it is fixed."""
    data = tmp_path_factory.mktemp("hsm-down") / "data"
    with running(data):
        pass
    pin_file = data / "softhsm" / "pin"
    right = pin_file.read_text()
    pin_file.write_text("0" * 32 + "\n")
    try:
        with running(data) as started:
            yield started, right
    finally:
        pin_file.write_text(right)


@pytest.fixture(scope="module")
def env(down: tuple[DevServer, str]) -> Iterator[dict[str, str]]:
    yield from environment(down[0])


def test_a_wrong_pin_fails_hsm_keys_only(down: tuple[DevServer, str],
                                         env: dict[str, str]) -> None:
    server, right = down
    pin_file = server.data_dir / "softhsm" / "pin"
    wrong = "0" * 32
    assert right.strip() != wrong and pin_file.read_text().strip() == wrong
    vault = unique("down")[:20]
    assert server.okv("vault", "create", vault, "--sku", "premium").returncode == 0
    with localhost_subdomains():
        kc = KeyClient(server.vault_url(vault), DefaultAzureCredential())
        sc = SecretClient(server.vault_url(vault), DefaultAzureCredential())
        cc = CertificateClient(server.vault_url(vault), DefaultAzureCredential())
        try:
            with pytest.raises(HttpResponseError) as e:
                kc.create_rsa_key(unique("h"), size=2048, hardware_protected=True)
            assert e.value.status_code == 503
            err = e.value.response.json()["error"]
            assert err["code"] == "ServiceUnavailable"
            assert "HSM" in err["message"]
            for secret in (right.strip(), wrong, "softhsm", str(server.data_dir)):
                assert secret not in err["message"]
            # so does a certificate whose key the HSM would make; nothing of it is stored
            name = unique("hc")
            with pytest.raises(HttpResponseError) as e:
                cc.begin_create_certificate(name, CertificatePolicy(
                    issuer_name="Self", subject="CN=down", key_type=KeyType.rsa_hsm))
            assert e.value.status_code == 503
            assert e.value.response.json()["error"]["code"] == "ServiceUnavailable"
            with pytest.raises(ResourceNotFoundError):
                cc.get_certificate_operation(name)
            # everything that needs no HSM is served
            soft = kc.create_ec_key(unique("s"), curve="P-256")
            dg = digest("ES256", b"still here")
            assert local_verify(public_key(soft.key), "ES256", dg,
                                operate(kc, soft, "sign", "ES256", dg).value())
            sc.set_secret(unique("sec"), "v")
        finally:
            pin_file.write_text(right)
        # the same worker logs in on the next request, with the right PIN
        hsm = kc.create_rsa_key(unique("h"), size=2048, hardware_protected=True)
        assert hsm.key_type == "RSA-HSM"
        dg = digest("RS256", b"back")
        assert local_verify(public_key(hsm.key), "RS256", dg,
                            operate(kc, hsm, "sign", "RS256", dg).value())
    log = server.log()
    assert "the keystore is unavailable: Login to the PKCS#11 token" in log
    assert right.strip() not in log and wrong not in log
