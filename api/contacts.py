"""``/v1/contacts``: the people Nudge messages, with their addresses, time zone and locale."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, HTTPException, Path, Query, status
from pydantic import BaseModel, Field, StringConstraints, field_validator
from sqlalchemy.exc import IntegrityError

from dependencies import AdminToken, StoreDep, UserToken
from domain import limits
from domain.addresses import address_channel, normalize_address
from domain.channels import ChannelName

router = APIRouter(prefix="/v1", tags=["contacts"])


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
    contact_id: ContactId, body: ContactUpdate, _: AdminToken, store: StoreDep
) -> Any:
    fields = body.model_dump(exclude_unset=True, exclude={"channels", "device_tokens"})
    channels = (
        {address_channel(c.value): normalize_address(c.value, a) for c, a in body.channels.items()}
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
