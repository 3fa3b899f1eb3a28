"""``GET /v1/analytics/messages``: what became of every message Nudge sent, and what it
earned, added up from the outbox and the credit ledger (``store/analytics.py``)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, Field

from api.moments import UtcMoment
from dependencies import AdminToken, StoreDep
from store.analytics import Figures, GroupBy

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])

DEFAULT_DAYS = 30
MAX_DAYS = 366
SWITCHED_OFF = "analytics are switched off: enable_analytics is false in /v1/followup-settings"
A_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _date_at_midnight(value: Any) -> Any:
    """A bare date is its midnight in UTC; anything else is left to ``UtcMoment``, which
    refuses a time without its offset."""
    if isinstance(value, str) and A_DATE.fullmatch(value):
        try:
            return datetime.combine(date.fromisoformat(value), time(), UTC)
        except ValueError as exc:
            raise ValueError(f"not a date: {exc}") from exc
    return value


Moment = Annotated[UtcMoment, BeforeValidator(_date_at_midnight)]
MOMENT = "a date (midnight UTC) or a time with its offset, e.g. 2026-03-01T00:00:00+01:00"


class FiguresOut(BaseModel):
    sent: int
    delivered: int
    read: int
    failed: int
    suppressed: int
    sandboxed: int
    unknown: int
    pending: int
    delivery_rate: float
    read_rate: float
    credits_charged: int
    revenue: str = Field(description="in `currency`, with 2 decimals: 12.50")


class GroupOut(FiguresOut):
    key: str | None = Field(description="a UTC day (2026-03-01), a template, or a channel")


class TopTemplate(BaseModel):
    template: str
    sent: int
    delivered: int
    read: int
    read_rate: float


class MessageAnalyticsOut(BaseModel):
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    group_by: GroupBy
    currency: str
    totals: FiguresOut
    groups: list[GroupOut]
    top_templates: list[TopTemplate]


@router.get("/messages", response_model=MessageAnalyticsOut)
async def message_analytics(
    _: AdminToken,
    store: StoreDep,
    start: Annotated[Moment | None, Query(alias="from", description=MOMENT)] = None,
    end: Annotated[Moment | None, Query(alias="to", description=MOMENT)] = None,
    group_by: GroupBy = GroupBy.day,
) -> MessageAnalyticsOut:
    """Every message Nudge sent (the outbox: follow-ups, automations, menus, the API's own
    sends), added up from the outbox rows and the credit ledger, so the figures never drift
    from them.

    - **Period**: a message counts when `coalesce(sent_at, created_at)` is in `[from, to)`.
      `from` and `to` are dates (midnight UTC) or times with their offset; by default the
      last 30 days up to now; at most 366 days.
    - **sent**: status `sent`, `delivered`, `read` or `sandboxed` (accepted by the provider,
      or kept by the sandbox; `sandboxed` is also counted on its own).
    - **delivered**: `delivered` or `read` (a message read was delivered, even when the
      provider never said `delivered`); **read**: `read`.
    - **failed**: `failed`; **unknown**: the worker stopped during the provider call;
      **suppressed**: refused by the policy (opted out, outside WhatsApp's window...);
      **pending**: not sent yet (`held`, `pending`, `sending`).
    - **delivery_rate** = delivered / (sent - sandboxed), **read_rate** = read / (sent -
      sandboxed): over the messages a real provider accepted, since a sandboxed message
      never gets a delivery status. Fractions 0..1, 4 places; 0 when no such message.
    - **credits_charged**: credits captured for the messages, less refunds;
      **revenue**: each capture at its own price of a credit (a later change of
      `credit_price` does not move it), less refunds at their capture's price, in the
      `currency` of `/v1/followup-settings`.
    - **groups** by `group_by`: `day` (the UTC day, in order), `template` (`null`: written
      without a template) or `channel` (most sent first); **totals** over the period;
      **top_templates**: up to 5 templates by messages sent.

    409 when `enable_analytics` is false in `/v1/followup-settings`."""
    named = "to" if end is not None else "from"  # the one of the two the caller gave
    end = end or datetime.now(UTC)
    start = start or _days_before(end, DEFAULT_DAYS)
    if start >= end:
        raise _refuse(named, f"{named}: from must be before to")
    if end - start > timedelta(days=MAX_DAYS):
        raise _refuse("from", f"from: at most {MAX_DAYS} days before to")
    settings = await asyncio.to_thread(store.followup_settings)
    if not settings.enable_analytics:
        raise HTTPException(status.HTTP_409_CONFLICT, SWITCHED_OFF)
    found = await asyncio.to_thread(store.message_analytics, start, end, group_by)
    return MessageAnalyticsOut.model_validate(
        {
            "from": start,
            "to": end,
            "group_by": group_by,
            "currency": settings.currency,
            "totals": _figures(found.totals),
            "groups": [{"key": group.key, **_figures(group.figures)} for group in found.groups],
            "top_templates": [
                {
                    "template": group.key,
                    "sent": group.figures.sent,
                    "delivered": group.figures.delivered,
                    "read": group.figures.read,
                    "read_rate": group.figures.read_rate,
                }
                for group in found.top_templates
            ],
        }
    )


def _figures(figures: Figures) -> dict[str, Any]:
    return {
        "sent": figures.sent,
        "delivered": figures.delivered,
        "read": figures.read,
        "failed": figures.failed,
        "suppressed": figures.suppressed,
        "sandboxed": figures.sandboxed,
        "unknown": figures.unknown,
        "pending": figures.pending,
        "delivery_rate": figures.delivery_rate,
        "read_rate": figures.read_rate,
        "credits_charged": figures.credits_charged,
        "revenue": str(figures.revenue),
    }


def _days_before(moment: datetime, days: int) -> datetime:
    try:
        return moment - timedelta(days=days)
    except OverflowError:  # ``to`` in year 1
        return datetime.min.replace(tzinfo=UTC)


def _refuse(field: str, msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ["query", field], "msg": msg, "type": "value_error"}])
