"""automation rules, their runs, bookings; events remember when their rules were started;
contacts remember their last exchange (what quiet spells count from)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 16:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "automations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("trigger", sa.String(length=120), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("rule", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_automations_trigger", "automations", ["trigger", "enabled"])
    op.create_table(
        "automation_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.String(length=255), nullable=False),
        sa.Column("automation_id", sa.Integer(), nullable=True),
        sa.Column("automation_name", sa.String(length=255), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("occurrence", sa.String(length=120), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("channel", sa.String(length=40), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["automation_id"], ["automations.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workflow_id"),
    )
    op.create_index(
        "ix_automation_runs_automation", "automation_runs", ["automation_id", "created_at"]
    )
    op.create_index("ix_automation_runs_contact", "automation_runs", ["contact_id", "created_at"])
    op.create_index("ix_automation_runs_status", "automation_runs", ["status"])
    op.create_table(
        "bookings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("service", sa.String(length=255), nullable=True),
        sa.Column("location", sa.String(length=512), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_bookings_contact", "bookings", ["contact_id", "starts_at"])
    op.create_index("ix_bookings_starts_at", "bookings", ["starts_at"])
    # A lead's address is looked up on every channel at once (no channel to lead the unique
    # index with): without this, each new lead scanned the table under the write lock.
    op.create_index("ix_contact_channels_address_only", "contact_channels", ["address"])
    with op.batch_alter_table("contacts") as batch_op:
        batch_op.add_column(
            sa.Column("last_exchange_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.execute(sa.text("UPDATE contacts SET last_exchange_at = last_contacted_at"))
    with op.batch_alter_table("business_events") as batch_op:
        batch_op.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_business_events_undispatched", ["dispatched_at", "created_at"])
    # Events from before rules existed are history: no rule made today may run for them.
    op.execute(sa.text("UPDATE business_events SET dispatched_at = created_at"))


def downgrade() -> None:
    with op.batch_alter_table("business_events") as batch_op:
        batch_op.drop_index("ix_business_events_undispatched")
        batch_op.drop_column("dispatched_at")
    with op.batch_alter_table("contacts") as batch_op:
        batch_op.drop_column("last_exchange_at")
    op.drop_index("ix_contact_channels_address_only", "contact_channels")
    op.drop_table("bookings")
    op.drop_table("automation_runs")
    op.drop_table("automations")
