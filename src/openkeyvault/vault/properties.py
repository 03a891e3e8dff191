"""A vault's access-governing properties, named as ARM names them:
`enableRbacAuthorization`, `accessPolicies` and `networkAcls`.

They are stored as one JSON document per vault and arrive with the vault
record (one memoised query), so reading them costs nothing per request; the
parsed form is memoised by the stored text. `VaultPropertiesService` holds the
changes the `okv vault` commands make (and a control-plane API can reuse).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from openkeyvault.access.network import (
    ALLOW,
    BYPASS,
    DEFAULT_ACTIONS,
    MAX_IP_RULES,
    InvalidNetworkRule,
    IPNetwork,
    NetworkAcls,
    choice,
    parse_rule,
)
from openkeyvault.access.policies import (
    AccessPolicies,
    AccessPolicyEntry,
    InvalidAccessPolicy,
    check_guid,
    permission_names,
)
from openkeyvault.ops.clock import Clock
from openkeyvault.ops.events import NO_EVENTS, EventPublisher
from openkeyvault.storage.records import VaultRecord
from openkeyvault.storage.repository import Repository
from openkeyvault.vault import controlrequests as c
from openkeyvault.vault.errors import BadParameter, NotFound, VaultNotFound

if TYPE_CHECKING:
    from openkeyvault.storage.store import Transaction

MAX_PROPERTIES_CHARS = 1024 * 1024


@dataclass(frozen=True)
class VaultProperties:
    enable_rbac_authorization: bool = True
    access_policies: AccessPolicies = field(default_factory=AccessPolicies)
    network_acls: NetworkAcls = field(default_factory=NetworkAcls)

    def same_access(self, other: VaultProperties) -> bool:
        """Whether the permission model and access policies are those of `other`."""
        return (self.enable_rbac_authorization, self.access_policies) == \
            (other.enable_rbac_authorization, other.access_policies)

    @classmethod
    def from_wire(cls, body: object) -> VaultProperties:
        """The stored document (ARM-shaped; 400 on anything invalid). A client's request
        arrives typed and goes through `with_settings`."""
        if not isinstance(body, Mapping):
            raise BadParameter("The vault properties must be a JSON object.")
        rbac = body.get("enableRbacAuthorization", True)
        if rbac is None:
            rbac = True
        if not isinstance(rbac, bool):
            raise BadParameter("enableRbacAuthorization must be true or false.")
        policies = body.get("accessPolicies")
        policies = [] if policies is None else policies
        if not isinstance(policies, list):
            raise BadParameter("accessPolicies must be a list.")
        try:
            return cls(rbac, _policies([AccessPolicyEntry.from_wire(p) for p in policies]),
                       NetworkAcls.from_wire(body.get("networkAcls")))
        except (InvalidAccessPolicy, InvalidNetworkRule) as exc:
            raise BadParameter(str(exc)) from None

    def with_settings(self, rbac: bool | None, policies: Sequence[c.AccessPolicy] | None,
                      acls: c.NetworkRules | None) -> VaultProperties:
        """These properties with each setting a request names (None: not named) replaced;
        400 on anything invalid."""
        try:
            return VaultProperties(
                self.enable_rbac_authorization if rbac is None else rbac,
                self.access_policies if policies is None
                else _policies([policy_entry(p) for p in policies]),
                self.network_acls if acls is None else network_acls(acls))
        except (InvalidAccessPolicy, InvalidNetworkRule) as exc:
            raise BadParameter(str(exc)) from None

    def to_wire(self) -> dict[str, Any]:
        return {"enableRbacAuthorization": self.enable_rbac_authorization,
                "accessPolicies": [e.to_wire() for e in self.access_policies.entries],
                "networkAcls": self.network_acls.to_wire()}


def _policies(entries: Sequence[AccessPolicyEntry]) -> AccessPolicies:
    """One entry per (tenant, object): a later entry for the same principal replaces it."""
    merged: dict[tuple[str, str], AccessPolicyEntry] = {}
    for e in entries:
        merged[(e.tenant_id, e.object_id)] = e
    try:
        return AccessPolicies(tuple(merged.values()))
    except InvalidAccessPolicy as exc:
        raise BadParameter(str(exc)) from None


def policy_entry(p: c.AccessPolicy) -> AccessPolicyEntry:
    """An access policy entry of a request, checked (InvalidAccessPolicy otherwise)."""
    perms = p.permissions
    return AccessPolicyEntry(
        check_guid(p.tenant_id, "tenantId"), check_guid(p.object_id, "objectId"),
        permission_names("keys", perms.keys or []),
        permission_names("secrets", perms.secrets or []),
        permission_names("certificates", perms.certificates or []))


def network_acls(n: c.NetworkRules) -> NetworkAcls:
    """The network rules of a request, checked (InvalidNetworkRule otherwise)."""
    if n.virtual_network_rules:
        raise InvalidNetworkRule("Virtual network rules are not supported.")
    if len(n.ip_rules) > MAX_IP_RULES:
        raise InvalidNetworkRule(f"ipRules must be a list of at most {MAX_IP_RULES} rules.")
    parsed: list[IPNetwork] = []
    for value in n.ip_rules:
        rule = parse_rule(value)
        if rule not in parsed:
            parsed.append(rule)
    return NetworkAcls(choice(n.default_action or ALLOW, DEFAULT_ACTIONS, "defaultAction"),
                       choice(n.bypass or "AzureServices", BYPASS, "bypass"), tuple(parsed))


DEFAULT = VaultProperties()
_parsed: dict[str, VaultProperties] = {}


def properties_of(vault: VaultRecord) -> VaultProperties:
    """The vault's properties (defaults when it has none stored), parsed once per text."""
    text = vault.properties
    if text is None:
        return DEFAULT
    found = _parsed.get(text)
    if found is None:
        found = VaultProperties.from_wire(json.loads(text))
        if len(_parsed) >= 256:
            _parsed.clear()
        _parsed[text] = found
    return found


