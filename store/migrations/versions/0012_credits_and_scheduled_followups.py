"""credits ledger, scheduled follow-ups, completed sessions, stored settings; templates
gain what paid follow-ups need; outbox rows name their template; contact tokens

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 19:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("templates") as batch:
        batch.add_column(
            sa.Column(
                "template_type", sa.String(length=40), nullable=False, server_default="custom"
            )
        )
        batch.add_column(sa.Column("credits_cost", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch.add_column(sa.Column("description", sa.Text(), nullable=True))
        batch.add_column(sa.Column("titles", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("service_types", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("send_after", sa.String(length=40), nullable=False, server_default="1d")
        )
    op.execute("UPDATE templates SET titles = '{}', service_types = '[]'")
    with op.batch_alter_table("templates") as batch:
        batch.alter_column("titles", existing_type=sa.JSON(), nullable=False)
        batch.alter_column("service_types", existing_type=sa.JSON(), nullable=False)
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("template_name", sa.String(length=64), nullable=True))
        batch.create_index("ix_outbox_template_name", ["template_name"])
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("contact_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_api_tokens_contact_id", "contacts", ["contact_id"], ["id"], ondelete="CASCADE"
        )
    op.create_table(
        "scheduled_followups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=1024), nullable=True),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=True),
        sa.Column("template_name", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=40), nullable=False),
        sa.Column("session_id", sa.String(length=255), nullable=True),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("credits_reserved", sa.Integer(), nullable=False),
        sa.Column("credits_charged", sa.Integer(), nullable=False),
        sa.Column("message_key", sa.String(length=1024), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["template_id"], ["templates.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index(
        "ix_scheduled_followups_contact", "scheduled_followups", ["contact_id", "scheduled_at"]
    )
    op.create_index(
        "ix_scheduled_followups_unstarted", "scheduled_followups", ["started_at", "created_at"]
    )
    op.create_index("ix_scheduled_followups_template_id", "scheduled_followups", ["template_id"])
    op.create_index("ix_scheduled_followups_session_id", "scheduled_followups", ["session_id"])
    op.create_index("ix_scheduled_followups_scheduled_at", "scheduled_followups", ["scheduled_at"])
    op.create_index("ix_scheduled_followups_status", "scheduled_followups", ["status"])
    op.create_table(
        "credit_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=True),
        sa.Column("idempotency_key", sa.String(length=1024), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=True),
        sa.Column("message_key", sa.String(length=1024), nullable=True),
        sa.Column("unit_price", sa.Numeric(18, 4), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["schedule_id"], ["scheduled_followups.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index("ix_credit_entries_contact", "credit_entries", ["contact_id", "id"])
    op.create_index("ix_credit_entries_schedule_id", "credit_entries", ["schedule_id"])
    op.create_index("ix_credit_entries_message_key", "credit_entries", ["message_key"])
    op.create_table(
        "service_sessions",
        sa.Column("session_id", sa.String(length=255), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("service_type", sa.String(length=120), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("guidance_summary", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("session_id"),
    )
    op.create_index("ix_service_sessions_contact_id", "service_sessions", ["contact_id"])
    op.create_table(
        "stored_settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("stored_settings")
    op.drop_index("ix_service_sessions_contact_id", "service_sessions")
    op.drop_table("service_sessions")
    op.drop_index("ix_credit_entries_message_key", "credit_entries")
    op.drop_index("ix_credit_entries_schedule_id", "credit_entries")
    op.drop_index("ix_credit_entries_contact", "credit_entries")
    op.drop_table("credit_entries")
    for index in (
        "ix_scheduled_followups_status",
        "ix_scheduled_followups_scheduled_at",
        "ix_scheduled_followups_session_id",
        "ix_scheduled_followups_template_id",
        "ix_scheduled_followups_unstarted",
        "ix_scheduled_followups_contact",
    ):
        op.drop_index(index, "scheduled_followups")
    op.drop_table("scheduled_followups")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_constraint("fk_api_tokens_contact_id", type_="foreignkey")
        batch.drop_column("contact_id")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_template_name")
        batch.drop_column("template_name")
    with op.batch_alter_table("templates") as batch:
        for column in (
            "send_after",
            "service_types",
            "titles",
            "description",
            "is_active",
            "credits_cost",
            "template_type",
        ):
            batch.drop_column(column)
