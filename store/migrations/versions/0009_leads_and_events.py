"""leads and events: contacts gain lead fields; business events raised by the API and outside systems

Contacts gain ``status``, ``lead_source`` (the API's ``source``: ``source`` already names the
channel that first knew the contact), ``tags``, ``fields`` and ``last_contacted_at``. Business
events, until now only menus' end events, gain the contact they belong to; their channel and
address become optional (an outside system's event names a contact, not a channel). The
contact's events and outbox rows are indexed for ``GET /v1/contacts/{id}/activity``. Lengths
are written out here, not read from ``domain.limits``: a migration describes the schema of
its own day.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 14:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("contacts") as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("lead_source", sa.String(length=120), nullable=True))
        # Every contact, old ones too, has a list of tags and an object of fields.
        batch_op.add_column(
            sa.Column("tags", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch_op.add_column(
            sa.Column("fields", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
        batch_op.add_column(
            sa.Column("last_contacted_at", sa.DateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("business_events") as batch_op:
        batch_op.add_column(sa.Column("contact_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_business_events_contact_id",
            "contacts",
            ["contact_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index("ix_business_events_contact", ["contact_id", "created_at"])
        batch_op.alter_column("channel", existing_type=sa.String(length=40), nullable=True)
        batch_op.alter_column("address", existing_type=sa.String(length=320), nullable=True)
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.create_index("ix_outbox_contact_id", ["contact_id"])


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_index("ix_outbox_contact_id")
    # Events with no channel (raised through the API) have no place in the old table.
    op.execute(sa.text("DELETE FROM business_events WHERE channel IS NULL OR address IS NULL"))
    with op.batch_alter_table("business_events") as batch_op:
        batch_op.alter_column("address", existing_type=sa.String(length=320), nullable=False)
        batch_op.alter_column("channel", existing_type=sa.String(length=40), nullable=False)
        batch_op.drop_index("ix_business_events_contact")
        batch_op.drop_constraint("fk_business_events_contact_id", type_="foreignkey")
        batch_op.drop_column("contact_id")
    with op.batch_alter_table("contacts") as batch_op:
        batch_op.drop_column("last_contacted_at")
        batch_op.drop_column("fields")
        batch_op.drop_column("tags")
        batch_op.drop_column("lead_source")
        batch_op.drop_column("status")
