"""``/v1/followup-settings``: the scheduled follow-ups' settings, stored and edited here, with
the original system's keys and defaults (``auto_followup_enabled``, ``default_credits_cost``,
``max_followups_per_session``, ``min_interval_hours``, ``max_interval_days``,
``enable_credit_charging``, ``enable_analytics``) and Nudge's own (``refund_on_cancel``,
``refund_on_failure``, ``credit_price``, ``currency``). A change applies to what is scheduled,
settled or reported from then on."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from dependencies import AdminToken, StoreDep
from domain import limits
from domain.scheduled_followups import FollowupSettings
from store.repo import Store

router = APIRouter(prefix="/v1/followup-settings", tags=["scheduled follow-ups"])


class SettingsChange(BaseModel):
    """The settings to change; those left out keep their stored values."""

    model_config = ConfigDict(extra="forbid")

    auto_followup_enabled: bool | None = None
    default_credits_cost: int | None = Field(default=None, ge=0, le=limits.MAX_CREDITS)
    max_followups_per_session: int | None = Field(default=None, ge=0, le=1000)
    min_interval_hours: int | None = Field(default=None, ge=0, le=24 * 3650)
    max_interval_days: int | None = Field(default=None, ge=0, le=3650)
    enable_credit_charging: bool | None = None
    enable_analytics: bool | None = None
    refund_on_cancel: bool | None = None
    refund_on_failure: bool | None = None
    credit_price: Decimal | None = Field(default=None, ge=0, max_digits=14, decimal_places=4)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")


@router.get("", response_model=FollowupSettings)
async def get_settings(_: AdminToken, store: StoreDep) -> Any:
    return await asyncio.to_thread(store.followup_settings)


@router.put("", response_model=FollowupSettings)
async def put_settings(body: SettingsChange, _: AdminToken, store: StoreDep) -> Any:
    """Change the settings given; the answer is all of them as now stored."""
    return await change_settings(store, body.model_dump(exclude_none=True))


async def change_settings(store: Store, changes: dict[str, Any]) -> FollowupSettings:
    def change() -> FollowupSettings:
        current = store.followup_settings()
        return store.save_followup_settings(current.model_copy(update=changes))

    return await asyncio.to_thread(change)
