"""Vault network rules (ARM's `networkAcls`) and the client address they are checked against.

A vault with default action `Deny` answers only clients whose address falls in
one of its IP rules (IPv4 or IPv6 CIDR). The client address is the socket peer,
unless the peer is a trusted proxy (a server setting): then it is the right-most
`X-Forwarded-For` entry that is not itself a trusted proxy. `bypass`
(`AzureServices`) is kept for compatibility and has no effect: there are no
trusted Azure services here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW, DENY = "Allow", "Deny"
DEFAULT_ACTIONS = (ALLOW, DENY)
BYPASS = ("AzureServices", "None")
MAX_IP_RULES = 1000  # Azure's limit per vault
MAX_FORWARDED_HOPS = 32  # X-Forwarded-For entries looked at, from the right
MAX_FORWARDED_CHARS = 4096


class InvalidNetworkRule(ValueError):
    """A refused network setting (message safe to show)."""


def parse_rule(value: object) -> IPNetwork:
    """An address (`1.2.3.4`, `::1`) or a CIDR range (`10.0.0.0/8`) with no host bits set."""
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise InvalidNetworkRule("An IP rule is an IPv4 or IPv6 address or CIDR range.")
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError:
        raise InvalidNetworkRule(
            f"'{value[:64]}' is not a valid IP address or CIDR range (a range must have no "
            "host bits set, e.g. 10.1.0.0/16)."
        ) from None


def parse_address(value: str) -> IPAddress | None:
    """An address as a socket or proxy reports it; None if it is not one. IPv4-mapped
    IPv6 addresses (dual-stack sockets) become IPv4."""
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _contains(networks: Iterable[IPNetwork], address: IPAddress) -> bool:
    return any(address.version == n.version and address in n for n in networks)


@dataclass(frozen=True)
class NetworkAcls:
    default_action: str = ALLOW
    bypass: str = "AzureServices"
    ip_rules: tuple[IPNetwork, ...] = ()

    @property
    def open(self) -> bool:
        return self.default_action == ALLOW

    def allows(self, address: IPAddress | None) -> bool:
        if self.default_action == ALLOW:
            return True
        return address is not None and _contains(self.ip_rules, address)

    @classmethod
    def from_wire(cls, body: object) -> NetworkAcls:
        if body is None:
            return cls()
        if not isinstance(body, Mapping):
            raise InvalidNetworkRule("networkAcls must be a JSON object.")
        action = body.get("defaultAction", ALLOW)
        action = choice(action, DEFAULT_ACTIONS, "defaultAction")
        bypass = choice(body.get("bypass", "AzureServices"), BYPASS, "bypass")
        rules = body.get("ipRules")
        rules = [] if rules is None else rules
        if not isinstance(rules, list) or len(rules) > MAX_IP_RULES:
            raise InvalidNetworkRule(f"ipRules must be a list of at most {MAX_IP_RULES} rules.")
        parsed: list[IPNetwork] = []
        for r in rules:
            if not isinstance(r, Mapping):
                raise InvalidNetworkRule('Each IP rule is an object: {"value": "CIDR"}.')
            n = parse_rule(r.get("value"))
            if n not in parsed:
                parsed.append(n)
        if body.get("virtualNetworkRules"):
            raise InvalidNetworkRule("Virtual network rules are not supported.")
        return cls(action, bypass, tuple(parsed))

    def to_wire(self) -> dict[str, object]:
        return {"bypass": self.bypass, "defaultAction": self.default_action,
                "ipRules": [{"value": str(n)} for n in self.ip_rules],
                "virtualNetworkRules": []}


def choice(value: object, options: Sequence[str], name: str) -> str:
    if isinstance(value, str):
        for o in options:
            if o.lower() == value.lower():
                return o
    raise InvalidNetworkRule(f"{name} must be one of {', '.join(options)}.")


class ClientAddresses:
    """Finds the client address of a request from its socket peer and, when the peer is
    a trusted proxy, its X-Forwarded-For header."""

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self.trusted = tuple(parse_rule(t) for t in trusted_proxies)

    def resolve(self, peer: str | None, forwarded_for: Sequence[str] = ()) -> IPAddress | None:
        address = parse_address(peer) if peer else None
        if address is None or not self.trusted or not forwarded_for \
                or not _contains(self.trusted, address):
            return address
        joined = ",".join(forwarded_for)
        if len(joined) > MAX_FORWARDED_CHARS:
            return address
        hops = [h.strip() for h in joined.split(",")]
        for hop in reversed(hops[-MAX_FORWARDED_HOPS:]):
            found = parse_address(hop)
            if found is None:
                return address  # malformed: the proxy's own address decides
            if not _contains(self.trusted, found):
                return found
        # Every entry is a trusted proxy: the left-most one is where the request came from.
        left = parse_address(hops[0]) if len(hops) <= MAX_FORWARDED_HOPS else None
        return left if left is not None else address
