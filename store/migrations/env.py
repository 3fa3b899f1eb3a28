"""Alembic environment: the URL comes from the caller (``nudge db upgrade``), not an ini file."""

from __future__ import annotations

from alembic import context

from store.db import make_engine
from store.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "store.db.alembic_config sets the database URL"

if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
