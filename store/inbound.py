"""Store operations for inbound messages: keep each once, and route each exactly once.

A mixin of ``Store``. A message a provider delivered is ours from the moment the webhook
answers 2xx: it must reach its conversation even if the process that took it dies or Temporal
is down for a while. So the row says which conversation channel it is for and whether it has
been routed; a process routes it only under a lease (``route_claimed_at``), and whatever is
left unrouted when the lease runs out is taken again, by a provider's retry or by the sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from domain import limits
from domain.events import Trigger
from domain.policy import LIFTED_BY_START, OptOutSource
from store.db import insert_new, retrying_conflicts
from store.models import (
    BusinessEvent,
    Contact,
    ContactChannel,
    InboundMessage,
    Suppression,
    utcnow,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

ROUTE_LEASE = timedelta(minutes=2)
"""Longer than a router's own retries (about 25 s): a message is never routed by two
processes at once, and one whose routing failed is taken again after this long."""
MAX_ROUTE_ATTEMPTS = 10
"""A message whose routing keeps failing is given up on (and logged), not retried forever."""
OptChange = Literal["out", "in"]


@dataclass(frozen=True)
class InboundResult:
    new: bool
    """False for a provider's retry of a message already stored."""
    contact_id: int
    inbound_id: int
    route: bool
    """True when this caller holds the routing lease and must route the message now."""
    opted: OptChange | None = None
    """What the message did to the contact's opt-outs: ``out`` for a STOP, ``in`` only for a
    START that lifted one; None otherwise (a "yes" from a contact not opted out is just a
    word), and for a retry (the first delivery acted on it)."""


@dataclass(frozen=True)
class UnroutedMessage:
    inbound_id: int
    route_channel: str
    channel: str
    provider_message_id: str
    address: str
    contact_id: int | None
    body: str
    kind: str
    reply_id: str | None
    received_at: datetime


class InboundStore:
    sessions: sessionmaker[Session]

    def record_inbound(
        self,
        channel: str,
        provider_message_id: str,
        address: str,
        *,
        body: str,
        received_at: datetime,
        kind: str = "text",
        reply_id: str | None = None,
        name: str | None = None,
        route_channel: str | None = None,
        opt: OptChange | None = None,
    ) -> InboundResult:
        """Keep the message once, find or create its contact, move the WhatsApp window
        forward and apply an opt-out (``opt="out"``) or opt-in, all in one transaction: a
        STOP is never stored without its suppression. An opt-in lifts only what the contact
        (or their provider) opted out of on this channel, never an operator's suppression or
        a mail unsubscribe. With ``route_channel`` the caller gets the routing lease of a new
        message, or of a retried one left unrouted."""
        return retrying_conflicts(
            self.sessions,
            lambda session: self._record(
                session,
                channel,
                provider_message_id,
                address,
                body=body,
                received_at=received_at,
                kind=kind,
                reply_id=reply_id,
                name=name,
                route_channel=route_channel,
                opt=opt,
            ),
        )

    def _record(
        self,
        session: Session,
        channel: str,
        provider_message_id: str,
        address: str,
        *,
        body: str,
        received_at: datetime,
        kind: str,
        reply_id: str | None,
        name: str | None,
        route_channel: str | None,
        opt: OptChange | None,
    ) -> InboundResult:
        contact_id = session.connection().scalar(
            select(ContactChannel.contact_id).where(
                ContactChannel.channel == channel, ContactChannel.address == address
            )
        )
        if contact_id is None:
            contact_id = _channel_link(session, channel, address, name=name).contact_id
        now = utcnow()
        values = {
            "channel": channel,
            "provider_message_id": provider_message_id,
            "contact_id": contact_id,
            "address": address,
            "body": body,
            "kind": kind,
            "reply_id": reply_id,
            "received_at": received_at,
            "route_channel": route_channel,
            "route_claimed_at": now if route_channel else None,
            "route_attempts": 1 if route_channel else 0,
        }
        inserted = session.connection().scalar(
            insert_new(session, InboundMessage, ["channel", "provider_message_id"])
            .values(**values)
            .returning(InboundMessage.id)
        )
        if inserted is None:  # a provider's retry: route it only if nobody has, or is
            existing = session.connection().scalar(
                select(InboundMessage.id).where(
                    InboundMessage.channel == channel,
                    InboundMessage.provider_message_id == provider_message_id,
                )
            )
            assert existing is not None
            return InboundResult(
                new=False,
                contact_id=contact_id,
                inbound_id=existing,
                route=_take_lease(session, existing, now),
            )
        # The WhatsApp window runs from the latest message, whatever order they arrive in.
        session.connection().execute(
            update(ContactChannel)
            .where(
                ContactChannel.channel == channel,
                ContactChannel.address == address,
                or_(
                    ContactChannel.last_inbound_at.is_(None),
                    ContactChannel.last_inbound_at < received_at,
                ),
            )
            .values(last_inbound_at=received_at)
        )
        opted = None
        if opt is not None and _apply_opt(session, channel, address, opt, body):
            opted = opt
        session.add(  # automation rules are triggered by it; stored with the message or not at all
            BusinessEvent(
                idempotency_key=f"inbound:{inserted}",
                name=Trigger.message_received,
                source=f"inbound:{channel}",
                contact_id=contact_id,
                channel=channel,
                address=address,
                payload={
                    "inbound_id": inserted,
                    "channel": channel,
                    "kind": kind,
                    "text": limits.cut(body, limits.EVENT_TEXT),
                    "reply_id": reply_id,
                },
                created_at=received_at,
            )
        )
        return InboundResult(
            new=True,
            contact_id=contact_id,
            inbound_id=inserted,
            route=bool(route_channel),
            opted=opted,
        )

    def mark_routed(self, inbound_id: int) -> None:
        with self.sessions.begin() as session:
            session.connection().execute(
                update(InboundMessage)
                .where(InboundMessage.id == inbound_id)
                .values(routed_at=utcnow(), route_claimed_at=None)
            )

    def take_unrouted(self, *, max_age: timedelta, limit: int = 100) -> list[UnroutedMessage]:
        """Lease messages left unrouted (their router died or gave up), oldest first; only
        those received within ``max_age`` (an answer a day late is no answer)."""
        now = utcnow()
        with self.sessions.begin() as session:
            candidates = list(
                session.scalars(
                    select(InboundMessage)
                    .where(
                        InboundMessage.routed_at.is_(None),
                        InboundMessage.route_channel.is_not(None),
                        InboundMessage.received_at >= now - max_age,
                        InboundMessage.route_attempts < MAX_ROUTE_ATTEMPTS,
                        or_(
                            InboundMessage.route_claimed_at.is_(None),
                            InboundMessage.route_claimed_at < now - ROUTE_LEASE,
                        ),
                    )
                    .order_by(InboundMessage.received_at, InboundMessage.id)
                    .limit(limit)
                )
            )
            taken = [row for row in candidates if _take_lease(session, row.id, now)]
            return [
                UnroutedMessage(
                    inbound_id=row.id,
                    route_channel=row.route_channel or "",
                    channel=row.channel,
                    provider_message_id=row.provider_message_id,
                    address=row.address,
                    contact_id=row.contact_id,
                    body=row.body,
                    kind=row.kind,
                    reply_id=row.reply_id,
                    received_at=row.received_at,
                )
                for row in taken
            ]

    def last_inbound(self, channel: str, address: str) -> datetime | None:
        with self.sessions() as session:
            return session.scalar(
                select(ContactChannel.last_inbound_at).where(
                    ContactChannel.channel == channel, ContactChannel.address == address
                )
            )

    def contact_for(self, channel: str, address: str) -> int:
        """The contact known by this address, created when new."""
        return retrying_conflicts(
            self.sessions, lambda session: _channel_link(session, channel, address).contact_id
        )

    def count_inbound(self) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count(InboundMessage.id))) or 0)