def _dump(props: VaultProperties) -> str:
    text = json.dumps(props.to_wire(), separators=(",", ":"), sort_keys=True)
    if len(text) > MAX_PROPERTIES_CHARS:
        raise BadParameter("The vault properties are too large.")
    return text


class VaultPropertiesService:
    """Changes to a vault's properties, each read and written in one transaction."""

    events: EventPublisher = NO_EVENTS  # told when access policies change (ops/events.py)

    def __init__(self, repo: Repository, clock: Clock, tenant_id: str) -> None:
        self._repo = repo
        self._clock = clock
        self._tenant_id = tenant_id

    def _vault(self, name: str) -> VaultRecord:
        vault = self._repo.get_vault(name.lower()) if len(name) <= 24 else None
        # A managed HSM pool's document holds more than a vault's (vault/managedhsms.py):
        # written as a vault's, it would lose its administrators and settings.
        if vault is None or vault.kind != "vault":
            raise VaultNotFound(f"Vault '{name[:24]}' not found.")
        return vault

    def get(self, name: str) -> VaultProperties:
        return properties_of(self._vault(name))

    def _change(self, name: str, fn: Callable[[VaultProperties], VaultProperties]
                ) -> VaultProperties:
        vault = self._vault(name)
        out: list[VaultProperties] = []
        event = self.events.access_policy_changed(vault)

        def change(current: str | None) -> str:
            props = VaultProperties.from_wire(json.loads(current)) if current else DEFAULT
            new = fn(props)
            out.extend((props, new))
            return _dump(new)

        def also(tx: Transaction) -> None:  # decided on what was read in the transaction
            if not out[-1].same_access(out[-2]):
                event.write(tx)

        if self._repo.update_vault_properties(vault.id, change, int(self._clock.now()),
                                              also) is None:
            raise VaultNotFound(f"Vault '{name[:24]}' not found.")
        if not out[-1].same_access(out[-2]):
            event.published()
        return out[-1]

    def replace(self, name: str, settings: c.VaultSettings) -> VaultProperties:
        """Set all three properties from a request: those it leaves out go back to their
        defaults."""
        new = DEFAULT.with_settings(settings.enable_rbac_authorization,
                                    settings.access_policies, settings.network_acls)
        return self._change(name, lambda _: new)

    def update(self, name: str, enable_rbac_authorization: bool | None = None,
               default_action: str | None = None, bypass: str | None = None
               ) -> VaultProperties:
        try:
            action = None if default_action is None \
                else choice(default_action, DEFAULT_ACTIONS, "defaultAction")
            bypass = None if bypass is None else choice(bypass, BYPASS, "bypass")
        except InvalidNetworkRule as exc:
            raise BadParameter(str(exc)) from None

        def fn(p: VaultProperties) -> VaultProperties:
            acls = p.network_acls
            acls = replace(acls, default_action=action or acls.default_action,
                           bypass=bypass or acls.bypass)
            rbac = p.enable_rbac_authorization if enable_rbac_authorization is None \
                else enable_rbac_authorization
            return replace(p, enable_rbac_authorization=rbac, network_acls=acls)
        return self._change(name, fn)

    def add_ip_rule(self, name: str, value: str) -> VaultProperties:
        rule = _rule(value)

        def fn(p: VaultProperties) -> VaultProperties:
            rules = p.network_acls.ip_rules
            if rule in rules:
                return p
            if len(rules) >= MAX_IP_RULES:
                raise BadParameter(f"A vault holds at most {MAX_IP_RULES} IP rules.")
            return replace(p, network_acls=replace(p.network_acls, ip_rules=(*rules, rule)))
        return self._change(name, fn)

    def remove_ip_rule(self, name: str, value: str) -> VaultProperties:
        rule = _rule(value)

        def fn(p: VaultProperties) -> VaultProperties:
            rules = p.network_acls.ip_rules
            if rule not in rules:
                raise NotFound(f"The vault has no IP rule '{rule}'.")
            return replace(p, network_acls=replace(
                p.network_acls, ip_rules=tuple(r for r in rules if r != rule)))
        return self._change(name, fn)

    def set_access_policy(self, name: str, object_id: str, tenant_id: str | None = None,
                          permissions: Mapping[str, Sequence[str]] | None = None
                          ) -> VaultProperties:
        """Create or change the principal's entry: each kind named in `permissions` gets
        exactly that list; kinds not named keep what they had (empty for a new entry)."""
        try:
            oid = check_guid(object_id, "objectId")
            tid = check_guid(tenant_id or self._tenant_id, "tenantId")
            given = {kind: permission_names(kind, list(perms))
                     for kind, perms in (permissions or {}).items()}
        except InvalidAccessPolicy as exc:
            raise BadParameter(str(exc)) from None

        def fn(p: VaultProperties) -> VaultProperties:
            entries = list(p.access_policies.entries)
            old = next((e for e in entries if (e.tenant_id, e.object_id) == (tid, oid)),
                       AccessPolicyEntry(tid, oid))
            entries = [e for e in entries if e is not old]
            entries.append(AccessPolicyEntry(
                tid, oid, given.get("keys", old.keys), given.get("secrets", old.secrets),
                given.get("certificates", old.certificates)))
            return replace(p, access_policies=_policies(entries))
        return self._change(name, fn)

    def remove_access_policy(self, name: str, object_id: str,
                             tenant_id: str | None = None) -> VaultProperties:
        try:
            oid = check_guid(object_id, "objectId")
            tid = check_guid(tenant_id or self._tenant_id, "tenantId")
        except InvalidAccessPolicy as exc:
            raise BadParameter(str(exc)) from None

        def fn(p: VaultProperties) -> VaultProperties:
            entries = p.access_policies.entries
            kept = tuple(e for e in entries if (e.tenant_id, e.object_id) != (tid, oid))
            if len(kept) == len(entries):
                raise NotFound("The vault has no access policy for that principal.")
            return replace(p, access_policies=AccessPolicies(kept))
        return self._change(name, fn)


def _rule(value: str) -> IPNetwork:
    try:
        return parse_rule(value)
    except InvalidNetworkRule as exc:
        raise BadParameter(str(exc)) from None
