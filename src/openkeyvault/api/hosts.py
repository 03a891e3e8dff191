"""Vault routing by Host header, and the token resource each host expects.

Vaults live at `{name}.vault.{domain}`; the default vault also answers on
`localhost`, `127.0.0.1`, `[::1]` and `host.docker.internal` (any port). The
resource (token audience) for every vault host is `https://vault.{domain}`
plus the port the client used, so a vault host is always a subdomain of its
resource and the SDKs' challenge-resource verification passes.

Managed HSM pools live at `{name}.managedhsm.{domain}`, whose resource is
`https://managedhsm.{domain}` plus the port (Azure's `https://managedhsm.azure.net`;
the cloud metadata's `mhsmDns` suffix names the same). A token for one resource is
refused on the other's hosts.
"""

from __future__ import annotations

import re

DEFAULT_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "host.docker.internal"})
VAULT = "vault"
MANAGED_HSM = "managedHsm"  # the vault row's kind of a pool


_VALID_HOST = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,62})(?:\.[a-z0-9](?:[a-z0-9-]{0,62}))*|\[[0-9a-f:.]{2,45}\])"
    r"(?::[0-9]{1,5})?",
    re.IGNORECASE,
)


_valid_hosts: set[str] = set()


def valid_host(host: str) -> bool:
    """A Host header we may echo into identifiers and challenges: name or [v6], optional port."""
    if host in _valid_hosts:
        return True
    ok = len(host) <= 270 and _VALID_HOST.fullmatch(host) is not None
    if ok and len(_valid_hosts) < 1024:
        _valid_hosts.add(host)
    return ok


def split_host(host: str) -> tuple[str, str | None]:
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        name, rest = host[1:end], host[end + 1 :]
        return name, rest[1:] if rest.startswith(":") else None
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name, port
    return host, None


class HostMap:
    def __init__(self, domain: str, default_vault: str) -> None:
        self.domain = domain.lower()
        self.default_vault = default_vault
        self._suffix = f".vault.{self.domain}"
        self._pool_suffix = f".managedhsm.{self.domain}"
        self._resources: dict[str, str] = {}
        self._audiences: dict[str, frozenset[str]] = {}
        self._kinds: dict[str, str] = {}
        self._names: dict[str, str | None] = {}

    def vault_name(self, host: str) -> str | None:
        if host in self._names:
            return self._names[host]
        found = self._vault_name(host)
        if len(self._names) < 1024:
            self._names[host] = found
        return found

    def _vault_name(self, host: str) -> str | None:
        name, _ = split_host(host)
        if name in DEFAULT_HOSTS:
            return self.default_vault
        for suffix in (self._suffix, self._pool_suffix):
            if name.endswith(suffix):
                label = name[: -len(suffix)]
                if label and "." not in label:
                    return label
        return None

    def kind(self, host: str) -> str:
        """The kind of resource the host names: a pool's (`{name}.managedhsm.{domain}`,
        or any other name under `managedhsm.{domain}`) or a vault's."""
        kind = self._kinds.get(host)
        if kind is None:
            name, _ = split_host(host)
            kind = MANAGED_HSM if name.endswith(self._pool_suffix) else VAULT
            if len(self._kinds) < 1024:
                self._kinds[host] = kind
        return kind

    def resource(self, host: str) -> str:
        r = self._resources.get(host)
        if r is None:
            _, port = split_host(host)
            service = "managedhsm" if self.kind(host) == MANAGED_HSM else "vault"
            r = f"https://{service}.{self.domain}" + (
                f":{port}" if port and port != "443" else "")
            if len(self._resources) < 1024:
                self._resources[host] = r
        return r

    def audiences(self, host: str) -> frozenset[str]:
        a = self._audiences.get(host)
        if a is None:
            a = frozenset({self.resource(host)})
            if len(self._audiences) < 1024:
                self._audiences[host] = a
        return a
