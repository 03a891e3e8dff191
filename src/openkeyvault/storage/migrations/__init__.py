"""Alembic's scripts for the storage schema: `env.py` and one file per revision in
`versions/`. Run through storage/migrate.py (no alembic.ini); see docs/storage.md."""
