"""The built-in issuing CA: one root per deployment, sealed at rest, leaves that verify."""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from openkeyvault.config import Settings
from openkeyvault.crypto.authority import BUILTIN_PROVIDER, CertificateAuthority, new_root
from openkeyvault.crypto.certificates import CertificateInputError, X509Request
from openkeyvault.deployment import Deployment

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def open_at(data_dir: Path) -> Deployment:
    return Deployment.open(Settings(data_dir=data_dir))


def memory_ca() -> CertificateAuthority:
    box: dict[str, bytes] = {}

    def store(make: Callable[[], bytes]) -> bytes:
        return box.setdefault("ca", make())

    return CertificateAuthority(store, lambda: NOW, "Test Issuing CA")


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def openssl_verify(tmp_path: Path, root: x509.Certificate, leaf: x509.Certificate,
                   *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "root.pem").write_bytes(pem(root))
    (tmp_path / "leaf.pem").write_bytes(pem(leaf))
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "root.pem"), *extra,
         str(tmp_path / "leaf.pem")], capture_output=True, text=True, timeout=30)


def test_provider_name_is_documented_value() -> None:
    assert BUILTIN_PROVIDER == "OpenKeyVault"


def test_root_is_a_p384_ca_certificate() -> None:
    root = memory_ca().root()
    public = root.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp384r1"
    assert root.subject == root.issuer
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    assert root.not_valid_after_utc.year == NOW.year + 20


@pytest.mark.parametrize("key", [rsa.generate_private_key(65537, 2048),
                                 ec.generate_private_key(ec.SECP256R1())],
                         ids=["rsa-2048", "ec-p256"])
def test_issued_leaf_verifies_with_openssl(
        tmp_path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
    ca = memory_ca()
    req = X509Request(subject="CN=app.example.test, O=Example", dns_names=("app.example.test",),
                      ekus=("1.3.6.1.5.5.7.3.1",), validity_months=6)
    leaf, chain = ca.issue(req, key.public_key(), NOW)
    assert chain == (ca.root(),)
    assert leaf.issuer == ca.root().subject
    assert leaf.public_key() == key.public_key()
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["app.example.test"]
    at = str(int(NOW.timestamp()) + 3600)
    done = openssl_verify(tmp_path, ca.root(), leaf, "-attime", at, "-purpose", "sslserver")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith(": OK")


def test_a_leaf_from_another_root_does_not_verify(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    leaf, _ = memory_ca().issue(X509Request(subject="CN=x"), key.public_key(), NOW)
    other = memory_ca().root()
    done = openssl_verify(tmp_path, other, leaf, "-attime", str(int(NOW.timestamp()) + 60))
    assert done.returncode != 0


def test_a_leaf_may_not_outlive_the_root() -> None:
    ca = memory_ca()
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(CertificateInputError, match="issuing CA"):
        ca.issue(X509Request(subject="CN=long", validity_months=12 * 25), key.public_key(), NOW)


def test_root_material_is_key_then_certificate() -> None:
    material = new_root("Test", NOW)
    assert material.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert b"-----BEGIN CERTIFICATE-----" in material


def test_created_on_first_use_and_kept(tmp_path: Path) -> None:
    d = open_at(tmp_path / "data")
    try:
        assert d.repo.get_meta("issuing_ca") is None  # nothing until first use
        first = d.ca.root_pem()
        assert d.repo.get_meta("issuing_ca") is not None
    finally:
        d.close()
    again = open_at(tmp_path / "data")
    try:
        assert again.ca.root_pem() == first
    finally:
        again.close()


def test_concurrent_first_use_agrees_on_one_root(tmp_path: Path) -> None:
    """Two openers of one data directory racing on first use end with one root, and each
    signs with the key of that root."""
    data = tmp_path / "data"
    open_at(data).close()
    a, b = open_at(data), open_at(data)
    try:
        with ThreadPoolExecutor(2) as pool:
            roots = list(pool.map(lambda d: d.ca.root_pem(), [a, b]))
        assert roots[0] == roots[1]
        key = ec.generate_private_key(ec.SECP256R1())
        for d in (a, b):
            leaf, _ = d.ca.issue(X509Request(subject="CN=x"), key.public_key(),
                                 dt.datetime.now(dt.UTC))
            leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(roots[0]))
    finally:
        a.close()
        b.close()


def test_processes_racing_on_first_use_print_the_same_root(tmp_path: Path) -> None:
    data = tmp_path / "data"
    open_at(data).close()
    cmd = [sys.executable, "-m", "openkeyvault", "ca", "show", "--data-dir", str(data)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert len({o[0] for o in outs}) == 1
    cert = x509.load_pem_x509_certificate(outs[0][0])
    assert cert.subject.rfc4514_string().startswith("O=OpenKeyVault,CN=OpenKeyVault Issuing CA")


def test_root_key_is_not_in_the_database_in_clear(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = open_at(data)
    try:
        d.ca.root_pem()
        key = d.ca._material()[0]
    finally:
        d.close()
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    scalar = key.private_numbers().private_value.to_bytes(48, "big")
    pem_body = b"".join(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).splitlines()[1:-1])
    files = b"".join(p.read_bytes() for p in data.glob("okv.db*"))
    for needle in (der, scalar, pem_body[:64], base64.b64encode(der)[:64], b"PRIVATE KEY"):
        assert needle not in files
