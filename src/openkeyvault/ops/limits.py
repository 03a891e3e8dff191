"""Azure Key Vault's service limits, as data: how many transactions of each throttling
class one vault admits in any 10 seconds (azure-behavior.md §1).

The class of an operation is a column of the operations table (vault/operations.py);
what one request weighs against its class's limit is `Attempt.units`. Every class counts
in requests of its cheapest kind, so that the commonest request weighs 1 and needs no
look-up: for the key classes that is an operation on a software RSA-2048 or EC key
(`key_units` gives the weight of the others).

ops/throttle.py enforces these per vault, scaled by the deployment's [throttling]
settings and a vault's own scale (`okv vault throttle`).
"""

from __future__ import annotations

from collections.abc import Mapping

WINDOW_SECONDS = 10  # Azure's limits are "max transactions per 10 seconds, per vault"

# ---- vaults: limits per 10 s (LIM-KV) ----------------------------------------------------
SECRET_CREATE = "secret_create"  # noqa: S105 (a bucket: Secret CREATE + Cert/Key IMPORT)
VAULT_OTHER = "vault_other"  # all other transactions of a vault
KEY_CREATE = "key_create"  # CREATE and RELEASE key (one category)
KEY_OTHER = "key_other"  # every other key transaction, weighted by key type and size
MANAGEMENT = "management"  # the management API (ARM): not counted against a vault
NONE = "none"  # the token service, health, the CA certificate: never throttled

VAULT_LIMITS: Mapping[str, float] = {
    SECRET_CREATE: 300,
    VAULT_OTHER: 4_000,
    # In software-key creates: 20 per 10 s; an HSM key's create weighs 2 (10 per 10 s).
    KEY_CREATE: 20,
    # In software RSA-2048 operations: 4,000 per 10 s (the table below).
    KEY_OTHER: 4_000,
}

# Key transactions other than CREATE, as Azure's table gives them: what one operation costs
# of the HSM budget of 2,000 "HSM RSA-2048 units" per 10 s. The thresholds are weighted and
# enforced on the sum (248 RSA-4096-HSM GETs + 16 RSA-2048-HSM GETs exhaust it); a software
# key's operation costs half its HSM figure.
#
#   key                    HSM limit  HSM units  software limit  software units
#   RSA 2048, EC (any)        2,000       1           4,000           0.5
#   RSA 3072                    500       4           1,000           2
#   RSA 4096                    250       8             500           4
#   oct-HSM (AES)           (not listed: counted as RSA 2048)
HSM_UNITS: Mapping[str, float] = {"RSA-2048": 1, "RSA-3072": 4, "RSA-4096": 8, "EC": 1,
                                  "oct": 1}
SOFTWARE_SHARE = 0.5
# KEY_OTHER counts in software RSA-2048 operations (0.5 HSM units each): HSM units × 2.
UNITS_PER_HSM_UNIT = 1 / SOFTWARE_SHARE
# KEY_CREATE counts in software-key creates (20 per 10 s); an HSM key's (10 per 10 s) weighs:
HSM_CREATE_UNITS = 2.0

# ---- Managed HSM (LIM-MHSM) ------------------------------------------------------------
# A pool "does not throttle on cryptographic operation transactions": its key classes are
# not limited. Its role management writes keep the one RBAC figure Azure published (5 per
# second, from the 2021 limits; the current page no longer lists it).
HSM_RBAC_WRITE = "hsm_rbac_write"
MANAGED_HSM_LIMITS: Mapping[str, float] = {HSM_RBAC_WRITE: 50}
MANAGED_HSM_CLASS_OF: Mapping[str, str] = dict.fromkeys(
    ("RoleAssignmentCreate", "RoleAssignmentDelete", "RoleDefinitionSet",
     "RoleDefinitionDelete"), HSM_RBAC_WRITE)

# resource kind → class → limit per WINDOW_SECONDS. A kind or class not listed (the
# management API, the token service, MANAGEMENT, NONE) is not throttled.
LIMITS: Mapping[str, Mapping[str, float]] = {
    "vault": VAULT_LIMITS,
    "managedhsm": MANAGED_HSM_LIMITS,
}
# The names `[throttling.limits]` may override (config.py).
CLASSES = frozenset(VAULT_LIMITS) | frozenset(MANAGED_HSM_LIMITS)


def size_class(kty: str, size: int | None = None) -> str:
    """The row of HSM_UNITS a key of type `kty` (`RSA`, `EC-HSM`, ...) and `size` (RSA
    modulus bits; ignored for EC and oct) falls in."""
    family = kty.removesuffix("-HSM")
    if family == "RSA":
        if size is not None and size > 3072:
            return "RSA-4096"
        return "RSA-3072" if size is not None and size > 2048 else "RSA-2048"
    return "EC" if family == "EC" else "oct"


def key_units(throttle_class: str, kty: str, size: int | None = None) -> float:
    """What one operation of `throttle_class` on a key of type `kty` and `size` weighs,
    where that is not 1 (a software RSA-2048 or EC key)."""
    hardware = kty.endswith("-HSM")
    if throttle_class == KEY_CREATE:
        return HSM_CREATE_UNITS if hardware else 1.0
    if throttle_class != KEY_OTHER:
        return 1.0
    units = HSM_UNITS[size_class(kty, size)] * UNITS_PER_HSM_UNIT
    return units if hardware else units * SOFTWARE_SHARE
