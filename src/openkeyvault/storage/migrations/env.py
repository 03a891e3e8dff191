"""Alembic's entry point, configured by storage/migrate.py rather than an alembic.ini.

migrate.py passes an open connection (inside its locked transaction) as
`config.attributes["connection"]`: every revision runs in that one transaction.
Without one (offline SQL generation), the URL comes from `-x url=...`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from openkeyvault.storage.schema import metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite alters a table by copying it: autogenerate writes batch operations.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    if url is None or not context.is_offline_mode():
        raise SystemExit("run migrations through openkeyvault.storage.migrate, or offline "
                         "with --sql -x url=DIALECT:// to print the SQL")
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


run()
