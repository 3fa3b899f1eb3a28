"""Store operations of the delivery layer: suppressions, inbound messages, delivery statuses.

A mixin of ``Store`` (one object is injected everywhere); kept apart so each file stays short.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.models import (
    Contact,
    ContactChannel,
    DeliveryEvent,
    DeviceToken,
    OutboxMessage,
    Suppression,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

STATUS_RANK = {
    "pending": 0,
    "sending": 1,
    "unknown": 1,
    "sandboxed": 2,
    "sent": 2,
    "delivered": 3,
    "failed": 3,
    "read": 4,
}
"""Statuses arrive out of order and may skip ``delivered``: the outbox keeps the furthest."""
COUNTED_AS_SENT = ("sent", "delivered", "read", "sandboxed", "unknown")


@dataclass(frozen=True)
class SuppressionRow:
    channel: str
    address: str
    scope: str
    reason: str
    source: str
    created_at: datetime


@dataclass(frozen=True)
class StatusResult:
    new: bool
    """False for a duplicate delivery of the same (message, status)."""
    advanced: bool
    """True when the outbox row moved to this status."""
    idempotency_key: str | None
    workflow_id: str | None


class DeliveryStore:
    sessions: sessionmaker[Session]

    # --- suppressions -----------------------------------------------------------------

    def suppress(self, channel: str, address: str, *, scope: str, reason: str, source: str) -> bool:
        """True when newly suppressed (an existing suppression is left as it was)."""
        try:
            with self.sessions.begin() as session:
                session.add(
                    Suppression(
                        channel=channel, address=address, scope=scope, reason=reason, source=source
                    )
                )
            return True
        except IntegrityError:
            return False

    def unsuppress(self, channel: str, address: str, scope: str | None = None) -> int:
        with self.sessions.begin() as session:
            query = select(Suppression).where(
                Suppression.channel == channel, Suppression.address == address
            )
            if scope:
                query = query.where(Suppression.scope == scope)
            rows = list(session.scalars(query))
            for row in rows:
                session.delete(row)
            return len(rows)

    def suppression_for(
        self, channel: str, address: str, message_class: str
    ) -> SuppressionRow | None:
        scopes = ["all", "marketing"] if message_class == "marketing" else ["all"]
        with self.sessions() as session:
            row = session.scalar(
                select(Suppression).where(
                    Suppression.channel == channel,
                    Suppression.address == address,
                    Suppression.scope.in_(scopes),
                )
            )
            return None if row is None else _suppression(row)

    def list_suppressions(
        self, *, channel: str | None = None, address: str | None = None, limit: int = 200
    ) -> list[SuppressionRow]:
        query = select(Suppression).order_by(Suppression.id.desc()).limit(limit)
        if channel:
            query = query.where(Suppression.channel == channel)
        if address:
            query = query.where(Suppression.address == address)
        with self.sessions() as session:
            return [_suppression(row) for row in session.scalars(query)]

    def contact_timezone(self, contact_id: int) -> str | None:
        with self.sessions() as session:
            return session.scalar(select(Contact.timezone).where(Contact.id == contact_id))

    # --- frequency cap ----------------------------------------------------------------

    def marketing_sent_since(self, contact_id: int, since: datetime) -> list[datetime]:
        """Send times of the contact's marketing messages since ``since``, on any channel."""
        with self.sessions() as session:
            rows = session.scalars(
                select(OutboxMessage.sent_at)
                .where(
                    OutboxMessage.contact_id == contact_id,
                    OutboxMessage.message_class == "marketing",
                    OutboxMessage.status.in_(COUNTED_AS_SENT),
                    OutboxMessage.sent_at >= since,
                )
                .order_by(OutboxMessage.sent_at)
            )
            return [row for row in rows if row is not None]

    # --- delivery statuses ------------------------------------------------------------

    def record_status(
        self,
        provider: str,
        provider_message_id: str,
        status: str,
        *,
        occurred_at: datetime,
        error_code: str | None = None,
    ) -> StatusResult:
        try:
            with self.sessions.begin() as session:
                session.add(
                    DeliveryEvent(
                        provider=provider,
                        provider_message_id=provider_message_id,
                        status=status,
                        error_code=error_code,
                        occurred_at=occurred_at,
                    )
                )
        except IntegrityError:
            return StatusResult(new=False, advanced=False, idempotency_key=None, workflow_id=None)
        with self.sessions.begin() as session:
            row = session.scalar(
                select(OutboxMessage)
                .where(OutboxMessage.provider_message_id == provider_message_id)
                .with_for_update()
            )
            if row is None:
                return StatusResult(
                    new=True, advanced=False, idempotency_key=None, workflow_id=None
                )
            advanced = STATUS_RANK.get(status, 0) > STATUS_RANK.get(row.status, 0)
            if advanced:
                row.status = status
                row.status_at = occurred_at
                if error_code:
                    row.error = f"provider error {error_code}"
            return StatusResult(
                new=True,
                advanced=advanced,
                idempotency_key=row.idempotency_key,
                workflow_id=row.workflow_id,
            )

    # --- devices ----------------------------------------------------------------------

    def forget_device_token(self, token: str) -> bool:
        with self.sessions.begin() as session:
            row = session.scalar(select(DeviceToken).where(DeviceToken.token == token))
            if row is None:
                return False
            session.delete(row)
            return True


