"""``/v1/contacts``: the people Nudge messages, with their addresses, time zone and locale."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, HTTPException, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy.exc import IntegrityError

from api.addresses import checked_addresses
from api.next_actions import NextActionOut, next_actions
from dependencies import AdminToken, SettingsDep, StoreDep, TemporalDep, UserToken
from domain import limits
from domain.addresses import address_channel
from domain.channels import ChannelName
from workflows.search_attributes import NUDGE_KIND, NUDGE_STATUS

router = APIRouter(prefix="/v1", tags=["contacts"])
RUNNING_LIMIT = 100
"""A contact's running workflows listed at most: a handful is usual (a menu, a follow-up,
a message or two held for the morning)."""


class ContactOut(BaseModel):
    id: int
    name: str | None
    email: str | None
    phone: str | None
    timezone: str | None
    locale: str | None
    channels: list[dict[str, Any]]
    device_tokens: list[str]
    created_at: datetime


Address = Annotated[str, StringConstraints(max_length=limits.ADDRESS)]
DeviceToken = Annotated[str, StringConstraints(max_length=limits.DEVICE_TOKEN)]
ContactId = Annotated[int, Path(ge=1, le=limits.RECORD_ID)]


class ContactUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelled field is named, not ignored

    name: str | None = Field(default=None, max_length=limits.CONTACT_NAME)
    email: str | None = Field(default=None, max_length=limits.ADDRESS)
    phone: str | None = Field(default=None, max_length=limits.ADDRESS)
    timezone: str | None = Field(
        default=None, max_length=limits.TIMEZONE, description="IANA zone, e.g. Europe/Paris"
    )
    locale: str | None = Field(default=None, max_length=limits.LOCALE)
    channels: dict[ChannelName, Address] | None = Field(
        default=None, description="channel -> address; replaces the contact's addresses"
    )
    device_tokens: list[DeviceToken] | None = Field(
        default=None, max_length=limits.MAX_DEVICE_TOKENS, description="replaces the FCM tokens"
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"{value!r} is not an IANA time zone like Europe/Paris") from exc
        return value


@router.get("/contacts", response_model=list[ContactOut])
async def list_contacts(
    _: UserToken,
    store: StoreDep,
    q: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=limits.MAX_OFFSET)] = 0,
) -> list[Any]:
    return [
        c.__dict__
        for c in await asyncio.to_thread(store.list_contacts, query=q, limit=limit, offset=offset)
    ]


@router.get("/contacts/{contact_id}", response_model=ContactOut)
async def get_contact(contact_id: ContactId, _: UserToken, store: StoreDep) -> Any:
    contact = await asyncio.to_thread(store.get_contact, contact_id)
    if contact is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"contact_id: no contact {contact_id}")
    return contact.__dict__


@router.put("/contacts/{contact_id}", response_model=ContactOut)
async def update_contact(
    contact_id: ContactId,
    body: ContactUpdate,
    _: AdminToken,
    store: StoreDep,
    settings: SettingsDep,
) -> Any:
    fields = body.model_dump(exclude_unset=True, exclude={"channels", "device_tokens"})
    # Every address at once, so one 422 names each that is wrong.
    given = [
        (["body", "channels", channel.value], channel.value, address)
        for channel, address in (body.channels or {}).items()
    ]
    given += [
        (["body", field], channel, fields[field])
        for field, channel in (("email", "email"), ("phone", "sms"))
        if fields.get(field)
    ]
    checked = {
        tuple(loc): spelled
        for (loc, _, _), spelled in zip(given, checked_addresses(settings, given), strict=True)
    }
    fields.update({field: checked[("body", field)] for field in ("email", "phone")
                   if ("body", field) in checked})  # fmt: skip
    channels = (
        {address_channel(c.value): checked[("body", "channels", c.value)] for c in body.channels}
        if body.channels is not None
        else None
    )
    try:
        contact = await asyncio.to_thread(
            store.update_contact,
            contact_id,
            fields=fields,
            channels=channels,
            device_tokens=body.device_tokens,
        )
    except IntegrityError as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "channels/device_tokens: an address or token belongs to another contact",
        ) from exc
    if contact is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"contact_id: no contact {contact_id}")
    return contact.__dict__


class RunningWork(BaseModel):
    workflow_id: str
    run_id: str | None
    kind: str | None = Field(description="NudgeKind: send_message, helpdesk_followup, menu")
    status: str | None = Field(description="NudgeStatus, e.g. held_until_08:00_quiet_hours")
    started_at: datetime | None
    next_action: NextActionOut | None = Field(
        description="what it does next, when and why; null if it did not answer in time"
    )


@router.get("/contacts/{contact_id}/next", response_model=list[RunningWork])
async def contact_next(
    contact_id: ContactId, _: UserToken, store: StoreDep, client: TemporalDep
) -> list[RunningWork]:
    """The contact's running workflows (by the ``ContactId`` search attribute), each with
    what it will do next. A follow-up carries the contact from its first reading of the
    conversation (after its first wait); a message sent to a bare address, from its first
    hold."""
    if await asyncio.to_thread(store.get_contact, contact_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"contact_id: no contact {contact_id}")
    query = f"ContactId = '{contact_id}' AND ExecutionStatus = 'Running'"
    found: list[RunningWork] = []
    async for execution in client.list_workflows(query, limit=RUNNING_LIMIT):
        attrs = execution.typed_search_attributes
        found.append(
            RunningWork(
                workflow_id=execution.id,
                run_id=execution.run_id,
                kind=attrs.get(NUDGE_KIND),
                status=attrs.get(NUDGE_STATUS),
                started_at=execution.start_time,
                next_action=None,
            )
        )
    actions = await next_actions(client, [(run.workflow_id, run.run_id) for run in found])
    for run, action in zip(found, actions, strict=True):
        run.next_action = action
    return found
