"""The audit trail: records (on PostgreSQL) and each stream's signed high-water mark.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("stream", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger(), primary_key=True),
        sa.Column("time_ms", sa.BigInteger(), nullable=False),
        sa.Column("vault", sa.String(128), nullable=True),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("caller", sa.String(64), nullable=True),
        sa.Column("upn", sa.String(256), nullable=True),
        sa.Column("record", sa.Text(), nullable=False),
    )
    op.create_index("ix_audit_events_time", "audit_events", ["time_ms"])
    op.create_table(
        "audit_streams",
        sa.Column("stream", sa.String(64), primary_key=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("chain", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_streams")
    op.drop_index("ix_audit_events_time", "audit_events")
    op.drop_table("audit_events")
