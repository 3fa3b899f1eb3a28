"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL:
a column added to a model without a migration (or the reverse) fails here, not in production."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from store.db import alembic_config, upgrade
from store.models import Base


def test_models_and_migrations_agree(any_db_url: str) -> None:
    engine = create_engine(any_db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": False, "compare_server_default": False}
            )
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_downgrade_to_the_first_revision_and_back(any_db_url: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(any_db_url), "0001")
    upgrade(any_db_url)
    engine = create_engine(any_db_url)
    try:
        with engine.connect() as connection:
            head = ScriptDirectory.from_config(alembic_config(any_db_url)).get_current_head()
            assert MigrationContext.configure(connection).get_current_revision() == head
    finally:
        engine.dispose()
