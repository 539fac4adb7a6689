"""Alembic environment: always run in-process on a connection handed over by relay.store.migrate."""

from alembic import context

from relay.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
