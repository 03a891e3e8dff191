"""Read the Wycheproof files and turn their hex and JWKs into what our API takes.

The files live in `tests/vectors/wycheproof/` (see the README there: where they come
from, their license and what each covers); set `OKV_WYCHEPROOF_DIR` to use another
copy. Every byte string in them is lowercase hex; the API wants base64url without
padding.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path(__file__).resolve().parent / "wycheproof"

# The vector files' hash names → hashlib, and → the JOSE algorithm for each family.
HASHES = {"SHA-1": "sha1", "SHA-224": "sha224", "SHA-256": "sha256", "SHA-384": "sha384",
          "SHA-512": "sha512"}
RS_ALG = {"SHA-256": "RS256", "SHA-384": "RS384", "SHA-512": "RS512"}
PS_ALG = {"SHA-256": "PS256", "SHA-384": "PS384", "SHA-512": "PS512"}
# (Wycheproof curve, sha) → ES alg. P-256/P-384/secp256k1 with SHA-512 have none.
ES_ALG = {("secp256r1", "SHA-256"): "ES256", ("secp256k1", "SHA-256"): "ES256K",
          ("secp384r1", "SHA-384"): "ES384", ("secp521r1", "SHA-512"): "ES512"}
# Wycheproof curve names (vector JWKs and `publicKey.curve`) → our `crv` spelling.
CURVES = {"secp256r1": "P-256", "secp256k1": "P-256K", "secp384r1": "P-384",
          "secp521r1": "P-521", "P-256": "P-256", "P-256K": "P-256K", "P-384": "P-384",
          "P-521": "P-521"}
COORDINATE_SIZE = {"P-256": 32, "P-256K": 32, "P-384": 48, "P-521": 66}


def vectors_dir() -> Path:
    path = Path(os.environ.get("OKV_WYCHEPROOF_DIR") or DEFAULT_DIR)
    if not path.is_dir():
        raise FileNotFoundError(
            f"Wycheproof vectors not found at {path}; set OKV_WYCHEPROOF_DIR to their folder."
        )
    return path


@functools.cache
def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((vectors_dir() / name).read_text())
    return data


def unhex(value: str) -> bytes:
    return bytes.fromhex(value)


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def digest(sha: str, msg: bytes) -> bytes:
    """What our sign/verify take: the hash of the message, computed by the caller."""
    return hashlib.new(HASHES[sha], msg).digest()


@dataclass(frozen=True)
class Vector:
    """One test of a file, with its bytes already decoded."""

    file: str
    tc_id: int
    comment: str
    flags: tuple[str, ...]
    result: str  # "valid" | "invalid" | "acceptable"
    raw: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.file}#{self.tc_id}"

    def bytes(self, field: str) -> bytes:
        return unhex(self.raw[field])

    def describe(self) -> str:
        return f"{self.id} [{self.result}; {', '.join(self.flags) or '-'}] {self.comment}"


def groups(name: str) -> Iterator[tuple[dict[str, Any], list[Vector]]]:
    """Each test group (its key and parameters) with its tests."""
    for group in load(name)["testGroups"]:
        yield group, [
            Vector(name, t["tcId"], t["comment"], tuple(t["flags"]), t["result"], t)
            for t in group["tests"]
        ]


def count(name: str) -> int:
    return sum(len(g["tests"]) for g in load(name)["testGroups"])


def prepare_jwk(jwk: dict[str, Any], key_ops: list[str]) -> dict[str, Any]:
    """A vector JWK as our import takes it: no `kid`/`alg`, our curve names, `key_ops` set."""
    out = {k: v for k, v in jwk.items() if k not in ("kid", "alg", "key_ops", "use")}
    if "crv" in out:
        out["crv"] = CURVES[out["crv"]]
    out["key_ops"] = list(key_ops)
    return out


def _coordinate(hex_value: str, size: int) -> str:
    raw = unhex(hex_value).lstrip(b"\x00")
    if len(raw) > size:
        raise ValueError("coordinate longer than the curve allows")
    return b64u(raw.rjust(size, b"\x00"))


def ec_public_jwk(group: dict[str, Any]) -> dict[str, Any]:
    """The group's public key as a JWK; built from `publicKey.wx/wy` where the file has none."""
    if "publicKeyJwk" in group:
        return prepare_jwk(group["publicKeyJwk"], ["verify"])
    pk = group["publicKey"]
    crv = CURVES[pk["curve"]]
    size = COORDINATE_SIZE[crv]
    return {"kty": "EC", "crv": crv, "x": _coordinate(pk["wx"], size),
            "y": _coordinate(pk["wy"], size), "key_ops": ["verify"]}


def sha256sums() -> dict[str, str]:
    """The folder's SHA256SUMS: file name → hex digest."""
    sums = {}
    for line in (vectors_dir() / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest_hex, _, fname = line.partition("  ")
            sums[fname.strip().lstrip("*")] = digest_hex.strip()
    return sums
