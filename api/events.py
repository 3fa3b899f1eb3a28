"""``/v1/events``: any outside system raises an event for a contact (a booking made, a session
completed, an order paid), and ``/v1/contacts/{id}/activity``: a contact's events, messages
and automation runs, newest first. Automation rules are triggered by these events."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from dependencies import (
    AdminToken,
    AutomationsDep,
    SettingsDep,
    StoreDep,
    UserToken,
    checked_addresses,
)
from domain import limits
from domain.automations import TIMER_TRIGGERS
from domain.events import json_size, type_problem
from store.events import API_KEY_PREFIX, Cursor, EventView, NoContact

router = APIRouter(prefix="/v1", tags=["events"])

FieldName = Annotated[str, StringConstraints(max_length=limits.KEY_NAME)]


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(
        max_length=limits.EVENT_NAME,
        description="a slug: a-z, 0-9 and _ . : - (e.g. booking_created)",
    )
    contact_id: int | None = Field(default=None, ge=1, le=limits.RECORD_ID)
    email: str | None = Field(
        default=None,
        max_length=limits.ADDRESS,
        description="instead of contact_id: the contact known by it, created when nobody is",
    )
    phone: str | None = Field(default=None, max_length=limits.ADDRESS)
    data: dict[FieldName, Any] = Field(
        default_factory=dict,
        description=f"a JSON object, at most {limits.EVENT_DATA} characters",
    )
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=limits.EVENT_KEY,
        description="an event with a key already seen is not stored again: the first is returned",
    )

    @field_validator("type")
    @classmethod
    def _slug(cls, value: str) -> str:
        problem = type_problem(value)
        if problem is not None:
            raise ValueError(problem)
        if value in TIMER_TRIGGERS:
            raise ValueError(
                f"{value} is not raised: Nudge times it (a contact's quiet spell, a booking's "
                "start); raise the event that changed them instead"
            )
        return value

    @field_validator("data")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        if json_size(value) > limits.EVENT_DATA:
            raise ValueError(f"at most {limits.EVENT_DATA} characters as JSON")
        return value


class EventOut(BaseModel):
    id: int
    type: str
    contact_id: int | None
    source: str = Field(description="who raised it: api, menu:{name}, inbound:{channel}")
    channel: str | None
    data: dict[str, Any]
    idempotency_key: str | None = Field(description="the caller's key, when it gave one")
    occurred_at: datetime


def event_out(event: EventView) -> EventOut:
    key = event.idempotency_key
    return EventOut(
        id=event.id,
        type=event.type,
        contact_id=event.contact_id,
        source=event.source,
        channel=event.channel,
        data=event.data,
        idempotency_key=key.removeprefix(API_KEY_PREFIX)
        if key.startswith(API_KEY_PREFIX)
        else None,
        occurred_at=event.occurred_at,
    )


def _refuse(loc: list[str], msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": loc, "msg": msg, "type": "value_error"}])


@router.post(
    "/events",
    response_model=EventOut,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": EventOut, "description": "the key was seen: the stored event"}},
)
async def raise_event(
    body: EventIn,
    response: Response,
    _: AdminToken,
    store: StoreDep,
    settings: SettingsDep,
    automations: AutomationsDep,
) -> EventOut:
    """Raise an event for ``contact_id``, or for the contact known by ``email``/``phone``
    (created when nobody is; no ``new_lead`` for it). 201 with the event; 200 with the
    stored one when ``idempotency_key`` was seen (whatever else this call says)."""
    given = [("email", body.email), ("phone", body.phone)]
    if body.contact_id is not None and any(address for _, address in given):
        raise _refuse(["body", "contact_id"], "contact_id: give contact_id or an address, not both")
    checks = [(["body", f], "email" if f == "email" else "sms", a) for f, a in given if a]
    if body.contact_id is None and not checks:
        raise _refuse(["body", "contact_id"], "contact_id: give contact_id, email or phone")
    spelled = dict(
        zip([f for f, a in given if a], checked_addresses(settings, checks), strict=True)
    )
    try:
        event, new = await asyncio.to_thread(
            store.raise_event,
            body.type,
            data=body.data,
            contact_id=body.contact_id,
            email=spelled.get("email"),
            phone=spelled.get("phone"),
            key=body.idempotency_key,
        )
    except NoContact as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    if not new:
        response.status_code = status.HTTP_200_OK
    else:
        await automations.dispatch(event)
    return event_out(event)


class ActivityOut(BaseModel):
    kind: Literal["event", "message_in", "message_out", "automation_run"]
    id: int = Field(description="the row's id in its own kind")
    at: datetime
    type: str | None = Field(description="an event's type; an automation run's rule name")
    channel: str | None
    status: str | None = Field(description="an outbound message's or automation run's status")
    body: str | None = Field(description="a message's text")
    data: dict[str, Any]


class ActivityPage(BaseModel):
    items: list[ActivityOut]
    next_before: str | None = Field(description="pass as `before` for the next page")


ActivityContactId = Annotated[int, Path(ge=1, le=limits.RECORD_ID)]


@router.get("/contacts/{contact_id}/activity", response_model=ActivityPage)
async def contact_activity(
    contact_id: ActivityContactId,
    _: UserToken,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(max_length=100)] = None,
) -> ActivityPage:
    """The contact's events, messages (sent and received) and automation runs, newest
    first; ``before`` is the ``next_before`` of the previous page."""
    cursor = None
    if before is not None:
        try:
            cursor = Cursor.parse(before)
        except ValueError as exc:
            raise _refuse(
                ["query", "before"], "before: pass the next_before of a previous page"
            ) from exc
    found = await asyncio.to_thread(store.contact_activity, contact_id, limit=limit, before=cursor)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"contact_id: no contact {contact_id}")
    items = [ActivityOut(**item.__dict__) for item in found]
    return ActivityPage(items=items, next_before=found[-1].cursor if len(found) == limit else None)
