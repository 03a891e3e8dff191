"""The composition root: opens storage behind the barrier and wires the services.

`Deployment.open` is what a worker process, the CLI and the tests call. The
first call on a new data directory also creates the deployment's identity
(ids, token signing key, dev identity) — every step idempotent, so a restart
reuses what exists.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from openkeyvault.access.assertions import ClientAssertions
from openkeyvault.access.attestation_trust import trusted_authorities
from openkeyvault.access.authorize import Authorizer
from openkeyvault.access.control import ControlAuthorizer
from openkeyvault.access.definitions import RoleDefinitions
from openkeyvault.access.directory import Directory
from openkeyvault.access.issuers import TrustedIssuers
from openkeyvault.access.jwks import JwksCache
from openkeyvault.access.principals import Principal
from openkeyvault.access.rbac import RoleAssignments
from openkeyvault.access.roles import KEY_VAULT_ADMINISTRATOR, MANAGED_HSM_ADMINISTRATOR, OWNER
from openkeyvault.access.signing_keys import SigningKeys
from openkeyvault.access.tokens import RETAIN_SECONDS, TokenService
from openkeyvault.config import Settings
from openkeyvault.crypto.authority import CertificateAuthority
from openkeyvault.crypto.signing import generate_rsa_pem
from openkeyvault.keystore.configured import keystores
from openkeyvault.ops import audit
from openkeyvault.ops.clock import Clock, deployment_clock
from openkeyvault.ops.events import Events
from openkeyvault.ops.scheduler import Scheduler
from openkeyvault.storage.barrier import SYSTEM, Barrier
from openkeyvault.storage.certificate_issuers import CertificateIssuerStore
from openkeyvault.storage.datadir import open_storage
from openkeyvault.storage.db import Engines
from openkeyvault.storage.identities import IdentityStore
from openkeyvault.storage.leases import LeaseStore
from openkeyvault.storage.placement import PlacementStore
from openkeyvault.storage.readcache import ACCESS, IDENTITIES, VAULTS
from openkeyvault.storage.records import PrincipalRecord
from openkeyvault.storage.repository import Repository
from openkeyvault.storage.subscriptions import SubscriptionStore
from openkeyvault.vault.accesscontrol import AccessControlService
from openkeyvault.vault.attestation import Attestor
from openkeyvault.vault.backup import BackupCodec
from openkeyvault.vault.certificates import CertificateService
from openkeyvault.vault.contacts import ContactService
from openkeyvault.vault.issuers import IssuerService
from openkeyvault.vault.keys import KeyService
from openkeyvault.vault.lifecycle import purge_expired
from openkeyvault.vault.managedhsms import ManagedHsmService
from openkeyvault.vault.properties import VaultPropertiesService
from openkeyvault.vault.secrets import SecretService
from openkeyvault.vault.vaults import VaultService


@dataclass
class Deployment:
    settings: Settings
    engines: Engines
    repo: Repository
    barrier: Barrier
    clock: Clock
    deployment_id: str
    tenant_id: str
    dev_principal: Principal
    identity_header: str
    tokens: TokenService
    authorizer: Authorizer
    control: ControlAuthorizer
    directory: Directory
    rbac: RoleAssignments
    access_control: AccessControlService
    vaults: VaultService
    managed_hsms: ManagedHsmService
    vault_properties: VaultPropertiesService
    secrets: SecretService
    keys: KeyService
    identities: IdentityStore
    assertions: ClientAssertions
    issuers: IssuerService
    ca: CertificateAuthority
    contacts: ContactService
    certificates: CertificateService
    events: Events
    audit_key: bytes  # chains and checks the audit trail (ops/audit.py); not the root key

    def __post_init__(self) -> None:
        # The services tell the event publisher what they changed (ops/events.py).
        for service in (self.secrets, self.keys, self.certificates, self.vaults,
                        self.vault_properties):
            service.events = self.events

    @classmethod
    def open(cls, settings: Settings, clock: Clock | None = None,
             root_key: bytes | None = None) -> Deployment:
        """`root_key`: from the node's seal (production); None: the dev key file."""
        data = settings.data_dir
        # Checks permissions and key material first; StartupRefused names what is wrong.
        engines, repo, barrier = open_storage(data, settings.db_path, settings.database_url,
                                              root_key)
        if clock is None:
            clock = deployment_clock(data, settings.dev)
        now = int(clock.now())
        barrier.ensure_owner(SYSTEM, now)

        deployment_id = repo.set_meta_if_absent("deployment_id", str(uuid.uuid4()))
        tenant_id = repo.set_meta_if_absent("tenant_id", str(uuid.uuid4()))
        dev_oid = repo.set_meta_if_absent("dev_identity_object_id", str(uuid.uuid4()))
        dev_app = repo.set_meta_if_absent("dev_identity_client_id", str(uuid.uuid4()))

        def sealed_meta(key: str, make: Callable[[], bytes]) -> bytes:
            stored = repo.get_meta(key)
            if stored is None:
                version, sealed = barrier.seal(SYSTEM, key.encode(), make())
                candidate = base64.b64encode(struct.pack(">I", version) + sealed).decode()
                stored = repo.set_meta_if_absent(key, candidate)
            raw = base64.b64decode(stored)
            (version,) = struct.unpack(">I", raw[:4])
            return barrier.open(SYSTEM, version, key.encode(), raw[4:])

        def public_meta(key: str, make: Callable[[], str]) -> str:
            """Get-or-create of a value that is not secret (first writer wins)."""
            stored = repo.get_meta(key)
            return stored if stored is not None else repo.set_meta_if_absent(key, make())

        identities = IdentityStore(engines)
        signing_keys = SigningKeys(identities, barrier, clock, RETAIN_SECONDS)
        # A signing key kept in `meta` by an earlier version becomes the first stored one.
        signing_keys.ensure(lambda: sealed_meta("token_signing_key", generate_rsa_pem)
                            if repo.get_meta("token_signing_key") is not None else None)
        identity_header = sealed_meta(
            "identity_header", lambda: secrets.token_urlsafe(32).encode()
        ).decode()

        dev_principal = Principal(dev_oid, tenant_id, dev_app)
        issuer = f"{settings.authority}/{tenant_id}/v2.0"
        # Client secrets are checked by one HMAC under this key (kept behind the barrier).
        directory = Directory(repo, barrier, clock, tenant_id, identities, secret_key=sealed_meta(
            "client_secret_key", lambda: secrets.token_bytes(32)))
        ca_bundle = data / "ca-bundle.pem" if settings.dev else None
        issuers = TrustedIssuers(identities, clock, JwksCache(clock, ca_bundle))
        tokens = TokenService(signing_keys, issuer, tenant_id, clock, identities, issuers,
                              lambda object_id: directory.lookup(object_id=object_id))
        rbac = RoleAssignments(repo, clock, RoleDefinitions(repo, clock))
        # Data roles assigned at a subscription or resource group cover the vaults placed
        # there (`vaults` is built below; the lookup runs only when a decision needs it).
        authorizer = Authorizer(rbac.of, lambda: repo.snapshot(VAULTS, ACCESS, IDENTITIES),
                                lambda name: vaults.placement_of(name))
        if settings.dev:
            # The dev identity is an ordinary principal holding Key Vault Administrator (the
            # data plane) and Owner (the control plane) at the deployment.
            repo.add_principal(PrincipalRecord(dev_oid, dev_app, tenant_id, "dev identity",
                                               "managedIdentity", now), if_absent=True)
            rbac.assign(dev_oid, KEY_VAULT_ADMINISTRATOR.id, "/")
            rbac.assign(dev_oid, OWNER.id, "/")
        vaults = VaultService(repo, barrier, clock, PlacementStore(engines), tenant_id,
                              settings.resource_uri)
        vaults.adopt_unplaced()
        managed_hsms = ManagedHsmService(
            repo, barrier, clock, PlacementStore(engines), tenant_id,
            lambda name: settings.resource_uri(name, "managedhsm"),
            lambda object_id, scope: rbac.assign(object_id, MANAGED_HSM_ADMINISTRATOR.id,
                                                 scope))
        backups = BackupCodec(barrier, deployment_id)
        cert_store = CertificateIssuerStore(engines)
        cert_issuers = IssuerService(cert_store, barrier, authorizer, clock)
        # The keystores by name, shared by keys and certificates (a certificate's key is a
        # key version served from the keystore it records).
        stores = keystores(settings, deployment_id, public_meta)
        # The issuing CA's key and certificate: one sealed value, made on first use.
        ca = CertificateAuthority(lambda make: sealed_meta("issuing_ca", make),
                                  lambda: dt.datetime.fromtimestamp(clock.now(), dt.UTC),
                                  f"OpenKeyVault Issuing CA {deployment_id[:8]}")
        return cls(
            settings=settings,
            engines=engines,
            repo=repo,
            barrier=barrier,
            clock=clock,
            deployment_id=deployment_id,
            tenant_id=tenant_id,
            dev_principal=dev_principal,
            identity_header=identity_header,
            tokens=tokens,
            authorizer=authorizer,
            control=ControlAuthorizer(rbac.of, vaults.placement_of),
            directory=directory, rbac=rbac,
            access_control=AccessControlService(authorizer, rbac, rbac.definitions),
            vaults=vaults,
            managed_hsms=managed_hsms,
            vault_properties=VaultPropertiesService(repo, clock, tenant_id),
            secrets=SecretService(repo, barrier, authorizer, clock, backups),
            keys=KeyService(repo, barrier, authorizer, clock, backups,
                            stores,
                            Attestor(public_meta, lambda: dt.datetime.fromtimestamp(
                                clock.now(), dt.UTC), deployment_id[:8]),
                            lambda: trusted_authorities(settings)),
            identities=identities,
            assertions=ClientAssertions(directory, tokens, identities, clock),
            issuers=cert_issuers,
            ca=ca,
            contacts=ContactService(cert_store, authorizer, clock),
            certificates=CertificateService(repo, barrier, authorizer, clock, backups,
                                            cert_issuers, ca, stores),
            events=Events(SubscriptionStore(engines), clock, settings.resource_uri,
                          lambda name: _arm_id(vaults.placement_of(name), name)),
            audit_key=audit.audit_key(root_key if root_key is not None
                                      else audit.dev_root_key(settings)),
        )

    def scheduled_jobs(self) -> dict[str, Callable[[], int]]:
        """Background work (all idempotent), run on an interval by the one process of the
        deployment that holds the scheduler lease (`scheduler`)."""
        return {
            # First: a pool or key about to be purged is read for its billed usage.
            "usage-snapshots": self._usage_snapshots,
            "purge-expired": lambda: purge_expired(self.repo, self.clock),
            "deleted-vaults": self.vaults.purge_expired,
            # After the purges: the HSM keys their versions named are destroyed.
            "hsm-orphans": self.keys.destroy_orphans,
            "key-rotation": self.keys.run_policies,
            "certificate-lifetime-actions": self.certificates.run_lifetime_actions,
            "token-signing-keys": self._token_key_upkeep,
            "event-expiry-notices": self.events.run_expiry,
        }

    def scheduler(self) -> Scheduler:
        """This process's scheduler: it runs `scheduled_jobs` while it holds the
        deployment's scheduler lease, kept in the database every node shares."""
        from openkeyvault.ops import webhooks

        delivery = webhooks.Delivery(  # every process delivers events; never on a request
            self.events.store, webhooks.tls_context(
                self.settings.data_dir / "ca.pem" if self.settings.dev else None),
            webhooks.deadletter_path(self.settings.data_dir), webhooks.retry_schedule())
        return Scheduler(self.scheduled_jobs(), self.settings.scheduler_interval,
                         LeaseStore(self.engines), every_process=(delivery.run,))

    def _usage_snapshots(self) -> int:
        """Keep this month's readings of the usage meters derived from storage (ops/usage.py),
        so a purge does not erase what a pool or key billed."""
        from openkeyvault.ops.usage import record_snapshots
        from openkeyvault.storage.usage import UsageStore

        return record_snapshots(UsageStore(self.engines), self.clock.now())

    def _token_key_upkeep(self) -> int:
        """Rotate the token signing key when it is due; drop retired keys whose tokens have
        all expired, and client assertion ids past their assertion's expiry."""
        keys = self.tokens.keys
        changed = keys.rotate_if_due(self.settings.token_key_days * 86_400)
        changed += keys.drop_expired()
        self.identities.purge_used_assertions(int(self.clock.now()))
        return changed

    def close(self) -> None:
        self.keys.close()
        self.engines.dispose()


def _arm_id(place: tuple[str, str] | None, name: str) -> str | None:
    """A vault's ARM resource id (an event's topic), None where it has no placement."""
    if place is None:
        return None
    return (f"/subscriptions/{place[0]}/resourceGroups/{place[1]}"
            f"/providers/Microsoft.KeyVault/vaults/{name}")
