"""PostgreSQL: a generation per vault for its objects, moved by triggers.

Every insert, update or delete of an `objects` or `versions` row moves the generation
row `objects:<vault id>` in the same transaction, so a node may memoise a vault's
object reads and still see any commit by any node at its next request (it reads that
row with the other generations, one query: storage/readcache.py). Triggers, not calls
in each write, so no write path can forget it. SQLite needs none: its memo follows the
whole database's data version.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_FUNCTION = """
CREATE OR REPLACE FUNCTION okv_objects_generation() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    vid integer;
BEGIN
    IF TG_TABLE_NAME = 'objects' THEN
        IF TG_OP = 'DELETE' THEN vid := OLD.vault_id; ELSE vid := NEW.vault_id; END IF;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT vault_id INTO vid FROM objects WHERE id = OLD.object_id;
    ELSE
        SELECT vault_id INTO vid FROM objects WHERE id = NEW.object_id;
    END IF;
    IF vid IS NOT NULL THEN
        INSERT INTO generations (domain, value) VALUES ('objects:' || vid, 1)
        ON CONFLICT (domain) DO UPDATE SET value = generations.value + 1;
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)
    for table in ("objects", "versions"):
        op.execute(f"CREATE TRIGGER okv_{table}_generation AFTER INSERT OR UPDATE OR DELETE "
                   f"ON {table} FOR EACH ROW EXECUTE FUNCTION okv_objects_generation()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in ("objects", "versions"):
        op.execute(f"DROP TRIGGER IF EXISTS okv_{table}_generation ON {table}")
    op.execute("DROP FUNCTION IF EXISTS okv_objects_generation()")
