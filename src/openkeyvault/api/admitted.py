"""A data-plane request's admission, memoised: whose token it carries, which vault its
host names, which route its method and path take, and that the route's guard allowed it.

A client repeats the same request (the same host, token, method and path) over and over;
each time the pipeline would verify the token, look the vault up, resolve the route and
decide, all from rows of three storage domains (readcache.py): identities (principals,
signing keys, trusted issuers), vaults (properties, access policies, network rules,
placement) and access (role assignments and definitions). The memo lives in the dict
storage keeps for those three domains, which is replaced by an empty one as soon as one
of them changes, so a revoked role, a deleted principal or a changed access policy
applies from the next request, as without it. What does not come from storage is checked
on every request: the token's expiry, against the deployment clock.

Only what allowed is kept, and only for a vault whose firewall is open (a network rule
depends on the client's address) and a route guarded by a data action (role management
decides from the body too). A refusal always takes the full path, so it is always told
the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openkeyvault.access.principals import Principal
from openkeyvault.api.router import Route
from openkeyvault.storage.readcache import ACCESS, IDENTITIES, VAULTS
from openkeyvault.storage.records import VaultRecord
from openkeyvault.vault.context import Caller

DOMAINS = (VAULTS, ACCESS, IDENTITIES)  # the authorizer's snapshot: the same memo
_TAG = "admitted"  # the first item of the memo's keys (storage's own start with an int)


@dataclass(frozen=True, slots=True)
class Admitted:
    """What the pipeline established for a request, up to its accounting gates."""

    principal: Principal
    until: int  # the token is accepted before this second of the deployment clock
    vault: VaultRecord
    route: Route
    params: dict[str, str]
    caller: Caller
    object_id: str
    # The guard's decision (data action, path, access-policy permission) and whether the
    # vault's roles made it (else its access policies); None for an unguarded route.
    decision: tuple[str, str, str | None] | None
    by_roles: bool


def key(host: str, authorization: str, method: str, path: str) -> tuple[str, ...]:
    return (_TAG, host, authorization, method, path)


def find(memo: dict[Any, Any], request_key: tuple[str, ...], now: float) -> Admitted | None:
    """The admission of an earlier request like this one, while its token is accepted."""
    hit: Admitted | None = memo.get(request_key)
    if hit is not None and now < hit.until:
        return hit
    return None
