"""Store operations of the delivery layer: suppressions, inbound messages, delivery statuses.

A mixin of ``Store`` (one object is injected everywhere); kept apart so each file stays short.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain.channels import WHATSAPP_CHANNELS, ChannelName
from domain.policy import OptOutSource
from domain.status import STATUS_RANK
from store.db import insert_new, lock_for_writing
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

COUNTED_AS_SENT = ("sent", "delivered", "read", "sandboxed", "unknown")
CLAIMED_UNSENT = ("pending", "sending")
"""Claimed but not sent yet: these count against the frequency cap too (from when they were
claimed), or two sends racing for the last place under the cap would both take it. A ``held``
row is not claimed: it waits for the cap (or quiet hours) and takes no place under it."""
OUTSIDE_WINDOW_CODES = frozenset({"63016", "131047"})
"""Twilio 63016 and WhatsApp Cloud 131047: free-form text outside the 24-hour window (the
customer has to write first, or a template be sent). Often reported on a ``failed`` status."""


@dataclass(frozen=True)
class FrequencyCap:
    """The frequency cap as the outbox claim applies it, inside the claim's transaction.

    ``until`` is the policy's rule (``domain.policy.frequency_until`` with its settings):
    given the times of the contact's marketing messages since ``since``, when the next one
    fits, None meaning now.
    """

    contact_id: int
    since: datetime
    until: Callable[[list[datetime]], datetime | None]


class FrequencyCapped(Exception):
    """The claim was refused: the contact has had their marketing messages for now."""

    def __init__(self, not_before: datetime) -> None:
        super().__init__(f"frequency cap: not before {not_before.isoformat()}")
        self.not_before = not_before


@dataclass(frozen=True)
class SuppressionRow:
    channel: str
    address: str
    scope: str
    reason: str
    source: str
    created_at: datetime


@dataclass(frozen=True)
class PolicyFacts:
    """What the contact policy judges a message by, read in one transaction."""

    suppression: SuppressionRow | None
    """The first opt-out that applies to one of the message's addresses, if any."""
    last_inbound: datetime | None
    """The contact's last WhatsApp message to us (asked for WhatsApp sends only)."""
    timezone: str | None
    marketing_times: list[datetime] = field(default_factory=list)
    """The contact's marketing messages in the frequency window (when asked for)."""


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

    def suppress(
        self, channel: str, address: str, *, scope: str, reason: str, source: OptOutSource
    ) -> bool:
        """True when newly suppressed; one of the same source is left as it was. Each source
        has its own row, so lifting one (a START lifts the contact's own) leaves the others."""
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
        """An operator lifts every opt-out of the address, whatever created it."""
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

    def policy_facts(
        self,
        addresses: list[tuple[str, str]],
        message_class: str,
        *,
        contact_id: int | None = None,
        contact_email: bool = False,
        whatsapp_address: str | None = None,
        marketing_since: datetime | None = None,
        excluding: str | None = None,
    ) -> PolicyFacts:
        """Everything one send is judged by, in one round trip to the database (the send path
        asks this for every message). ``contact_email`` adds the contact's e-mail address to
        the ``(channel, address)`` pairs whose opt-outs apply; ``whatsapp_address`` asks for
        the last inbound WhatsApp message; ``marketing_since`` for the frequency cap's
        count, ``excluding`` one idempotency key from it."""
        scopes = ["all", "marketing"] if message_class == "marketing" else ["all"]
        with self.sessions() as session:
            email, zone = None, None
            if contact_id is not None:
                found = session.execute(
                    select(Contact.email, Contact.timezone).where(Contact.id == contact_id)
                ).first()
                if found is not None:
                    email, zone = found
            pairs = [pair for pair in addresses if pair[1]]
            if contact_email and email:
                pairs.append(("email", email.strip().lower()))
            suppression = None
            if pairs:
                row = session.scalar(
                    select(Suppression)
                    .where(
                        tuple_(Suppression.channel, Suppression.address).in_(pairs),
                        Suppression.scope.in_(scopes),
                    )
                    .limit(1)
                )
                suppression = None if row is None else _suppression(row)
            last_inbound = None
            if whatsapp_address is not None:
                last_inbound = session.scalar(
                    select(ContactChannel.last_inbound_at).where(
                        ContactChannel.channel == "whatsapp",
                        ContactChannel.address == whatsapp_address,
                    )
                )
            times: list[datetime] = []
            if contact_id is not None and marketing_since is not None:
                times = marketing_times(session, contact_id, marketing_since, excluding=excluding)
            return PolicyFacts(suppression, last_inbound, zone, times)

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
        """Keep the status once and move the outbox row to it, in one transaction: a stored
        event is the mark of a status already applied, so the provider's retry of one whose
        first delivery failed half-way must find nothing stored."""
        behind = [name for name, rank in STATUS_RANK.items() if rank < STATUS_RANK.get(status, 0)]
        values: dict[str, object] = {"status": status, "status_at": occurred_at}
        if error_code:
            values["error"] = status_error(error_code)
        with self.sessions.begin() as session:
            lock_message(session, provider_message_id)
            stored = session.connection().scalar(
                insert_new(session, DeliveryEvent, ["provider", "provider_message_id", "status"])
                .values(
                    provider=provider,
                    provider_message_id=provider_message_id,
                    status=status,
                    error_code=error_code,
                    occurred_at=occurred_at,
                )
                .returning(DeliveryEvent.id)
            )
            if stored is None:  # a provider's retry of a status already recorded
                return StatusResult(
                    new=False, advanced=False, idempotency_key=None, workflow_id=None
                )
            # One conditional UPDATE keeps the furthest status without reading the row
            # first; no row means not ours, not marked sent yet (the mark applies it), or
            # already further.
            moved = (
                session.connection()
                .execute(
                    update(OutboxMessage)
                    .where(
                        OutboxMessage.provider_message_id == provider_message_id,
                        OutboxMessage.status.in_(behind),
                    )
                    .values(**values)
                    .returning(OutboxMessage.idempotency_key, OutboxMessage.workflow_id)
                )
                .first()
            )
        if moved is None:
            return StatusResult(new=True, advanced=False, idempotency_key=None, workflow_id=None)
        return StatusResult(new=True, advanced=True, idempotency_key=moved[0], workflow_id=moved[1])

    def apply_stored_status(self, provider_message_id: str) -> bool:
        """Apply the furthest status already stored for a message that has only now been
        marked sent with its provider id (a status webhook can beat ``mark_outbox``); True
        when the row moved.

        Run after the provider id is committed. This and ``record_status`` hold the message's
        lock (``lock_message``), so whichever of the two runs second sees the other's write
        and no status is left unapplied, nor one applied over a further one.
        """
        with self.sessions.begin() as session:
            lock_message(session, provider_message_id)
            events = list(
                session.scalars(
                    select(DeliveryEvent).where(
                        DeliveryEvent.provider_message_id == provider_message_id
                    )
                )
            )
            if not events:
                return False
            row = session.scalar(
                select(OutboxMessage)
                .where(OutboxMessage.provider_message_id == provider_message_id)
                .with_for_update()
            )
            if row is None:
                return False
            furthest = max(events, key=lambda e: (STATUS_RANK.get(e.status, 0), e.occurred_at))
            return _advance(row, furthest.status, furthest.occurred_at, furthest.error_code)

    # --- devices ----------------------------------------------------------------------

    def forget_device_token(self, token: str) -> bool:
        with self.sessions.begin() as session:
            row = session.scalar(select(DeviceToken).where(DeviceToken.token == token))
            if row is None:
                return False
            session.delete(row)
            return True


