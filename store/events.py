"""Store operations for leads and business events, and a contact's activity.

A mixin of ``Store``. An event is stored once per idempotency key, in the same transaction as
what raised it: a contact created with its ``new_lead``, a status changed with its
``lead_status_changed``, an inbound message with its ``message_received``
(``store/inbound.py``). Automation rules read these rows; none of them is lost to a crash
between the change and its event, and none is raised twice by a retry.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import or_, select, text
from sqlalchemy.orm import Session

from domain import limits
from domain.events import Trigger, json_size, merge_fields
from store.db import lock_for_writing, retrying_conflicts
from store.delivery import ContactView, _contact_view
from store.models import (
    AutomationRun,
    BusinessEvent,
    Contact,
    ContactChannel,
    InboundMessage,
    OutboxMessage,
    utcnow,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

API_SOURCE = "api"
"""``Contact.source`` of contacts created through the API, and the source of its events."""
API_KEY_PREFIX = "api:"
"""A caller's idempotency key is kept under this prefix: it can never match a key of ours."""
ADDRESS_LOCKS = 0x4144
"""The first key of ``_lock_addresses``' PostgreSQL advisory locks: their own key space."""
ActivityKind = Literal["event", "message_in", "message_out", "automation_run"]


class DuplicateAddress(Exception):
    """The address already belongs to a contact: the caller updates that one instead."""

    def __init__(self, field_name: str, contact_id: int) -> None:
        super().__init__(f"{field_name}: already the address of contact {contact_id}")
        self.field_name = field_name
        self.contact_id = contact_id


class FieldsTooLarge(Exception):
    """Merged, the contact's custom fields would be longer than ``limits.CUSTOM_FIELDS``."""

    def __init__(self, size: int) -> None:
        super().__init__(
            f"fields: merged, {size} characters as JSON; at most {limits.CUSTOM_FIELDS}"
        )


class NoContact(Exception):
    def __init__(self, contact_id: int) -> None:
        super().__init__(f"contact_id: no contact {contact_id}")
        self.contact_id = contact_id


@dataclass(frozen=True)
class EventView:
    id: int
    type: str
    source: str
    contact_id: int | None
    channel: str | None
    address: str | None
    data: dict[str, Any]
    idempotency_key: str
    """As stored: a caller's own key is ``api:{key}``."""
    occurred_at: datetime

    @classmethod
    def of(cls, row: BusinessEvent) -> EventView:
        return cls(
            id=row.id,
            type=row.name,
            source=row.source,
            contact_id=row.contact_id,
            channel=row.channel,
            address=row.address,
            data=dict(row.payload or {}),
            idempotency_key=row.idempotency_key,
            occurred_at=row.created_at,
        )


@dataclass(frozen=True)
class Activity:
    """One line of a contact's activity: an event, a message either way, an automation run."""

    kind: ActivityKind
    id: int
    at: datetime
    type: str | None = None
    """An event's type."""
    channel: str | None = None
    status: str | None = None
    """An outbound message's status."""
    body: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def cursor(self) -> str:
        return f"{self.at.isoformat()}~{self.kind}~{self.id}"


@dataclass(frozen=True)
class Cursor:
    """Where a page of activity ended: the next page lists what sorts after it."""

    at: datetime
    kind: str
    id: int

    @classmethod
    def parse(cls, value: str) -> Cursor:
        """Raises ValueError for anything a page did not hand out."""
        at, kind, number = value.split("~")
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None:
            raise ValueError("the cursor's time has no zone")
        return cls(at=moment, kind=kind, id=int(number))


@dataclass(frozen=True)
class NewLead:
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    status: str | None = None
    lead_source: str | None = None
    tags: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    timezone: str | None = None
    locale: str | None = None
    last_contacted_at: datetime | None = None


