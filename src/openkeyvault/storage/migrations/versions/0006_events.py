"""Events: a vault's webhook subscriptions and the outbox of deliveries (ops/events.py).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UnixTime = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "event_subscriptions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("vault_id", sa.Integer(), sa.ForeignKey("vaults.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("endpoint", sa.String(2048), nullable=False),
        sa.Column("event_types", sa.Text(), nullable=True),
        sa.Column("schema", sa.String(32), nullable=False),
        sa.Column("created", UnixTime, nullable=False),
        sa.UniqueConstraint("vault_id", "name", name="uq_event_subscriptions_name"),
    )
    op.create_table(
        "event_outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("subscription_id", sa.Integer(),
                  sa.ForeignKey("event_subscriptions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("due", sa.BigInteger(), nullable=False),
        sa.Column("created", UnixTime, nullable=False),
    )
    op.create_index("ix_event_outbox_due", "event_outbox", ["due"])


def downgrade() -> None:
    op.drop_index("ix_event_outbox_due", table_name="event_outbox")
    op.drop_table("event_outbox")
    op.drop_table("event_subscriptions")
