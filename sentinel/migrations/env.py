"""Alembic environment of the incident store (run by :meth:`sentinel.store.Store.migrate`).

The store passes its open connection and its table prefix in the Alembic
config's ``attributes``; the version table is ``<prefix>alembic_version``.
"""

from alembic import context


def run() -> None:
    config = context.config
    connection = config.attributes["connection"]
    prefix = config.attributes.get("table_prefix", "")
    context.configure(connection=connection, version_table=prefix + "alembic_version",
                      transactional_ddl=connection.dialect.name == "postgresql")
    with context.begin_transaction():
        context.run_migrations(table_prefix=prefix)


if hasattr(context, "config"):  # Alembic is running it (an import by anything else does nothing)
    run()
