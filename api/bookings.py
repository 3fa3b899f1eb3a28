"""``/v1/bookings``: appointments a contact made (a consultation, a class, a call), so rules
can remind before them and follow up after.

A booking is stored with its event in one transaction (``store/bookings.py``): made is
``booking_created``, moved ``booking_rescheduled`` (``from``, ``to``), cancelled
``booking_cancelled``, completed ``session_completed``. Each is then dispatched to the
automation rules and the booking's reminder is told; with Temporal unreachable that is
logged and the event dispatched later, the booking saved either way. Times carry their
offset: a naive ``09:00`` would mean whatever the server's clock says, so it is refused.
They are stored and answered in UTC (the same in the answer to ``POST`` as in every later
``GET`` and in the events); ``timezone`` says how the contact reads them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.contacts import check_zone
from api.moments import UtcMoment
from dependencies import AdminToken, AutomationsDep, StoreDep, UserToken
from domain import limits
from domain.automation_runs import BookingStatus
from store.bookings import BookingClosed, BookingView, NewBooking, NoBooking
from store.events import NoContact

router = APIRouter(prefix="/v1", tags=["bookings"])

BookingId = Annotated[int, Path(ge=1, le=limits.RECORD_ID)]
STARTS_AT = "when it starts, with its offset: 2026-03-02T09:00:00+01:00"
TIMEZONE = "IANA zone the contact reads its time in, e.g. Europe/Paris"


class BookingFields(BaseModel):
    """What a booking has beyond its contact and time: shared by ``POST`` and ``PATCH``."""

    model_config = ConfigDict(extra="forbid")  # a misspelled field is named, not ignored

    timezone: str | None = Field(default=None, max_length=limits.TIMEZONE, description=TIMEZONE)
    service: str | None = Field(
        default=None, max_length=limits.BOOKING_SERVICE, description="e.g. Initial consultation"
    )
    location: str | None = Field(
        default=None, max_length=limits.BOOKING_LOCATION, description="an address or a link"
    )
    notes: str | None = Field(default=None, max_length=limits.BOOKING_NOTES)

    _zone = field_validator("timezone")(check_zone)


class BookingCreate(BookingFields):
    contact_id: int = Field(ge=1, le=limits.RECORD_ID)
    starts_at: UtcMoment = Field(description=STARTS_AT)


class BookingPatch(BookingFields):
    """Only the fields given change: a new ``starts_at`` reschedules, ``status`` cancels or
    completes. A field given as null is cleared (``starts_at`` and ``status`` cannot be)."""

    starts_at: UtcMoment | None = Field(default=None, description=STARTS_AT)
    status: Literal["cancelled", "completed"] | None = Field(
        default=None,
        description="cancelled, or completed (a session_completed event); a booking is "
        "booked when made and cannot be booked again",
    )

    @field_validator("starts_at", "status")
    @classmethod
    def _not_cleared(cls, value: Any) -> Any:
        # Runs only for a value given: left out, the field is not changed.
        if value is None:
            raise ValueError("cannot be null; leave it out to keep it")
        return value


class BookingOut(BaseModel):
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


def booking_out(view: BookingView) -> BookingOut:
    return BookingOut(**view.__dict__)


@router.post("/bookings", response_model=BookingOut, status_code=status.HTTP_201_CREATED)
async def create_booking(
    body: BookingCreate, _: AdminToken, store: StoreDep, automations: AutomationsDep
) -> BookingOut:
    """A booking for ``contact_id`` (a ``booking_created`` event): 201 with it, 404 when
    there is no such contact."""
    booking = NewBooking(
        contact_id=body.contact_id,
        starts_at=body.starts_at.astimezone(UTC),
        timezone=body.timezone,
        service=body.service,
        location=body.location,
        notes=body.notes,
    )
    try:
        view, event = await asyncio.to_thread(store.create_booking, booking)
    except NoContact as exc:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"contact_id: no contact {body.contact_id}"
        ) from exc
    await automations.booking_saved(view, event)
    return booking_out(view)


@router.patch("/bookings/{booking_id}", response_model=BookingOut)
async def change_booking(
    booking_id: BookingId,
    body: BookingPatch,
    _: AdminToken,
    store: StoreDep,
    automations: AutomationsDep,
) -> BookingOut:
    """Reschedule (``starts_at``), cancel or complete (``status``), or change the service,
    location, notes or time zone. 409 once the booking is cancelled or completed."""
    changes: dict[str, Any] = body.model_dump(exclude_unset=True, exclude={"status"})
    if body.starts_at is not None:
        changes["starts_at"] = body.starts_at.astimezone(UTC)
    if body.status is not None:
        changes["status"] = BookingStatus(body.status)
    try:
        view, event = await asyncio.to_thread(store.change_booking, booking_id, changes)
    except NoBooking as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except BookingClosed as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    await automations.booking_saved(view, event)
    return booking_out(view)


@router.get("/bookings", response_model=list[BookingOut])
async def list_bookings(
    _: UserToken,
    store: StoreDep,
    contact_id: Annotated[int | None, Query(ge=1, le=limits.RECORD_ID)] = None,
    starts_from: Annotated[
        UtcMoment | None, Query(alias="from", description="starts at or after, with offset")
    ] = None,
    starts_to: Annotated[
        UtcMoment | None, Query(alias="to", description="starts before, with offset")
    ] = None,
    booking_status: Annotated[BookingStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=limits.MAX_OFFSET)] = 0,
) -> list[BookingOut]:
    """Bookings by start time, earliest first; ``from`` inclusive, ``to`` exclusive."""
    found = await asyncio.to_thread(
        store.list_bookings,
        contact_id=contact_id,
        starts_from=starts_from,
        starts_to=starts_to,
        status=booking_status.value if booking_status is not None else None,
        limit=limit,
        offset=offset,
    )
    return [booking_out(view) for view in found]


@router.get("/bookings/{booking_id}", response_model=BookingOut)
async def get_booking(booking_id: BookingId, _: UserToken, store: StoreDep) -> BookingOut:
    view = await asyncio.to_thread(store.get_booking, booking_id)
    if view is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no booking {booking_id}")
    return booking_out(view)
