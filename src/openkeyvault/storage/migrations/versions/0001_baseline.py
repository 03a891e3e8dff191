"""Baseline: the schema of release 0.1, the last one made without migrations.

Revision ID: 0001
Revises:
Create Date: 2026-12-05

Each table is created only where it is absent: a database made before migrations is
adopted by this revision, and releases before 0.1 created tables as they were added, so
an older database may lack some. (A table it has with other columns is left as it is:
the schema check after the upgrade names the difference.)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

# Seconds since 1970 (schema.UnixTime, spelled out: a revision never changes with schema.py).
UNIX_TIME = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _absent(table: str) -> bool:
    """Whether `table` must be created (always, when printing SQL offline)."""
    return context.is_offline_mode() or not sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    if _absent("meta"):
        op.create_table(
            "meta",
            sa.Column("key", sa.String(64), primary_key=True),
            sa.Column("value", sa.Text(), nullable=False),
        )
    if _absent("data_keys"):
        op.create_table(
            "data_keys",
            sa.Column("owner", sa.String(80), primary_key=True),
            sa.Column("version", sa.Integer(), primary_key=True),
            sa.Column("wrapped", sa.LargeBinary(), nullable=False),
            sa.Column("created", UNIX_TIME, nullable=False),
        )
    if _absent("vaults"):
        op.create_table(
            "vaults",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("name", sa.String(24), nullable=False, unique=True),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("sku", sa.String(16), nullable=False),
            sa.Column("retention_days", sa.Integer(), nullable=False),
            sa.Column("purge_protection", sa.Boolean(), nullable=False),
            sa.Column("created", UNIX_TIME, nullable=False),
        )
    if _absent("objects"):
        op.create_table(
            "objects",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("vault_id", sa.Integer(), sa.ForeignKey("vaults.id"), nullable=False),
            sa.Column("collection", sa.String(16), nullable=False),
            sa.Column("name", sa.String(127), nullable=False),
            sa.Column("name_lc", sa.String(127), nullable=False),
            sa.Column("deleted_date", UNIX_TIME, nullable=True),
            sa.Column("scheduled_purge_date", UNIX_TIME, nullable=True),
            sa.Column("policy", sa.Text(), nullable=True),
            sa.UniqueConstraint("vault_id", "collection", "name_lc", name="uq_objects_name"),
        )
        op.create_index("ix_objects_purge", "objects", ["scheduled_purge_date"])
    if _absent("versions"):
        op.create_table(
            "versions",
            sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("object_id", sa.Integer(),
                      sa.ForeignKey("objects.id", ondelete="CASCADE"), nullable=False),
            sa.Column("version", sa.String(32), nullable=False),
            sa.Column("created", UNIX_TIME, nullable=False),
            sa.Column("updated", UNIX_TIME, nullable=False),
            sa.Column("enabled", sa.Boolean(), nullable=False),
            sa.Column("nbf", UNIX_TIME, nullable=True),
            sa.Column("exp", UNIX_TIME, nullable=True),
            sa.Column("content_type", sa.Text(), nullable=True),
            sa.Column("tags", sa.Text(), nullable=True),
            sa.Column("props", sa.Text(), nullable=True),
            sa.Column("sealed", sa.LargeBinary(), nullable=True),
            sa.Column("key_version", sa.Integer(), nullable=True),
            sa.UniqueConstraint("object_id", "version", name="uq_versions_version"),
        )
        op.create_index("ix_versions_object_seq", "versions", ["object_id", "seq"])
    if _absent("events"):
        op.create_table(
            "events",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("vault_id", sa.Integer(), sa.ForeignKey("vaults.id"), nullable=False),
            sa.Column("type", sa.String(64), nullable=False),
            sa.Column("object_name", sa.String(127), nullable=False),
            sa.Column("version", sa.String(32), nullable=False),
            sa.Column("time", UNIX_TIME, nullable=False),
            sa.UniqueConstraint("vault_id", "type", "object_name", "version",
                                name="uq_events_once"),
        )
    if _absent("principals"):
        op.create_table(
            "principals",
            sa.Column("object_id", sa.String(36), primary_key=True),
            sa.Column("client_id", sa.String(36), nullable=False, unique=True),
            sa.Column("tenant_id", sa.String(36), nullable=False),
            sa.Column("display_name", sa.String(256), nullable=False),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("created", UNIX_TIME, nullable=False),
        )
    if _absent("principal_credentials"):
        op.create_table(
            "principal_credentials",
            sa.Column("id", sa.String(36), primary_key=True),
            sa.Column("object_id", sa.String(36),
                      sa.ForeignKey("principals.object_id", ondelete="CASCADE"),
                      nullable=False),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("hint", sa.String(8), nullable=False),
            sa.Column("expires", UNIX_TIME, nullable=False),
            sa.Column("created", UNIX_TIME, nullable=False),
            sa.Column("sealed", sa.LargeBinary(), nullable=False),
            sa.Column("key_version", sa.Integer(), nullable=False),
        )
    if _absent("role_assignments"):
        op.create_table(
            "role_assignments",
            sa.Column("id", sa.String(36), primary_key=True),
            sa.Column("scope", sa.String(512), nullable=False),
            sa.Column("role_definition_id", sa.String(36), nullable=False),
            sa.Column("principal_id", sa.String(36), nullable=False),
            sa.Column("created", UNIX_TIME, nullable=False),
        )
        op.create_index("ix_role_assignments_principal", "role_assignments",
                        ["principal_id"])
    if _absent("role_definitions"):
        op.create_table(
            "role_definitions",
            sa.Column("id", sa.String(36), primary_key=True),
            sa.Column("role_name", sa.String(512), nullable=False),
            sa.Column("description", sa.Text(), nullable=False),
            sa.Column("permissions", sa.Text(), nullable=False),
            sa.Column("assignable_scopes", sa.Text(), nullable=False),
            sa.Column("created", UNIX_TIME, nullable=False),
        )
    if _absent("vault_properties"):
        op.create_table(
            "vault_properties",
            sa.Column("vault_id", sa.Integer(),
                      sa.ForeignKey("vaults.id", ondelete="CASCADE"), primary_key=True),
            sa.Column("properties", sa.Text(), nullable=False),
            sa.Column("updated", UNIX_TIME, nullable=False),
        )
    if _absent("vault_placement"):
        op.create_table(
            "vault_placement",
            sa.Column("vault_id", sa.Integer(),
                      sa.ForeignKey("vaults.id", ondelete="CASCADE"), primary_key=True),
            sa.Column("subscription", sa.String(36), nullable=False),
            sa.Column("resource_group", sa.String(90), nullable=False),
            sa.Column("resource_group_lc", sa.String(90), nullable=False),
            sa.Column("location", sa.String(64), nullable=False),
            sa.Column("tenant_id", sa.String(36), nullable=False),
            sa.Column("tags", sa.Text(), nullable=True),
            sa.Column("deleted_date", UNIX_TIME, nullable=True),
            sa.Column("scheduled_purge_date", UNIX_TIME, nullable=True),
        )
        op.create_index("ix_vault_placement_group", "vault_placement",
                        ["subscription", "resource_group_lc"])
    if _absent("token_signing_keys"):
        op.create_table(
            "token_signing_keys",
            sa.Column("kid", sa.String(64), primary_key=True),
            sa.Column("created", UNIX_TIME, nullable=False),
            sa.Column("retired", UNIX_TIME, nullable=True),
            sa.Column("public_jwk", sa.Text(), nullable=False),
            sa.Column("sealed", sa.LargeBinary(), nullable=False),
            sa.Column("key_version", sa.Integer(), nullable=False),
        )
    if _absent("trusted_issuers"):
        op.create_table(
            "trusted_issuers",
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("issuer", sa.String(600), nullable=False, unique=True),
            sa.Column("jwks_url", sa.String(1000), nullable=True),
            sa.Column("jwks_file", sa.String(4096), nullable=True),
            sa.Column("audience", sa.String(600), nullable=True),
            sa.Column("created", UNIX_TIME, nullable=False),
        )
    if _absent("external_identities"):
        op.create_table(
            "external_identities",
            sa.Column("issuer_name", sa.String(64),
                      sa.ForeignKey("trusted_issuers.name", ondelete="CASCADE"),
                      primary_key=True),
            sa.Column("subject", sa.String(600), primary_key=True),
            sa.Column("object_id", sa.String(36),
                      sa.ForeignKey("principals.object_id", ondelete="CASCADE"),
                      nullable=False),
        )
    if _absent("used_assertions"):
        op.create_table(
            "used_assertions",
            sa.Column("client_id", sa.String(36), primary_key=True),
            sa.Column("jti", sa.String(256), primary_key=True),
            sa.Column("expires", UNIX_TIME, nullable=False),
        )
        op.create_index("ix_used_assertions_expires", "used_assertions", ["expires"])
    if _absent("certificate_issuers"):
        op.create_table(
            "certificate_issuers",
            sa.Column("vault_id", sa.Integer(),
                      sa.ForeignKey("vaults.id", ondelete="CASCADE"), primary_key=True),
            sa.Column("name_lc", sa.String(127), primary_key=True),
            sa.Column("name", sa.String(127), nullable=False),
            sa.Column("provider", sa.String(128), nullable=False),
            sa.Column("account_id", sa.Text(), nullable=True),
            sa.Column("sealed", sa.LargeBinary(), nullable=True),
            sa.Column("key_version", sa.Integer(), nullable=True),
            sa.Column("org_details", sa.Text(), nullable=True),
            sa.Column("enabled", sa.Boolean(), nullable=False),
            sa.Column("created", UNIX_TIME, nullable=False),
            sa.Column("updated", UNIX_TIME, nullable=False),
        )
    if _absent("certificate_contacts"):
        op.create_table(
            "certificate_contacts",
            sa.Column("vault_id", sa.Integer(),
                      sa.ForeignKey("vaults.id", ondelete="CASCADE"), primary_key=True),
            sa.Column("contacts", sa.Text(), nullable=False),
            sa.Column("updated", UNIX_TIME, nullable=False),
        )
    if _absent("resource_groups"):
        op.create_table(
            "resource_groups",
            sa.Column("subscription", sa.String(36), primary_key=True),
            sa.Column("name_lc", sa.String(90), primary_key=True),
            sa.Column("name", sa.String(90), nullable=False),
            sa.Column("location", sa.String(64), nullable=False),
            sa.Column("tags", sa.Text(), nullable=True),
        )
        op.create_index("ix_resource_groups_subscription", "resource_groups",
                        ["subscription"])


def downgrade() -> None:
    for table in ("resource_groups", "certificate_contacts", "certificate_issuers",
                  "used_assertions", "external_identities", "trusted_issuers",
                  "token_signing_keys", "vault_placement", "vault_properties",
                  "role_definitions", "role_assignments", "principal_credentials",
                  "principals", "events", "versions", "objects", "vaults", "data_keys",
                  "meta"):
        op.drop_table(table)
