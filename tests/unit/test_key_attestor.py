"""The Attestor (vault/attestation.py): attestation keys made on first use and stored by a
get-or-create, first writer wins; a process that loses the race destroys the keys it
made; a failure while making leaves no key behind; the statements it signs verify
(crypto/attestation_check.py) once rendered as the API renders them. A keystore with
software P-384 keys stands in for the HSM."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from openkeyvault.api import render
from openkeyvault.crypto.attestation import Chain, root_pem
from openkeyvault.crypto.attestation_check import AttestationInvalid, verify
from openkeyvault.crypto.external_sign import ecdsa_raw
from openkeyvault.keystore.base import KeyRef, KeyStoreError
from openkeyvault.vault.attestation import Attestor, meta_key
from openkeyvault.vault.models import Attributes, KeyBundle

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
PUBLIC = {"crv": "P-256", "x": "eA", "y": "eQ"}
FACTS = {"keystore": "fake", "token": {"label": "t", "manufacturer": "m", "model": "x",
                                       "serial": "1"},
         "attributes": {"sensitive": True, "extractable": False, "always_sensitive": True,
                        "never_extractable": True, "local": False},
         "public": PUBLIC}
_IDS = itertools.count()


class Signer:
    """Attestation keys held in a dict, as a token holds them."""

    def __init__(self, fail_public: bool = False) -> None:
        self.keys: dict[tuple[str, str], ec.EllipticCurvePrivateKey] = {}
        self.destroyed: list[tuple[str, str]] = []
        self.fail_public = fail_public

    def generate(self, role: str) -> str:
        handle = f"{next(_IDS):032x}"
        self.keys[role, handle] = ec.generate_private_key(ec.SECP384R1())
        return handle

    def public(self, role: str, handle: str) -> ec.EllipticCurvePublicKey:
        if self.fail_public:
            raise KeyStoreError("The token refused the operation.")
        return self.keys[role, handle].public_key()

    def sign(self, role: str, handle: str, digest: bytes) -> bytes:
        key = self.keys.get((role, handle))
        if key is None:
            raise KeyStoreError("The attestation key is not in the PKCS#11 token.")
        return ecdsa_raw(key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA384()))), 48)

    def destroy(self, role: str, handle: str) -> None:
        self.keys.pop((role, handle), None)
        self.destroyed.append((role, handle))


class Keystore:
    name = "fake"

    def __init__(self, signer: Signer, facts: dict[str, Any] | None = None) -> None:
        self.signer = signer
        self.facts = facts or FACTS

    def attest(self, ref: KeyRef) -> dict[str, Any]:
        return dict(self.facts)

    def attestation_signer(self) -> Signer:
        return self.signer


def meta_store(meta: dict[str, str],
               winner: str | None = None) -> Callable[[str, Callable[[], str]], str]:
    """A get-or-create; with `winner`, another process stores `winner` while this one is
    making its value (make() runs, then loses)."""
    def store(key: str, make: Callable[[], str]) -> str:
        if key in meta:
            return meta[key]
        made = make()
        meta.setdefault(key, winner if winner is not None else made)
        return meta[key]
    return store


def attestor(store: Callable[[str, Callable[[], str]], str]) -> Attestor:
    return Attestor(store, lambda: NOW, "dep12345")


def bundle() -> KeyBundle:
    return KeyBundle(name="k", version="v1", kty="EC-HSM", key_ops=["sign"], public=PUBLIC,
                     attributes=Attributes(True, 1, 1, "Recoverable", 90))


def ref() -> KeyRef:
    return KeyRef("1/k/v1", "EC", lambda: b"")


def rendered(made: KeyBundle) -> dict[str, Any]:
    return render.key("https://v.vault.localhost", made)


def test_made_once_then_reused_and_verifiable() -> None:
    meta: dict[str, str] = {}
    signer = Signer()
    first = attestor(meta_store(meta))
    kid = "https://v.vault.localhost/keys/k/v1"
    attested = dataclasses.replace(bundle(), attestation=first.attest(
        Keystore(signer), ref(), kid, bundle()))
    assert set(meta) == {meta_key("fake")}
    assert len(signer.keys) == 2  # a root and a signing key
    wire = rendered(attested)
    facts = verify(wire, NOW)
    assert facts.kid == kid and facts.generated_in_hsm is False
    chain = Chain.from_json(meta[meta_key("fake")])
    assert facts.root == chain.root
    assert root_pem(meta[meta_key("fake")]).startswith(b"-----BEGIN CERTIFICATE-----")
    assert chain.root.subject.rfc4514_string() == \
        "O=OpenKeyVault,CN=OpenKeyVault Attestation Root dep12345"
    # another process reads the stored chain: no new key is made
    again = attestor(meta_store(meta)).chain(Keystore(signer))
    assert again == chain and len(signer.keys) == 2


def test_a_loser_destroys_the_keys_it_made() -> None:
    meta: dict[str, str] = {}
    signer = Signer()
    winner = attestor(meta_store(meta)).chain(Keystore(signer))
    winning = meta[meta_key("fake")]
    late = Signer()
    late.keys.update(signer.keys)  # the same token
    chain = attestor(meta_store({}, winner=winning)).chain(Keystore(late))
    assert chain == winner
    assert len(late.destroyed) == 2
    assert set(late.keys) == {("root", winner.root_id), ("signing", winner.signing_id)}


def test_a_failure_while_making_leaves_no_key() -> None:
    meta: dict[str, str] = {}
    signer = Signer(fail_public=True)
    with pytest.raises(KeyStoreError):
        attestor(meta_store(meta)).chain(Keystore(signer))
    assert meta == {} and signer.keys == {} and len(signer.destroyed) == 2


def test_a_key_whose_public_key_differs_is_refused() -> None:
    signer = Signer()
    other = {**FACTS, "public": {"crv": "P-256", "x": "AA", "y": "eQ"}}
    with pytest.raises(KeyStoreError) as err:
        attestor(meta_store({})).attest(Keystore(signer, other), ref(), "kid", bundle())
    assert str(err.value) == "The key in the HSM does not match the stored key."
    assert signer.keys == {}  # refused before any attestation key is made


def test_unreadable_stored_chain() -> None:
    with pytest.raises(ValueError) as err:
        attestor(meta_store({meta_key("fake"): "{not json"})).chain(Keystore(Signer()))
    assert str(err.value) == "The stored attestation certificates cannot be read."


def test_a_rendered_bundle_without_attestation_is_refused() -> None:
    with pytest.raises(AttestationInvalid):
        verify(rendered(bundle()), NOW)
