"""Alembic environment: migrations run on a connection handed over by `chat_client.database.migrate`.

There is no alembic.ini: `python -m chat_client migrate` (and the server at start-up) build the Alembic
config in code, open the connection with the app's own async engine and lock out concurrent migrators.
"""

from alembic import context
from chat_client.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `python -m chat_client migrate`, not the alembic command")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
