"""outbox held: a send held by quiet hours or the frequency cap has its row

A held message gets an outbox row ``held`` with ``not_before`` (when the policy lets it go)
and ``held_reason`` (``quiet hours``, ``frequency cap``), so ``GET /v1/outbox?status=held``
lists the pending work; the send that ends the hold claims the same row. The length is
written out here, not read from ``domain.limits``: a migration describes the schema of its
own day.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.add_column(sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("held_reason", sa.String(length=40), nullable=True))


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM outbox WHERE status = 'held'"))
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_column("held_reason")
        batch_op.drop_column("not_before")