class EventStore:
    sessions: sessionmaker[Session]

    # --- leads ----------------------------------------------------------------------

    def create_lead(self, lead: NewLead, *, now: datetime | None = None) -> ContactView:
        """A contact made through the API, with its addresses linked (an inbound message from
        them finds this contact) and its ``new_lead`` event. Raises ``DuplicateAddress`` when
        an address already belongs to a contact."""
        now = now or utcnow()

        def create(session: Session) -> ContactView:
            _lock_addresses(session, [a for a in (lead.email, lead.phone) if a])
            for field_name, address in (("email", lead.email), ("phone", lead.phone)):
                owner = _contact_by_address(session, address) if address else None
                if owner is not None:
                    raise DuplicateAddress(field_name, owner)
            contact = _new_contact(session, email=lead.email, phone=lead.phone)
            contact.name, contact.status = lead.name, lead.status
            contact.lead_source, contact.tags, contact.fields = (
                lead.lead_source,
                list(lead.tags),
                dict(lead.fields),
            )
            contact.timezone, contact.locale = lead.timezone, lead.locale
            contact.last_contacted_at = lead.last_contacted_at
            contact.last_exchange_at = lead.last_contacted_at
            session.flush()
            _add_event(
                session,
                f"contact:{contact.id}:{Trigger.new_lead}",
                Trigger.new_lead,
                contact_id=contact.id,
                data={"status": lead.status, "source": lead.lead_source, "tags": list(lead.tags)},
                at=now,
            )
            return _contact_view(session, contact)

        return retrying_conflicts(self.sessions, create)

    def patch_lead(
        self,
        contact_id: int,
        changes: dict[str, Any],
        *,
        fields_patch: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> ContactView:
        """Set the given columns (``changes``: name, email, phone, status, lead_source, tags,
        timezone, locale, last_contacted_at) and merge ``fields_patch`` into the custom
        fields (a key set to None is removed). A new status is a ``lead_status_changed``
        event with ``from`` and ``to``, in the same transaction. Raises ``NoContact`` and
        ``DuplicateAddress``."""
        now = now or utcnow()

        def patch(session: Session) -> ContactView:
            addresses = {f: changes[f] for f in ("email", "phone") if changes.get(f)}
            # The row locked too: of two changes of status at once, each sees the other's.
            on_sqlite = _lock_addresses(session, list(addresses.values()))
            row = session.get(Contact, contact_id, with_for_update=not on_sqlite)
            if row is None:
                raise NoContact(contact_id)
            for field_name, address in addresses.items():
                owner = _contact_by_address(session, address)
                if owner is not None and owner != contact_id:
                    raise DuplicateAddress(field_name, owner)
            before = row.status
            for name, value in changes.items():
                setattr(row, name, value)
            if "last_contacted_at" in changes:  # an operator says when: the spell begins then
                row.last_exchange_at = changes["last_contacted_at"]
            if fields_patch is not None:
                row.fields = merge_fields(dict(row.fields or {}), fields_patch)
                if json_size(row.fields) > limits.CUSTOM_FIELDS:
                    raise FieldsTooLarge(json_size(row.fields))
            session.flush()
            if "status" in changes and changes["status"] != before:
                _add_event(
                    session,
                    f"contact:{contact_id}:{Trigger.lead_status_changed}:{uuid.uuid4().hex}",
                    Trigger.lead_status_changed,
                    contact_id=contact_id,
                    data={"from": before, "to": changes["status"]},
                    at=now,
                )
            return _contact_view(session, row)

        return retrying_conflicts(self.sessions, patch)

    # --- events ---------------------------------------------------------------------

    def raise_event(
        self,
        type_: str,
        *,
        data: dict[str, Any],
        contact_id: int | None = None,
        email: str | None = None,
        phone: str | None = None,
        key: str | None = None,
        now: datetime | None = None,
    ) -> tuple[EventView, bool]:
        """An outside system's event (``POST /v1/events``), for ``contact_id`` or for the
        contact known by ``email``/``phone`` (created when nobody is). With ``key``, the event
        is stored once: a second call with the key returns the first event and False,
        whatever else it says. Raises ``NoContact``."""
        now = now or utcnow()
        stored_key = API_KEY_PREFIX + key if key is not None else f"auto:{uuid.uuid4().hex}"

        def raise_(session: Session) -> tuple[EventView, bool]:
            addresses = [a for a in (email, phone) if a]
            _lock_addresses(session, addresses)
            seen = session.scalar(
                select(BusinessEvent).where(BusinessEvent.idempotency_key == stored_key)
            )
            if seen is not None:
                return EventView.of(seen), False
            found = contact_id
            if found is not None:
                if session.get(Contact, found) is None:
                    raise NoContact(found)
            else:
                for address in addresses:
                    found = _contact_by_address(session, address)
                    if found is not None:
                        break
                if found is None:
                    found = _new_contact(session, email=email, phone=phone).id
            row = _add_event(session, stored_key, type_, contact_id=found, data=data, at=now)
            return EventView.of(row), True

        return retrying_conflicts(self.sessions, raise_)

    def get_event(self, event_id: int) -> EventView | None:
        with self.sessions() as session:
            row = session.get(BusinessEvent, event_id)
            return None if row is None else EventView.of(row)

    def list_events(
        self, *, contact_id: int | None = None, type_: str | None = None, limit: int = 100
    ) -> list[EventView]:
        query = select(BusinessEvent).order_by(
            BusinessEvent.created_at.desc(), BusinessEvent.id.desc()
        )
        if contact_id is not None:
            query = query.where(BusinessEvent.contact_id == contact_id)
        if type_ is not None:
            query = query.where(BusinessEvent.name == type_)
        with self.sessions() as session:
            return [EventView.of(row) for row in session.scalars(query.limit(limit))]

    # --- activity -------------------------------------------------------------------

    def contact_activity(
        self, contact_id: int, *, limit: int = 50, before: Cursor | None = None
    ) -> list[Activity] | None:
        """The contact's events, messages (outbox rows and inbound messages) and automation
        runs, newest first, ``limit`` after ``before``; None when there is no such contact.

        Each kind is read newest first up to ``limit`` and the lists merged: a page is at
        most ``limit`` rows from each table, whatever their sizes."""
        with self.sessions() as session:
            if session.get(Contact, contact_id) is None:
                return None
            found: list[Activity] = []
            for kind, model, at_column, read in _SOURCES:
                query = (
                    select(model)
                    .where(model.contact_id == contact_id)
                    .order_by(at_column.desc(), model.id.desc())
                    .limit(limit)
                )
                if before is not None:
                    query = query.where(_after(kind, at_column, model.id, before))
                found += [read(row) for row in session.scalars(query)]
        found.sort(key=lambda item: (item.at, item.kind, item.id), reverse=True)
        return found[:limit]


def _after(kind: str, at_column: Any, id_column: Any, before: Cursor) -> Any:
    """The rows that sort after ``before`` in (time, kind, id) descending order."""
    if kind < before.kind:
        return at_column <= before.at
    if kind > before.kind:
        return at_column < before.at
    return or_(at_column < before.at, (at_column == before.at) & (id_column < before.id))


def _event_activity(row: BusinessEvent) -> Activity:
    return Activity(
        kind="event",
        id=row.id,
        at=row.created_at,
        type=row.name,
        channel=row.channel,
        data=dict(row.payload or {}),
    )


def _inbound_activity(row: InboundMessage) -> Activity:
    return Activity(
        kind="message_in",
        id=row.id,
        at=row.received_at,
        channel=row.channel,
        body=row.body,
        data={"kind": row.kind, "reply_id": row.reply_id} if row.reply_id else {},
    )


def _outbox_activity(row: OutboxMessage) -> Activity:
    return Activity(
        kind="message_out",
        id=row.id,
        at=row.created_at,
        channel=row.channel,
        status=row.status,
        body=row.body,
        data={"workflow_id": row.workflow_id, "message_class": row.message_class},
    )


def _run_activity(row: AutomationRun) -> Activity:
    return Activity(
        kind="automation_run",
        id=row.id,
        at=row.created_at,
        type=row.automation_name,
        channel=row.channel,
        status=row.status,
        body=row.message,
        data={
            "automation_id": row.automation_id,
            "workflow_id": row.workflow_id,
            "due_at": row.due_at.isoformat(),
            "reason": row.reason,
        },
    )


_SOURCES: tuple[tuple[ActivityKind, Any, Any, Any], ...] = (
    ("event", BusinessEvent, BusinessEvent.created_at, _event_activity),
    ("message_in", InboundMessage, InboundMessage.received_at, _inbound_activity),
    ("message_out", OutboxMessage, OutboxMessage.created_at, _outbox_activity),
    ("automation_run", AutomationRun, AutomationRun.created_at, _run_activity),
)


def _add_event(
    session: Session,
    key: str,
    type_: str,
    *,
    contact_id: int | None,
    data: dict[str, Any],
    at: datetime,
    source: str = API_SOURCE,
    channel: str | None = None,
    address: str | None = None,
) -> BusinessEvent:
    row = BusinessEvent(
        idempotency_key=key,
        name=type_,
        source=source,
        contact_id=contact_id,
        channel=channel,
        address=address,
        payload=data,
        created_at=at,
    )
    session.add(row)
    session.flush()
    return row


def _contact_by_address(session: Session, address: str) -> int | None:
    """The contact whose e-mail address or phone number this is, on any channel."""
    owner = session.scalar(
        select(Contact.id)
        .where(or_(Contact.email == address, Contact.phone == address))
        .order_by(Contact.id)
        .limit(1)
    )
    if owner is not None:
        return owner
    return session.scalar(
        select(ContactChannel.contact_id)
        .where(ContactChannel.address == address)
        .order_by(ContactChannel.contact_id)
        .limit(1)
    )


def _new_contact(session: Session, *, email: str | None, phone: str | None) -> Contact:
    """A contact the API made, linked to its addresses: e-mail, and a phone number on SMS
    and WhatsApp, so a message from either finds this contact rather than making another."""
    contact = Contact(
        source=API_SOURCE,
        external_id=uuid.uuid4().hex,
        email=email,
        phone=phone,
        tags=[],
        fields={},
    )
    session.add(contact)
    session.flush()
    links = [("email", email)] if email else []
    links += [("sms", phone), ("whatsapp", phone)] if phone else []
    for channel, address in links:
        if (
            session.scalar(
                select(ContactChannel.id).where(
                    ContactChannel.channel == channel, ContactChannel.address == address
                )
            )
            is None
        ):
            session.add(ContactChannel(contact_id=contact.id, channel=channel, address=address))
    session.flush()
    return contact


def _lock_addresses(session: Session, addresses: list[str]) -> bool:
    """Serialise the transactions that look an address up and may give it to a new contact,
    so two calls for one new address make one contact: SQLite's write lock, or a PostgreSQL
    advisory lock per address (in one order, so two callers never wait on each other). Must
    be the transaction's first statement; True on SQLite (the whole database is locked)."""
    if lock_for_writing(session):
        return True
    for address in sorted(set(addresses)):
        digest = int.from_bytes(hashlib.sha256(address.encode()).digest()[:4], "big", signed=True)
        session.execute(
            text("SELECT pg_advisory_xact_lock(:space, :key)"),
            {"space": ADDRESS_LOCKS, "key": digest},
        )
    return False
