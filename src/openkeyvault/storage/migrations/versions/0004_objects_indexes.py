"""Indexes that keep the scheduled jobs and deleted listings flat in large vaults.

`ix_objects_collection`: the key-rotation and certificate jobs read one collection across
every vault on each tick; without it SQLite scans every object (a million secrets: about
140 ms per tick, holding the worker's interpreter meanwhile).
`ix_objects_deleted` (partial, deleted objects only): a page of deleted objects in name
order; without it PostgreSQL sorts the whole vault and SQLite walks its live objects.

Creating them reads the objects table once (a few seconds at a million rows), inside the
upgrade's transaction.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_DELETED = sa.text("deleted_date IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_objects_collection", "objects", ["collection"])
    op.create_index("ix_objects_deleted", "objects", ["vault_id", "collection", "name_lc"],
                    sqlite_where=_DELETED, postgresql_where=_DELETED)


def downgrade() -> None:
    op.drop_index("ix_objects_deleted", "objects")
    op.drop_index("ix_objects_collection", "objects")