def _take_lease(session: Session, inbound_id: int, now: datetime) -> bool:
    """One conditional UPDATE: of two processes asking at once, one gets the lease."""
    result = session.connection().execute(
        update(InboundMessage)
        .where(
            InboundMessage.id == inbound_id,
            InboundMessage.routed_at.is_(None),
            InboundMessage.route_channel.is_not(None),
            InboundMessage.route_attempts < MAX_ROUTE_ATTEMPTS,
            or_(
                InboundMessage.route_claimed_at.is_(None),
                InboundMessage.route_claimed_at < now - ROUTE_LEASE,
            ),
        )
        .values(route_claimed_at=now, route_attempts=InboundMessage.route_attempts + 1)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def _apply_opt(session: Session, channel: str, address: str, opt: OptChange, body: str) -> bool:
    """False for a START that found nothing of the contact's own to lift."""
    on_channel = (Suppression.channel == channel, Suppression.address == address)
    if opt == "in":
        lifted = session.connection().execute(
            delete(Suppression).where(*on_channel, Suppression.source.in_(LIFTED_BY_START))
        )
        return bool(getattr(lifted, "rowcount", 0))
    existing = session.scalar(
        select(Suppression.id).where(
            *on_channel, Suppression.scope == "all", Suppression.source == OptOutSource.keyword
        )
    )
    if existing is None:
        session.add(
            Suppression(
                channel=channel,
                address=address,
                scope="all",
                reason=f"replied {body.strip()!r}",
                source=OptOutSource.keyword,
            )
        )
    return True


def _channel_link(
    session: Session, channel: str, address: str, *, name: str | None = None
) -> ContactChannel:
    link = session.scalar(
        select(ContactChannel).where(
            ContactChannel.channel == channel, ContactChannel.address == address
        )
    )
    if link is not None:
        return link
    contact = Contact(source=channel, external_id=address, name=name)
    if "@" in address:
        contact.email = address
    else:
        contact.phone = address
    session.add(contact)
    session.flush()
    link = ContactChannel(contact_id=contact.id, channel=channel, address=address)
    session.add(link)
    session.flush()
    return link
