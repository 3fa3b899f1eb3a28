"""``/v1/scheduled-followups``: follow-ups a business schedules for its users, paid in credits.

Scheduling reserves the template's ``credits_cost`` and starts a ``ScheduledFollowUp``
workflow (``scheduled:{id}``, visible in the Temporal Web UI). The credits are captured when
the message is accepted by its provider, and released when it is cancelled or cannot be
delivered. Admin tokens see every follow-up; a contact token (``POST
/v1/contacts/{id}/tokens``) sees, schedules and cancels only its own, and gets 404 for any
other, so ids cannot be probed.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from api.moments import UtcMoment
from dependencies import (
    AnyToken,
    SchedulerDep,
    SettingsDep,
    StoreDep,
    checked_address,
    own_contact_id,
    visible_contact,
)
from domain import limits
from domain.channels import ChannelName
from domain.scheduled_followups import ScheduleStatus
from followup_schedules import Refused, ScheduleRequest
from settings import Settings
from store.repo import Store, TokenInfo
from store.scheduled_followups import ScheduleFilter, ScheduleView

router = APIRouter(prefix="/v1/scheduled-followups", tags=["scheduled follow-ups"])

ScheduleId = Annotated[int, Path(ge=1, le=limits.RECORD_ID)]
KeyName = Annotated[str, StringConstraints(max_length=limits.KEY_NAME)]
Value = Annotated[str, StringConstraints(max_length=limits.TEMPLATE_VARIABLE)]


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_id: int | None = Field(default=None, ge=1, le=limits.RECORD_ID)
    user_email: str | None = Field(default=None, max_length=limits.ADDRESS)
    """The contact known by this e-mail address (the original system's users)."""
    template: str | None = Field(default=None, max_length=limits.MESSAGE_TEMPLATE_NAME)
    template_id: int | None = Field(default=None, ge=1, le=limits.RECORD_ID)
    channel: ChannelName | None = None
    """The template's own channel when left out."""
    scheduled_at: UtcMoment | None = None
    """With its offset; left out: the template's ``send_after`` from now."""
    session_id: str | None = Field(default=None, min_length=1, max_length=limits.SERVICE_SESSION_ID)
    variables: dict[KeyName, Value] = Field(
        default_factory=dict, max_length=limits.MAX_TEMPLATE_VARIABLES
    )
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=limits.CREDIT_KEY)
    """A repeat with the same key answers the first follow-up (200) and reserves nothing."""

    @model_validator(mode="after")
    def _one_of_each(self) -> ScheduleIn:
        if (self.contact_id is None) == (self.user_email is None):
            raise ValueError("give contact_id or user_email (one of them)")
        if (self.template is None) == (self.template_id is None):
            raise ValueError("give template or template_id (one of them)")
        return self


class RescheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scheduled_at: UtcMoment


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="cancelled", max_length=limits.CREDIT_REASON)


class ScheduleOut(BaseModel):
    id: int
    workflow_id: str
    contact_id: int
    template: str
    template_id: int | None
    channel: ChannelName
    session_id: str | None
    scheduled_at: datetime
    status: ScheduleStatus
    variables: dict[str, str]
    credits_reserved: int
    credits_charged: int
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime


def schedule_out(view: ScheduleView) -> ScheduleOut:
    return ScheduleOut(
        id=view.id,
        workflow_id=view.workflow_id,
        contact_id=view.contact_id,
        template=view.template_name,
        template_id=view.template_id,
        channel=ChannelName(view.channel),
        session_id=view.session_id,
        scheduled_at=view.scheduled_at,
        status=view.status,
        variables=view.variables,
        credits_reserved=view.credits_reserved,
        credits_charged=view.credits_charged,
        sent_at=view.sent_at,
        delivered_at=view.delivered_at,
        read_at=view.read_at,
        failure_reason=view.failure_reason,
        created_at=view.created_at,
        updated_at=view.updated_at,
    )


def refused(error: Refused, *, where: str = "body") -> Exception:
    """The HTTP answer to a refused request: a 422 names its field, the rest say why."""
    if error.status == 422:
        return RequestValidationError(
            [{"loc": [where, *error.loc], "msg": error.message, "type": "scheduled_followup"}]
        )
    return HTTPException(error.status, error.message)


async def contact_of(
    store: Store, settings: Settings, token: TokenInfo, contact_id: int | None, email: str | None
) -> int:
    """The contact a request names, by id or by e-mail; 404 when a contact token names
    anyone but itself (or nobody has the e-mail address)."""
    if contact_id is None:
        assert email is not None
        address = checked_address(settings, ["body", "user_email"], "email", email)
        found = await asyncio.to_thread(store.contact_by_email, address)
        if found is None or own_contact_id(token) not in (None, found):
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, "user_email: no contact has this e-mail address"
            )
        return found
    visible_contact(token, contact_id)
    return contact_id


