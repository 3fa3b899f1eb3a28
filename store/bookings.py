"""Store operations of bookings: a mixin of ``Store``.

A booking is made, moved, cancelled or completed with its event in the same transaction
(``booking_created``, ``booking_rescheduled``, ``booking_cancelled``, ``session_completed``),
so rules triggered by it never miss one and never see one twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from domain.automation_runs import BookingPlan, BookingStatus, ReminderRule
from domain.events import Trigger
from store.automations import StoredRule
from store.db import retrying_conflicts
from store.events import EventView, NoContact, _add_event
from store.models import Automation, Booking, Contact, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

RESCHEDULED = "booking_rescheduled"
CANCELLED = "booking_cancelled"


class NoBooking(Exception):
    def __init__(self, booking_id: int) -> None:
        super().__init__(f"no booking {booking_id}")
        self.booking_id = booking_id


class BookingClosed(Exception):
    """A cancelled or completed booking is not moved or changed again."""

    def __init__(self, booking_id: int, status: str) -> None:
        super().__init__(f"booking {booking_id} is {status}; it cannot change any more")
        self.status = status


@dataclass(frozen=True)
class BookingView:
    id: int
    contact_id: int
    starts_at: datetime
    timezone: str | None
    service: str | None
    location: str | None
    notes: str | None
    status: BookingStatus
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Booking) -> BookingView:
        return cls(
            id=row.id,
            contact_id=row.contact_id,
            starts_at=row.starts_at,
            timezone=row.timezone,
            service=row.service,
            location=row.location,
            notes=row.notes,
            status=BookingStatus(row.status),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def event_data(self) -> dict[str, Any]:
        """What a rule's conditions (``event.service``) and templates (``{{service}}``) read."""
        return {
            "booking_id": self.id,
            "starts_at": self.starts_at.isoformat(),
            "timezone": self.timezone,
            "service": self.service,
            "location": self.location,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class NewBooking:
    contact_id: int
    starts_at: datetime
    timezone: str | None = None
    service: str | None = None
    location: str | None = None
    notes: str | None = None


class BookingStore:
    sessions: sessionmaker[Session]

    def create_booking(
        self, booking: NewBooking, *, now: datetime | None = None
    ) -> tuple[BookingView, EventView]:
        """Raises ``NoContact``."""
        now = now or utcnow()

        def create(session: Session) -> tuple[BookingView, EventView]:
            if session.get(Contact, booking.contact_id) is None:
                raise NoContact(booking.contact_id)
            row = Booking(
                contact_id=booking.contact_id,
                starts_at=booking.starts_at,
                timezone=booking.timezone,
                service=booking.service,
                location=booking.location,
                notes=booking.notes,
                status=BookingStatus.booked.value,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            view = BookingView.of(row)
            event = _add_event(
                session,
                f"booking:{row.id}:{Trigger.booking_created}",
                Trigger.booking_created,
                contact_id=row.contact_id,
                data=view.event_data(),
                at=now,
            )
            return view, EventView.of(event)

        return retrying_conflicts(self.sessions, create)

    def change_booking(
        self, booking_id: int, changes: dict[str, Any], *, now: datetime | None = None
    ) -> tuple[BookingView, EventView | None]:
        """Set ``changes`` (starts_at, timezone, service, location, notes, status). A new
        start time is a ``booking_rescheduled`` event (``from``, ``to``), ``cancelled`` a
        ``booking_cancelled`` event, ``completed`` a ``session_completed`` event. Raises
        ``NoBooking`` and ``BookingClosed``."""
        now = now or utcnow()

        def change(session: Session) -> tuple[BookingView, EventView | None]:
            row = session.get(Booking, booking_id, with_for_update=True)
            if row is None:
                raise NoBooking(booking_id)
            if row.status != BookingStatus.booked:
                raise BookingClosed(booking_id, row.status)
            before = row.starts_at
            for name, value in changes.items():
                setattr(row, name, value.value if isinstance(value, BookingStatus) else value)
            row.updated_at = now
            session.flush()
            view = BookingView.of(row)
            kind: str | None = None
            data = view.event_data()
            if view.status == BookingStatus.cancelled:
                kind = CANCELLED
            elif view.status == BookingStatus.completed:
                kind = Trigger.session_completed
            elif "starts_at" in changes and view.starts_at != before:
                kind = RESCHEDULED
                data = {**data, "from": before.isoformat(), "to": view.starts_at.isoformat()}
            if kind is None:
                return view, None
            event = _add_event(
                session,
                f"booking:{booking_id}:{kind}:{uuid.uuid4().hex}",
                kind,
                contact_id=row.contact_id,
                data=data,
                at=now,
            )
            return view, EventView.of(event)

        return retrying_conflicts(self.sessions, change)

    def get_booking(self, booking_id: int) -> BookingView | None:
        with self.sessions() as session:
            row = session.get(Booking, booking_id)
            return None if row is None else BookingView.of(row)

    def list_bookings(
        self,
        *,
        contact_id: int | None = None,
        starts_from: datetime | None = None,
        starts_to: datetime | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[BookingView]:
        """By start time, earliest first; ``starts_to`` is exclusive."""
        query = select(Booking).order_by(Booking.starts_at, Booking.id)
        if contact_id is not None:
            query = query.where(Booking.contact_id == contact_id)
        if starts_from is not None:
            query = query.where(Booking.starts_at >= starts_from)
        if starts_to is not None:
            query = query.where(Booking.starts_at < starts_to)
        if status is not None:
            query = query.where(Booking.status == status)
        with self.sessions() as session:
            return [
                BookingView.of(row) for row in session.scalars(query.limit(limit).offset(offset))
            ]

    def booking_plan(self, booking_id: int) -> BookingPlan:
        """The booking as its reminder sees it, with the ``booking_reminder_hours`` rules
        switched on (their conditions are checked when each reminder is due)."""
        with self.sessions() as session:
            row = session.get(Booking, booking_id)
            if row is None:
                return BookingPlan(exists=False)
            rules = [
                StoredRule.of(rule)
                for rule in session.scalars(
                    select(Automation)
                    .where(
                        Automation.trigger == Trigger.booking_reminder_hours,
                        Automation.enabled.is_(True),
                    )
                    .order_by(Automation.id)
                )
            ]
            view = BookingView.of(row)
        return BookingPlan(
            exists=True,
            contact_id=view.contact_id,
            status=view.status,
            starts_at=view.starts_at,
            rules=[ReminderRule(rule_id=r.id, before=r.rule.delay) for r in rules],
            data=view.event_data(),
        )

    def upcoming_bookings(
        self, *, after: datetime, limit: int = 1000, offset: int = 0
    ) -> list[int]:
        """Booked bookings that start after ``after``: a new reminder rule covers them."""
        query = (
            select(Booking.id)
            .where(Booking.status == BookingStatus.booked, Booking.starts_at > after)
            .order_by(Booking.id)
            .limit(limit)
            .offset(offset)
        )
        with self.sessions() as session:
            return list(session.scalars(query))