def _suppression(row: Suppression) -> SuppressionRow:
    return SuppressionRow(
        channel=row.channel,
        address=row.address,
        scope=row.scope,
        reason=row.reason,
        source=row.source,
        created_at=row.created_at,
    )


@dataclass(frozen=True)
class ContactView:
    id: int
    name: str | None
    email: str | None
    phone: str | None
    timezone: str | None
    locale: str | None
    channels: list[dict[str, object]]
    device_tokens: list[str]
    created_at: datetime


class ContactStore:
    sessions: sessionmaker[Session]

    def list_contacts(
        self, *, query: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[ContactView]:
        stmt = select(Contact).order_by(Contact.id.desc()).limit(limit).offset(offset)
        if query:
            like = f"%{query.lower()}%"
            stmt = stmt.where(
                func.lower(func.coalesce(Contact.name, "")).like(like)
                | func.lower(func.coalesce(Contact.email, "")).like(like)
                | func.coalesce(Contact.phone, "").like(like)
            )
        with self.sessions() as session:
            return [_contact_view(session, row) for row in session.scalars(stmt)]

    def get_contact(self, contact_id: int) -> ContactView | None:
        with self.sessions() as session:
            row = session.get(Contact, contact_id)
            return None if row is None else _contact_view(session, row)

    def update_contact(
        self,
        contact_id: int,
        *,
        fields: dict[str, str | None],
        channels: dict[str, str] | None = None,
        device_tokens: list[str] | None = None,
    ) -> ContactView | None:
        """Set the given fields; ``channels`` (channel -> address) and ``device_tokens``
        replace the contact's lists when given. Raises IntegrityError when an address or
        token belongs to another contact."""
        with self.sessions.begin() as session:
            row = session.get(Contact, contact_id)
            if row is None:
                return None
            for name, value in fields.items():
                setattr(row, name, value)
            if channels is not None:
                existing = {
                    link.channel: link
                    for link in session.scalars(
                        select(ContactChannel).where(ContactChannel.contact_id == contact_id)
                    )
                }
                for channel, link in existing.items():
                    if channel not in channels:
                        session.delete(link)
                for channel, address in channels.items():
                    current = existing.get(channel)
                    if current is not None and current.address == address:
                        continue
                    if current is not None:  # a new number has its own window: start afresh
                        session.delete(current)
                        session.flush()
                    session.add(
                        ContactChannel(contact_id=contact_id, channel=channel, address=address)
                    )
            if device_tokens is not None:
                for token in session.scalars(
                    select(DeviceToken).where(DeviceToken.contact_id == contact_id)
                ):
                    session.delete(token)
                session.flush()
                for token_value in device_tokens:
                    session.add(DeviceToken(contact_id=contact_id, token=token_value))
            session.flush()
            return _contact_view(session, row)


def _contact_view(session: Session, row: Contact) -> ContactView:
    links = session.scalars(select(ContactChannel).where(ContactChannel.contact_id == row.id))
    tokens = session.scalars(select(DeviceToken.token).where(DeviceToken.contact_id == row.id))
    return ContactView(
        id=row.id,
        name=row.name,
        email=row.email,
        phone=row.phone,
        timezone=row.timezone,
        locale=row.locale,
        channels=[
            {
                "channel": link.channel,
                "address": link.address,
                "last_inbound_at": link.last_inbound_at,
            }
            for link in links
        ],
        device_tokens=list(tokens),
        created_at=row.created_at,
    )
