"""Tables. One generic shape serves secrets, keys and certificates.

`objects` is one named thing in a vault's collection (its soft-delete state
lives here); `versions` are its versions, each with public attributes and, in
`sealed`, the sensitive bytes as the barrier sealed them. Collection-specific
public fields (a key's `kty`, public JWK, `key_ops`...) go in `props` (JSON).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# Seconds since 1970: 64-bit where the database's integer is not (PostgreSQL), as
# expiry dates run to the year 9999; SQLite's INTEGER is 64-bit already.
UnixTime = BigInteger().with_variant(Integer(), "sqlite")

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# One row per domain of rarely written rows, bumped with every change to the domain
# (storage/readcache.py): memoised reads stay fresh on any number of nodes.
generations = Table(
    "generations",
    metadata,
    Column("domain", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

data_keys = Table(
    "data_keys",
    metadata,
    Column("owner", String(80), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("wrapped", LargeBinary, nullable=False),
    Column("created", UnixTime, nullable=False),
)

vaults = Table(
    "vaults",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(24), nullable=False, unique=True),
    Column("kind", String(16), nullable=False, default="vault"),
    Column("sku", String(16), nullable=False, default="standard"),
    Column("retention_days", Integer, nullable=False, default=90),
    Column("purge_protection", Boolean, nullable=False, default=False),
    Column("created", UnixTime, nullable=False),
)

objects = Table(
    "objects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("vault_id", Integer, ForeignKey("vaults.id"), nullable=False),
    Column("collection", String(16), nullable=False),
    Column("name", String(127), nullable=False),
    Column("name_lc", String(127), nullable=False),
    Column("deleted_date", UnixTime, nullable=True),
    Column("scheduled_purge_date", UnixTime, nullable=True),
    Column("policy", Text, nullable=True),  # JSON: a key's rotation policy, a certificate's policy
    UniqueConstraint("vault_id", "collection", "name_lc", name="uq_objects_name"),
)
Index("ix_objects_purge", objects.c.scheduled_purge_date)
# The scheduled jobs read one collection across every vault (keys with a rotation policy,
# certificates with lifetime actions): without this, a full scan of every secret.
Index("ix_objects_collection", objects.c.collection)
# A page of deleted objects in name order without walking a vault's live ones.
Index("ix_objects_deleted", objects.c.vault_id, objects.c.collection, objects.c.name_lc,
      sqlite_where=objects.c.deleted_date.is_not(None),
      postgresql_where=objects.c.deleted_date.is_not(None))

versions = Table(
    "versions",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("object_id", Integer, ForeignKey("objects.id", ondelete="CASCADE"), nullable=False),
    Column("version", String(32), nullable=False),
    Column("created", UnixTime, nullable=False),
    Column("updated", UnixTime, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("nbf", UnixTime, nullable=True),
    Column("exp", UnixTime, nullable=True),
    Column("content_type", Text, nullable=True),
    Column("tags", Text, nullable=True),
    Column("props", Text, nullable=True),
    Column("sealed", LargeBinary, nullable=True),
    Column("key_version", Integer, nullable=True),
    UniqueConstraint("object_id", "version", name="uq_versions_version"),
)
Index("ix_versions_object_seq", versions.c.object_id, versions.c.seq)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("vault_id", Integer, ForeignKey("vaults.id"), nullable=False),
    Column("type", String(64), nullable=False),
    Column("object_name", String(127), nullable=False),
    Column("version", String(32), nullable=False),
    Column("time", UnixTime, nullable=False),
    UniqueConstraint("vault_id", "type", "object_name", "version", name="uq_events_once"),
)

principals = Table(
    "principals",
    metadata,
    Column("object_id", String(36), primary_key=True),
    Column("client_id", String(36), nullable=False, unique=True),
    Column("tenant_id", String(36), nullable=False),
    Column("display_name", String(256), nullable=False),
    Column("kind", String(32), nullable=False),  # servicePrincipal | managedIdentity
    Column("created", UnixTime, nullable=False),
)

# One row per credential of a principal, its details sealed by the barrier: a client secret
# (salt and scrypt hash), a certificate (the public certificate and its thumbprints) or a
# federated credential (issuer, subject, audience; `expires` 0: never).
principal_credentials = Table(
    "principal_credentials",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("object_id", String(36), ForeignKey("principals.object_id", ondelete="CASCADE"),
           nullable=False),
    Column("kind", String(16), nullable=False),  # secret | certificate | federated
    Column("hint", String(8), nullable=False),
    Column("expires", UnixTime, nullable=False),
    Column("created", UnixTime, nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("key_version", Integer, nullable=False),
)

role_assignments = Table(
    "role_assignments",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("scope", String(512), nullable=False),
    Column("role_definition_id", String(36), nullable=False),
    Column("principal_id", String(36), nullable=False),
    Column("created", UnixTime, nullable=False),
)
Index("ix_role_assignments_principal", role_assignments.c.principal_id)

# Custom role definitions (built-in roles live in code, access/roles.py). `permissions` and
# `assignable_scopes` are JSON in the wire shape.
role_definitions = Table(
    "role_definitions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("role_name", String(512), nullable=False),
    Column("description", Text, nullable=False),
    Column("permissions", Text, nullable=False),
    Column("assignable_scopes", Text, nullable=False),
    Column("created", UnixTime, nullable=False),
)

# A vault's ARM properties that govern access (enableRbacAuthorization, accessPolicies,
# networkAcls) as JSON. A vault without a row has the defaults (RBAC, network open), so
# databases created before this table keep working.
vault_properties = Table(
    "vault_properties",
    metadata,
    Column("vault_id", Integer, ForeignKey("vaults.id", ondelete="CASCADE"), primary_key=True),
    Column("properties", Text, nullable=False),
    Column("updated", UnixTime, nullable=False),
)

# A vault's place in the control plane (ARM's subscription, resource group, location,
# tenant, tags) and its soft-deleted state. A vault without a row (created before this
# table) sits in the deployment's default subscription and resource group. A deleted
# vault (`deleted_date` set) keeps its name, objects and key material until it is purged.
vault_placement = Table(
    "vault_placement",
    metadata,
    Column("vault_id", Integer, ForeignKey("vaults.id", ondelete="CASCADE"), primary_key=True),
    Column("subscription", String(36), nullable=False),
    Column("resource_group", String(90), nullable=False),
    Column("resource_group_lc", String(90), nullable=False),
    Column("location", String(64), nullable=False),
    Column("tenant_id", String(36), nullable=False),
    Column("tags", Text, nullable=True),  # JSON
    Column("deleted_date", UnixTime, nullable=True),
    Column("scheduled_purge_date", UnixTime, nullable=True),
)
Index("ix_vault_placement_group", vault_placement.c.subscription,
      vault_placement.c.resource_group_lc)


# ---- the token service's trust: signing keys, external issuers, used assertions --------

# The deployment's token signing keys. One is current (`retired` NULL); a retired key still
# verifies the tokens it signed until they have all expired, then it is deleted. The public
# JWK is stored in the clear, the private key only sealed by the barrier.
token_signing_keys = Table(
    "token_signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("created", UnixTime, nullable=False),
    Column("retired", UnixTime, nullable=True),
    Column("public_jwk", Text, nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("key_version", Integer, nullable=False),
)

# External OpenID Connect issuers whose tokens this deployment trusts: as client assertions
# of federated credentials, and (with an audience) directly on the data plane.
trusted_issuers = Table(
    "trusted_issuers",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("issuer", String(600), nullable=False, unique=True),
    Column("jwks_url", String(1000), nullable=True),
    Column("jwks_file", String(4096), nullable=True),
    Column("audience", String(600), nullable=True),
    Column("created", UnixTime, nullable=False),
)

# Which principal an external issuer's subject (`oid`, else `sub`) acts as.
external_identities = Table(
    "external_identities",
    metadata,
    Column("issuer_name", String(64),
           ForeignKey("trusted_issuers.name", ondelete="CASCADE"), primary_key=True),
    Column("subject", String(600), primary_key=True),
    Column("object_id", String(36), ForeignKey("principals.object_id", ondelete="CASCADE"),
           nullable=False),
)

# Client assertion ids (`jti`) already used, kept until the assertion has expired.
used_assertions = Table(
    "used_assertions",
    metadata,
    Column("client_id", String(36), primary_key=True),
    Column("jti", String(256), primary_key=True),
    Column("expires", UnixTime, nullable=False),
)
Index("ix_used_assertions_expires", used_assertions.c.expires)


# ---- certificate issuers and contacts (per vault) --------------------------------------

# A vault's certificate issuers. The password of `credentials` is sealed by the barrier
# (`sealed`, under the vault's data key); `org_details` is JSON in the wire shape.
certificate_issuers = Table(
    "certificate_issuers",
    metadata,
    Column("vault_id", Integer, ForeignKey("vaults.id", ondelete="CASCADE"), primary_key=True),
    Column("name_lc", String(127), primary_key=True),
    Column("name", String(127), nullable=False),
    Column("provider", String(128), nullable=False),
    Column("account_id", Text, nullable=True),
    Column("sealed", LargeBinary, nullable=True),
    Column("key_version", Integer, nullable=True),
    Column("org_details", Text, nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("created", UnixTime, nullable=False),
    Column("updated", UnixTime, nullable=False),
)

# A vault's certificate contacts: the wire list as JSON (one row per vault that has some).
certificate_contacts = Table(
    "certificate_contacts",
    metadata,
    Column("vault_id", Integer, ForeignKey("vaults.id", ondelete="CASCADE"), primary_key=True),
    Column("contacts", Text, nullable=False),
    Column("updated", UnixTime, nullable=False),
)

# Resource groups a client created by name (ARM's PUT .../resourcegroups/{rg}); a group
# that holds a vault exists through the vault's placement. Names are case-insensitive
# within a subscription (kept as first written).
resource_groups = Table(
    "resource_groups",
    metadata,
    Column("subscription", String(36), primary_key=True),
    Column("name_lc", String(90), primary_key=True),
    Column("name", String(90), nullable=False),
    Column("location", String(64), nullable=False),
    Column("tags", Text, nullable=True),  # JSON
)
Index("ix_resource_groups_subscription", resource_groups.c.subscription)


# ---- coordination between the processes of a deployment --------------------------------

# Leases (storage/leases.py): a named duty that one process of the whole deployment performs
# at a time (the scheduler's jobs). `expires` is in Unix milliseconds on the DATABASE's
# clock, so nodes whose clocks disagree still agree on who holds a lease.
leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires", BigInteger, nullable=False),
)


# ---- events (ops/events.py): a vault's subscriptions and the outbox of their deliveries ----

# Where a vault's events go: a webhook, the event types it wants (JSON list; NULL: all) and
# the schema it reads (EventGridSchema | CloudEventSchemaV1_0). `created` is on the
# deployment's clock: a subscription gets only events of versions created after it.
event_subscriptions = Table(
    "event_subscriptions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("vault_id", Integer, ForeignKey("vaults.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("endpoint", String(2048), nullable=False),
    Column("event_types", Text, nullable=True),
    Column("schema", String(32), nullable=False),
    Column("created", UnixTime, nullable=False),
    UniqueConstraint("vault_id", "name", name="uq_event_subscriptions_name"),
)

# One event for one subscription, as its schema renders it, until it is delivered or
# dead-lettered. `due` is when the next attempt may start (Unix milliseconds, the nodes'
# wall clock); a claimed row's `due` moves past the attempt so no other node takes it.
event_outbox = Table(
    "event_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subscription_id", Integer,
           ForeignKey("event_subscriptions.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("body", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("due", BigInteger, nullable=False),
    Column("created", UnixTime, nullable=False),
)
Index("ix_event_outbox_due", event_outbox.c.due)


# ---- the audit trail (ops/audit.py, storage/audit.py) -----------------------------------

# One row per audit record (written in batches; on PostgreSQL, where nodes share only the
# database). `record` is the JSON line exactly as the stream file holds it.
audit_events = Table(
    "audit_events",
    metadata,
    Column("stream", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("time_ms", BigInteger, nullable=False),
    Column("vault", String(128), nullable=True),
    Column("operation", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("caller", String(64), nullable=True),  # object id
    Column("upn", String(256), nullable=True),
    Column("record", Text, nullable=False),
)
Index("ix_audit_events_time", audit_events.c.time_ms)
# Each stream's high-water mark: its last flushed sequence number and chain value, signed
# with the audit key, so that a tail cut from a stream file is seen.
audit_streams = Table(
    "audit_streams",
    metadata,
    Column("stream", String(64), primary_key=True),
    Column("path", Text, nullable=False),  # HOST:PATH of the stream file
    Column("seq", BigInteger, nullable=False),
    Column("chain", String(64), nullable=False),
    Column("mac", String(64), nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)


# ---- billing usage (storage/usage.py, ops/usage.py) --------------------------------------

# Billed transactions per vault or pool (its name), meter and calendar month (UTC,
# "YYYY-MM"). Each worker adds what it counted since its last flush with one upsert
# (count = count + excluded.count), so any number of processes and nodes add up; a meter
# derived from storage (key-months, pool-hours, scheduled rotations) keeps its highest
# reading under "<meter>@snapshot", so a purge does not erase what was billed.
usage = Table(
    "usage",
    metadata,
    Column("vault", String(64), primary_key=True),
    Column("meter", String(64), primary_key=True),
    Column("month", String(7), primary_key=True),
    Column("count", BigInteger, nullable=False),
)
