"""The delivery layer for operators: the outbox, contacts and suppressions."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.exc import IntegrityError

from activities.policy import address_channel, normalize_address
from api.deps import AdminToken, StoreDep, UserToken
from integrations.channels import ChannelName, MessageClass
from store.repo import OutboxStatus

router = APIRouter(prefix="/v1", tags=["delivery"])

Scope = Literal["all", "marketing"]


class OutboxOut(BaseModel):
    idempotency_key: str
    workflow_id: str
    channel: str
    recipient: str
    contact_id: int | None
    message_class: str
    body: str
    status: str
    provider_message_id: str | None
    error: str | None
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    status_at: datetime | None


@router.get("/outbox", response_model=list[OutboxOut])
async def list_outbox(
    _: UserToken,
    store: StoreDep,
    contact: int | None = None,
    channel: ChannelName | None = None,
    status_: Annotated[OutboxStatus | None, Query(alias="status")] = None,
    class_: Annotated[MessageClass | None, Query(alias="class")] = None,
    workflow_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[Any]:
    rows = await asyncio.to_thread(
        store.list_outbox,
        contact_id=contact,
        channel=channel.value if channel else None,
        status=status_.value if status_ else None,
        message_class=class_.value if class_ else None,
        workflow_id=workflow_id,
        limit=limit,
        offset=offset,
    )
    return [row.__dict__ for row in rows]


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


class ContactUpdate(BaseModel):
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    timezone: str | None = Field(default=None, description="IANA zone, e.g. Europe/Paris")
    locale: str | None = Field(default=None, max_length=20)
    channels: dict[ChannelName, str] | None = Field(
        default=None, description="channel -> address; replaces the contact's addresses"
    )
    device_tokens: list[str] | None = Field(default=None, description="replaces the FCM tokens")

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
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[Any]:
    return [
        c.__dict__
        for c in await asyncio.to_thread(store.list_contacts, query=q, limit=limit, offset=offset)
    ]


@router.get("/contacts/{contact_id}", response_model=ContactOut)
async def get_contact(contact_id: int, _: UserToken, store: StoreDep) -> Any:
    contact = await asyncio.to_thread(store.get_contact, contact_id)
    if contact is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"contact_id: no contact {contact_id}")
    return contact.__dict__


@router.put("/contacts/{contact_id}", response_model=ContactOut)
async def update_contact(
    contact_id: int, body: ContactUpdate, _: AdminToken, store: StoreDep
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


class SuppressionIn(BaseModel):
    channel: ChannelName
    address: str = Field(min_length=1, max_length=320)
    scope: Scope = "all"
    reason: str = Field(default="added by an operator", max_length=255)


class SuppressionOut(BaseModel):
    channel: str
    address: str
    scope: str
    reason: str
    source: str
    created_at: datetime


@router.get("/suppressions", response_model=list[SuppressionOut])
async def list_suppressions(
    _: UserToken,
    store: StoreDep,
    channel: ChannelName | None = None,
    address: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[Any]:
    where = address_channel(channel.value) if channel else None
    if address is not None:
        address = normalize_address(where or "", address)
    found = await asyncio.to_thread(
        store.list_suppressions, channel=where, address=address, limit=limit
    )
    return [row.__dict__ for row in found]


@router.post("/suppressions", response_model=SuppressionOut, status_code=status.HTTP_201_CREATED)
async def add_suppression(body: SuppressionIn, _: AdminToken, store: StoreDep) -> Any:
    channel = address_channel(body.channel.value)
    address = normalize_address(channel, body.address.strip())
    if not address:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "address: must not be blank")
    await asyncio.to_thread(
        store.suppress,
        channel,
        address,
        scope=body.scope,
        reason=body.reason,
        source="api",
    )
    found = await asyncio.to_thread(store.list_suppressions, channel=channel, address=address)
    return next(row for row in found if row.scope == body.scope).__dict__


@router.delete("/suppressions", status_code=status.HTTP_204_NO_CONTENT)
async def remove_suppression(
    _: AdminToken, store: StoreDep, channel: ChannelName, address: str, scope: Scope | None = None
) -> None:
    where = address_channel(channel.value)
    removed = await asyncio.to_thread(
        store.unsuppress, where, normalize_address(where, address), scope
    )
    if not removed:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"address: {address} is not suppressed on {channel.value}"
        )
