"""Whether a managed HSM pool is activated, read from its properties document.

A new pool is not activated: as on Azure, it refuses every key operation until its
security domain has been downloaded once (vault/securitydomain.py), and the management
API reports `securityDomainProperties.activationStatus` "NotActivated", then "Active".
The state is the `securityDomain` member of the pool's properties document (the JSON its
vault row carries, read with the pool at no extra cost); a pool's management changes
keep it (vault/managedhsms.py).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from openkeyvault.storage.records import VaultRecord
from openkeyvault.vault.errors import Forbidden

MEMBER = "securityDomain"  # the properties document's member
ACTIVE = "Active"  # ActivationStatus (managedHsm ARM spec)
NOT_ACTIVATED = "NotActivated"
ACTIVE_MESSAGE = "Your HSM has been activated and can be used for cryptographic operations."
NOT_ACTIVATED_MESSAGE = ("Your HSM has not yet been activated: download its security domain "
                         "to activate it.")
REFUSAL = ("The managed HSM is not activated: download its security domain to activate it "
           "(POST /securitydomain/download with 3 to 10 certificates; `az keyvault "
           "security-domain download`).")


def state(properties: str | None) -> dict[str, Any]:
    """The `securityDomain` member of a properties document ({} when none)."""
    doc = json.loads(properties) if properties else {}
    found = doc.get(MEMBER) if isinstance(doc, dict) else None
    return found if isinstance(found, dict) else {}


@functools.lru_cache(maxsize=256)
def activated(properties: str | None) -> bool:
    """Whether the document says activated; parsed once per text (every key request on a
    pool asks, with the same text until the pool changes)."""
    return state(properties).get("activated") is True


def require_activated(vault: VaultRecord) -> None:
    """403 Forbidden while the pool is not activated."""
    if not activated(vault.properties):
        raise Forbidden(REFUSAL)
