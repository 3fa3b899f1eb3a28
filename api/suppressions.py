"""``/v1/suppressions``: addresses that must not be messaged (opt-outs), per channel and scope."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from dependencies import AdminToken, SettingsDep, StoreDep, UserToken, checked_address
from domain import limits
from domain.addresses import address_channel
from domain.channels import ChannelName
from domain.policy import OptOutSource

router = APIRouter(prefix="/v1", tags=["suppressions"])

Scope = Literal["all", "marketing"]


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelled field is named, not ignored

    channel: ChannelName
    address: str = Field(min_length=1, max_length=limits.ADDRESS)
    scope: Scope = "all"
    reason: str = Field(default="added by an operator", max_length=limits.SUPPRESSION_REASON)


class SuppressionOut(BaseModel):
    channel: str
    address: str
    scope: str
    reason: str
    source: OptOutSource
    """What created it: a contact's START lifts only ``keyword`` and ``provider_block``."""
    created_at: datetime


@router.get("/suppressions", response_model=list[SuppressionOut])
async def list_suppressions(
    _: UserToken,
    store: StoreDep,
    settings: SettingsDep,
    channel: ChannelName | None = None,
    address: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[Any]:
    where = address_channel(channel.value) if channel else None
    if address is not None:
        address = (
            checked_address(settings, ["query", "address"], where, address)
            if where
            else address.strip()
        )
    found = await asyncio.to_thread(
        store.list_suppressions, channel=where, address=address, limit=limit
    )
    return [row.__dict__ for row in found]


@router.post("/suppressions", response_model=SuppressionOut, status_code=status.HTTP_201_CREATED)
async def add_suppression(
    body: SuppressionIn, _: AdminToken, store: StoreDep, settings: SettingsDep
) -> Any:
    channel = address_channel(body.channel.value)
    address = checked_address(settings, ["body", "address"], channel, body.address)
    await asyncio.to_thread(
        store.suppress,
        channel,
        address,
        scope=body.scope,
        reason=body.reason,
        source=OptOutSource.operator,
    )
    found = await asyncio.to_thread(store.list_suppressions, channel=channel, address=address)
    return next(
        row for row in found if (row.scope, row.source) == (body.scope, OptOutSource.operator)
    ).__dict__


@router.delete("/suppressions", status_code=status.HTTP_204_NO_CONTENT)
async def remove_suppression(
    _: AdminToken,
    store: StoreDep,
    settings: SettingsDep,
    channel: ChannelName,
    address: str,
    scope: Scope | None = None,
) -> None:
    where = address_channel(channel.value)
    removed = await asyncio.to_thread(
        store.unsuppress,
        where,
        checked_address(settings, ["query", "address"], where, address),
        scope,
    )
    if not removed:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"address: {address} is not suppressed on {channel.value}"
        )
