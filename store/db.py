"""Engines, sessions and migrations for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, Insert, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config

T = TypeVar("T")

MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets the API read while the worker writes; foreign keys are off by default.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def insert_new(session: Session, model: Any, unique: list[str]) -> Insert:
    """INSERT that skips a row whose ``unique`` columns are already stored (a provider's
    retry): one statement, on SQLite and PostgreSQL, instead of catching IntegrityError."""
    module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement: Insert = module.insert(model).on_conflict_do_nothing(index_elements=unique)
    return statement


def lock_for_writing(session: Session) -> bool:
    """On SQLite, take the database's write lock now (``BEGIN IMMEDIATE``), before the
    transaction reads what it will write: ``FOR UPDATE`` is a no-op there, and a transaction
    that read first and writes later either sees a state another writer has since changed or
    fails with "database is locked" instead of waiting. Readers are not held up (WAL); other
    writers wait for the busy timeout. Must be the transaction's first statement. True when
    the lock was taken (SQLite); PostgreSQL callers lock their rows themselves."""
    if session.get_bind().dialect.name != "sqlite":
        return False
    session.execute(text("BEGIN IMMEDIATE"))
    return True


def retrying_conflicts(
    sessions: sessionmaker[Session], work: Callable[[Session], T], attempts: int = 3
) -> T:
    """Run ``work`` in a transaction of its own; when a concurrent writer inserted the same
    unique row first (two first messages from a new number, two first saves of a menu), run
    it again: this time it finds that row instead of inserting it."""
    for attempt in range(attempts):
        try:
            with sessions.begin() as session:
                return work(session)
        except IntegrityError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    # Alembic is imported on use: a process that never migrates (a worker, the HTTP service)
    # is spared its start-up cost.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to run on every start."""
    engine = make_engine(url)  # creates the SQLite folder when needed
    engine.dispose()
    from alembic import command

    command.upgrade(alembic_config(url), revision)
