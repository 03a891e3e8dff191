"""A key brought in a .byok blob never exists in the clear in the server's memory: after
the import and a signature with it (SoftHSM2, the dev token, runs inside the worker), a
read of every byte of the server's processes finds none of its private values, nor its
PKCS#8 encoding. The same read finds the vault's name (so it does read the heap)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.sdk.keys_support import digest, environment, local_verify, operate, uint
from tests.sdk.premium_support import key_client, premium_vault
from tests.sdk.test_premium_byok import byok_file, transfer
from tests.support.dns import localhost_subdomains
from tests.support.procfs import group, memory_holds
from tests.support.server import DevServer, running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with running(tmp_path_factory.mktemp("memory") / "data") as started:
        yield started


@pytest.fixture(scope="module")
def env(server: DevServer) -> Iterator[dict[str, str]]:
    yield from environment(server)


def test_a_byok_key_is_never_in_the_servers_memory(server: DevServer,
                                                   env: dict[str, str]) -> None:
    assert server.proc is not None
    pids = group(server.proc.pid)
    try:
        memory_holds(min(pids), [b"x"])
    except PermissionError:
        pytest.skip("this machine does not let the tests read another process's memory")
    vault = premium_vault(server, "mem")
    rsa_target = rsa.generate_private_key(65537, 2048)
    ec_target = ec.generate_private_key(ec.SECP256R1())
    with localhost_subdomains():
        kc = key_client(server, vault)
        kek = kc.create_rsa_key("kek", size=2048, hardware_protected=True,
                                key_operations=["import"])
        for name, target, kty, crv, alg in (("r", rsa_target, "RSA-HSM", None, "RS256"),
                                            ("e", ec_target, "EC-HSM", "P-256", "ES256")):
            key = kc.import_key(name, transfer(kty, byok_file(kek, target), ["sign"], crv))
            dg = digest(alg, b"in the token")
            assert local_verify(target.public_key(), alg, dg,
                                operate(kc, key, "sign", alg, dg).value())
    rn = rsa_target.private_numbers()
    secrets = {
        "RSA d": uint(rn.d), "RSA p": uint(rn.p), "RSA q": uint(rn.q),
        "RSA dp": uint(rn.dmp1), "EC d": uint(ec_target.private_numbers().private_value, 32),
    }
    for label, target in (("RSA", rsa_target), ("EC", ec_target)):
        secrets[f"{label} PKCS#8"] = target.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
    needles = [*secrets.values(), vault.encode()]
    found: set[bytes] = set()
    for pid in group(server.proc.pid):
        found |= memory_holds(pid, needles)
    assert vault.encode() in found  # the read sees the server's heap
    assert not [label for label, value in secrets.items() if value in found]
