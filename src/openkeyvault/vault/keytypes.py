"""Key types: which family each `kty` belongs to and which vault kinds accept it (one table)."""

from __future__ import annotations

from openkeyvault.vault.errors import BadParameter, Forbidden

# kty → (family, hardware-protected)
KTY: dict[str, tuple[str, bool]] = {
    "RSA": ("RSA", False),
    "RSA-HSM": ("RSA", True),
    "EC": ("EC", False),
    "EC-HSM": ("EC", True),
    "oct": ("oct", False),
    "oct-HSM": ("oct", True),
}

# vault SKU (or "managedhsm") → the key types it accepts
ACCEPTED: dict[str, frozenset[str]] = {
    "standard": frozenset({"RSA", "EC"}),
    "premium": frozenset({"RSA", "EC", "RSA-HSM", "EC-HSM", "oct-HSM"}),
    "managedhsm": frozenset({"RSA-HSM", "EC-HSM", "oct-HSM"}),
}

KEY_OPS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey", "import", "export")
FAMILY_OPS: dict[str, tuple[str, ...]] = {
    "RSA": ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"),
    "EC": ("sign", "verify"),
    "oct": ("encrypt", "decrypt", "wrapKey", "unwrapKey"),
}

DEFAULT_RSA_SIZE = 2048
DEFAULT_CURVE = "P-256"


def check_kty(kty: object, sku: str, hsm_flag: bool = False) -> tuple[str, str, bool]:
    """(kty, family, hardware) for a key type a vault of `sku` accepts; refuse others."""
    if not isinstance(kty, str) or kty not in KTY:
        raise BadParameter(
            f"The key type '{str(kty)[:16]}' is not valid; use one of {', '.join(KTY)}."
        )
    family, hardware = KTY[kty]
    if hsm_flag and not hardware:
        kty, hardware = f"{kty}-HSM", True
    if kty not in ACCEPTED.get(sku, frozenset()):
        if hardware and sku == "standard":
            raise Forbidden("Hardware key operation not allowed on standard vault.")
        raise BadParameter(f"The key type '{kty}' is not supported by a {sku} vault.")
    return kty, family, hardware


# A key-exchange key (KEK) for bring-your-own-key: an RSA-HSM key whose key_ops are
# exactly ["import"], made in the vault (never imported, never changed into another key).
EXCHANGE_OPS = ["import"]


def check_key_ops(ops: object, family: str, exchange: bool = False) -> list[str]:
    """The key_ops list for a key of `family`: its default when absent; refuse unknown ops.
    `exchange`: the key may be a key-exchange key (an RSA-HSM key being created)."""
    if ops is None:
        return list(FAMILY_OPS[family])
    if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
        raise BadParameter("key_ops must be a list of operation names.")
    if "import" in ops:
        if not exchange:
            raise BadParameter("Only an RSA-HSM key created in the vault can be a key-exchange "
                               "key (key_ops ['import']).")
        if ops != EXCHANGE_OPS:
            raise BadParameter("A key-exchange key's key_ops must be exactly ['import']: "
                               "'import' excludes every other operation.")
        return list(EXCHANGE_OPS)
    out: list[str] = []
    for op in ops:
        if op not in KEY_OPS:
            raise BadParameter(f"Unknown key operation '{op[:32]}'; use {', '.join(KEY_OPS)}.")
        if op not in FAMILY_OPS[family]:
            raise BadParameter(f"Key operation '{op}' is not supported by {family} keys.")
        if op not in out:
            out.append(op)
    return out