def _advance(
    row: OutboxMessage, status: str, occurred_at: datetime, error_code: str | None
) -> bool:
    """Move the row to ``status`` if that is further than where it is (``STATUS_RANK``)."""
    if STATUS_RANK.get(status, 0) <= STATUS_RANK.get(row.status, 0):
        return False
    row.status = status
    row.status_at = occurred_at
    if error_code:
        row.error = status_error(error_code)
    return True


def status_error(error_code: str) -> str:
    """The outbox error for a provider's status error code; outside the WhatsApp window is
    named as the send path names it, so an operator filters both the same way."""
    if error_code in OUTSIDE_WINDOW_CODES:
        return f"outside_whatsapp_window: provider error {error_code}"
    return f"provider error {error_code}"


def lock_contact(session: Session, contact_id: int) -> None:
    """Serialise this transaction with every other one that locks the same contact, so what
    it counts cannot change before it commits: the contact's row ``FOR UPDATE`` on
    PostgreSQL; on SQLite, which has one writer at a time, the write lock taken at once
    (``BEGIN IMMEDIATE``) rather than at the first write, after the count. Must be the
    transaction's first statement."""
    if not lock_for_writing(session):
        session.execute(select(Contact.id).where(Contact.id == contact_id).with_for_update())


STATUS_LOCKS = 0x5354
"""The first key of ``lock_message``'s PostgreSQL advisory locks: their own key space."""


def lock_message(session: Session, provider_message_id: str) -> None:
    """Serialise the transactions that record or apply statuses of one outbound message: on
    PostgreSQL an advisory lock on its provider id (its outbox row may not carry that id
    yet, so there is no row to lock); on SQLite the write lock. Must be the transaction's
    first statement."""
    if not lock_for_writing(session):
        session.execute(
            select(func.pg_advisory_xact_lock(STATUS_LOCKS, func.hashtext(provider_message_id)))
        )


def marketing_times(
    session: Session, contact_id: int, since: datetime, *, excluding: str | None = None
) -> list[datetime]:
    """See ``DeliveryStore.policy_facts``. A row whose send is unknown (the worker
    stopped mid-call) may have reached the customer: it counts from its claim."""
    at = func.coalesce(OutboxMessage.sent_at, OutboxMessage.created_at)
    query = select(at).where(
        OutboxMessage.contact_id == contact_id,
        OutboxMessage.message_class == "marketing",
        OutboxMessage.status.in_(COUNTED_AS_SENT + CLAIMED_UNSENT),
        at >= since,
    )
    if excluding is not None:
        query = query.where(OutboxMessage.idempotency_key != excluding)
    return sorted(session.scalars(query.order_by(at)))


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
    status: str | None = None
    lead_source: str | None = None
    tags: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    last_contacted_at: datetime | None = None

    def address_on(self, channel: ChannelName) -> str | None:
        """Where a message on ``channel`` goes for this contact, or None when it has no
        address there: its e-mail, its phone (SMS, WhatsApp), a device token, a linked
        conversation. Never another channel's address (no SMS to an e-mail address)."""
        if channel == ChannelName.email and self.email:
            return self.email
        if channel in (ChannelName.sms, *WHATSAPP_CHANNELS) and self.phone:
            return self.phone
        if channel == ChannelName.push and self.device_tokens:
            return self.device_tokens[0]
        for link in self.channels:
            if link.get("channel") == channel.value and link.get("address"):
                return str(link["address"])
        return None


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
        status=row.status,
        lead_source=row.lead_source,
        tags=list(row.tags or []),
        fields=dict(row.fields or {}),
        last_contacted_at=row.last_contacted_at,
    )