@router.post("", response_model=ScheduleOut, status_code=status.HTTP_201_CREATED)
async def schedule_followup(
    body: ScheduleIn,
    response: Response,
    token: AnyToken,
    store: StoreDep,
    settings: SettingsDep,
    scheduler: SchedulerDep,
) -> Any:
    """Schedule one follow-up: 402 when the balance does not cover its cost (naming both),
    422 for an unknown or inactive template, a channel the contact has no address on, or a
    placeholder without a value, 409 naming the limit a follow-up would break."""
    contact_id = await contact_of(store, settings, token, body.contact_id, body.user_email)
    request = ScheduleRequest(
        contact_id=contact_id,
        template=body.template,
        template_id=body.template_id,
        channel=body.channel,
        scheduled_at=body.scheduled_at,
        session_id=body.session_id,
        variables=dict(body.variables),
        key=None if body.idempotency_key is None else f"api:{contact_id}:{body.idempotency_key}",
    )
    try:
        view, created = await scheduler.schedule(request)
    except Refused as error:
        raise refused(error) from None
    if not created:
        response.status_code = status.HTTP_200_OK
    return schedule_out(view)


@router.get("", response_model=list[ScheduleOut])
async def list_followups(
    token: AnyToken,
    store: StoreDep,
    status_: Annotated[ScheduleStatus | None, Query(alias="status")] = None,
    contact_id: Annotated[int | None, Query(ge=1, le=limits.RECORD_ID)] = None,
    template: Annotated[str | None, Query(max_length=limits.MESSAGE_TEMPLATE_NAME)] = None,
    channel: ChannelName | None = None,
    session_id: Annotated[str | None, Query(max_length=limits.SERVICE_SESSION_ID)] = None,
    from_: Annotated[UtcMoment | None, Query(alias="from")] = None,
    to: UtcMoment | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=limits.MAX_OFFSET)] = 0,
) -> Any:
    """Latest scheduled time first; ``from``/``to`` bound ``scheduled_at``. A contact token
    sees its own follow-ups only."""
    own = own_contact_id(token)
    if own is not None:
        if contact_id not in (None, own):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"contact_id: no contact {contact_id}")
        contact_id = own
    where = ScheduleFilter(
        contact_id=contact_id,
        status=status_,
        template=template,
        channel=None if channel is None else channel.value,
        session_id=session_id,
        scheduled_from=from_,
        scheduled_to=to,
    )
    views = await asyncio.to_thread(store.list_schedules, where, limit=limit, offset=offset)
    return [schedule_out(view) for view in views]


async def visible_schedule(store: Store, token: TokenInfo, schedule_id: int) -> ScheduleView:
    view = await asyncio.to_thread(store.get_schedule, schedule_id)
    own = own_contact_id(token)
    if view is None or own not in (None, view.contact_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no follow-up {schedule_id}")
    return view


@router.get("/{schedule_id}", response_model=ScheduleOut)
async def get_followup(schedule_id: ScheduleId, token: AnyToken, store: StoreDep) -> Any:
    return schedule_out(await visible_schedule(store, token, schedule_id))


@router.patch("/{schedule_id}", response_model=ScheduleOut)
async def move_followup(
    schedule_id: ScheduleId,
    body: RescheduleIn,
    token: AnyToken,
    store: StoreDep,
    scheduler: SchedulerDep,
) -> Any:
    """Move a pending follow-up to another time, in place (its workflow's timer moves; the
    limits are checked again); 409 once it is sending or sent."""
    await visible_schedule(store, token, schedule_id)
    try:
        return schedule_out(await scheduler.reschedule(schedule_id, body.scheduled_at))
    except Refused as error:
        raise refused(error) from None


@router.post("/{schedule_id}/cancel", response_model=ScheduleOut)
async def cancel_followup(
    schedule_id: ScheduleId,
    token: AnyToken,
    store: StoreDep,
    scheduler: SchedulerDep,
    body: CancelIn | None = None,
) -> Any:
    """Cancel a pending follow-up: its credits come back (unless ``refund_on_cancel`` is
    off). 409 once it is sending or sent: the message may be on its way."""
    await visible_schedule(store, token, schedule_id)
    try:
        return schedule_out(
            await scheduler.cancel(schedule_id, body.reason if body else "cancelled")
        )
    except Refused as error:
        raise refused(error) from None
