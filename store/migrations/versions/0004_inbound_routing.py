"""inbound routing: which inbound messages still wait to be routed to their conversation

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 05:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbound_messages") as table:
        table.add_column(sa.Column("route_channel", sa.String(length=40), nullable=True))
        table.add_column(sa.Column("routed_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("route_claimed_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(
            sa.Column("route_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        table.create_index("ix_inbound_unrouted", ["routed_at", "route_channel", "received_at"])


def downgrade() -> None:
    with op.batch_alter_table("inbound_messages") as table:
        table.drop_index("ix_inbound_unrouted")
        table.drop_column("route_attempts")
        table.drop_column("route_claimed_at")
        table.drop_column("routed_at")
        table.drop_column("route_channel")
