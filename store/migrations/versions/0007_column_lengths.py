"""column lengths: every column as long as validation allows (domain.limits)

A button id may be 256 characters (WhatsApp), a step name 255, an address 320: the columns
that store them now hold the longest value validation lets through, so a customer's tap on
such a button is stored, not a database error. The lengths are written out here, not read
from ``domain.limits``: a migration describes the schema of its own day.

SQLite does not enforce the length of a ``VARCHAR``, so there is nothing to change there (and
rebuilding ``contacts`` under its foreign keys would cascade to its addresses).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 13:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANGES = [
    # (table, column, length before, length after, nullable)
    ("business_events", "idempotency_key", 255, 1024, False),
    ("contacts", "external_id", 255, 320, False),
    ("contacts", "phone", 40, 320, True),
    ("inbound_messages", "reply_id", 255, 256, True),
    ("menu_sessions", "session_id", 255, 511, False),
    ("outbox", "idempotency_key", 255, 1024, False),
]


def _alter(*, upgrade: bool) -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column, before, after, nullable in CHANGES:
        old, new = (before, after) if upgrade else (after, before)
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column(
                column,
                existing_type=sa.String(length=old),
                type_=sa.String(length=new),
                existing_nullable=nullable,
            )


def upgrade() -> None:
    _alter(upgrade=True)


def downgrade() -> None:
    _alter(upgrade=False)
