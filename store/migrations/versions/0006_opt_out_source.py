"""opt-outs: what created each one (keyword, provider block, operator, unsubscribe link)

Each source gets its own row, so a contact's START can lift their own STOP while an
operator's suppression of the same address stays. Existing rows keep what their ``source``
says where it is certain: ``keyword`` (a STOP, stored with the reason ``replied '...'``) and
``provider`` (Twilio 21610) stay liftable by START; anything else, of unknown origin, becomes
``operator`` and is lifted only by an operator.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 13:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

suppressions = sa.table(
    "suppressions",
    sa.column("id", sa.Integer),
    sa.column("channel", sa.String),
    sa.column("address", sa.String),
    sa.column("scope", sa.String),
    sa.column("reason", sa.String),
    sa.column("source", sa.String),
)
KNOWN = ("keyword", "provider_block", "unsubscribe_link", "operator")


def upgrade() -> None:
    source, reason = suppressions.c.source, suppressions.c.reason
    op.execute(suppressions.update().where(source == "provider").values(source="provider_block"))
    op.execute(
        suppressions.update()
        .where(source == "keyword", sa.not_(reason.like("replied %")))
        .values(source="operator")
    )
    op.execute(suppressions.update().where(source.not_in(KNOWN)).values(source="operator"))
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.drop_constraint("uq_suppressions_address_scope", type_="unique")
        batch_op.create_unique_constraint(
            "uq_suppressions_source", ["channel", "address", "scope", "source"]
        )


def downgrade() -> None:
    # One row per (channel, address, scope) again: keep the oldest of each.
    keep = sa.select(sa.func.min(suppressions.c.id)).group_by(
        suppressions.c.channel, suppressions.c.address, suppressions.c.scope
    )
    op.execute(suppressions.delete().where(suppressions.c.id.not_in(keep)))
    op.execute(
        suppressions.update()
        .where(suppressions.c.source == "provider_block")
        .values(source="provider")
    )
    op.execute(
        suppressions.update().where(suppressions.c.source == "operator").values(source="api")
    )
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.drop_constraint("uq_suppressions_source", type_="unique")
        batch_op.create_unique_constraint(
            "uq_suppressions_address_scope", ["channel", "address", "scope"]
        )
