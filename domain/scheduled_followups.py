"""Scheduled follow-ups paid with credits: their settings, statuses, limits and payloads.

A business schedules a follow-up to one of its users after a session (or at any time),
from a template, on one channel; the user pays for it in credits. The settings keep the
original system's keys and defaults, so its admin screen reads and writes them unchanged.
"""

# No ``from __future__ import annotations``: the payloads cross the workflow boundary and
# pydantic resolves their annotations inside the workflow sandbox.

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from domain import limits
from domain.channels import ChannelName, MessageClass, Template

KIND = "scheduled_followup"
"""``NudgeKind`` of a ``ScheduledFollowUp`` run."""
PAST_GRACE = timedelta(minutes=1)
"""A ``scheduled_at`` this little in the past is "now" (the caller's clock and ours differ);
further back is a mistake, refused."""
STANDARD_VARIABLES = ("user_name", "user_email", "session_date", "service_type", "guidance_summary")
"""What every follow-up template may say without its caller giving a value."""


def workflow_id_for(schedule_id: int) -> str:
    return f"scheduled:{schedule_id}"


class FollowupSettings(BaseModel):
    """Stored, edited at ``/v1/followup-settings``: the original's keys and defaults, plus
    what a paid follow-up needs (refunds, the price of a credit)."""

    model_config = ConfigDict(extra="forbid")

    auto_followup_enabled: bool = True
    """``POST /v1/sessions/{id}/complete`` schedules the session's follow-ups."""
    default_credits_cost: int = Field(default=5, ge=0, le=limits.MAX_CREDITS)
    """Credits a follow-up costs when its template names no ``credits_cost``."""
    max_followups_per_session: int = Field(default=3, ge=0, le=1000)
    min_interval_hours: int = Field(default=24, ge=0, le=24 * 3650)
    """Between two follow-ups to one user (by their scheduled times)."""
    max_interval_days: int = Field(default=30, ge=0, le=3650)
    """How far ahead a follow-up may be scheduled."""
    enable_credit_charging: bool = True
    enable_analytics: bool = True
    refund_on_cancel: bool = True
    """A cancelled follow-up gives its reserved credits back."""
    refund_on_failure: bool = True
    """A follow-up that could not be delivered (failed, suppressed) gives its credits back."""
    credit_price: Decimal = Field(default=Decimal(0), ge=0, max_digits=14, decimal_places=4)
    """What one credit sells for, so analytics can show revenue."""
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")


class ScheduleStatus(StrEnum):
    pending = "pending"
    """Waiting for its time; credits reserved."""
    sending = "sending"
    """Its time came: in the send path (it may be held by quiet hours)."""
    sent = "sent"
    delivered = "delivered"
    read = "read"
    failed = "failed"
    suppressed = "suppressed"
    """The contact opted out (or is outside WhatsApp's window): nothing was sent."""
    cancelled = "cancelled"


OPEN_STATUSES = (ScheduleStatus.pending, ScheduleStatus.sending)
COUNTED_STATUSES = (
    ScheduleStatus.pending,
    ScheduleStatus.sending,
    ScheduleStatus.sent,
    ScheduleStatus.delivered,
    ScheduleStatus.read,
)
"""What counts toward a session's follow-ups and the interval between two: not those that
were cancelled or never went out."""


class TemplateType(StrEnum):
    """The original's ``FollowUpType``."""

    session_followup = "session_followup"
    reminder = "reminder"
    check_in = "check_in"
    offer = "offer"
    support = "support"
    custom = "custom"


def price_of(credits_cost: int | None, settings: FollowupSettings) -> int:
    """What a follow-up from a template of this ``credits_cost`` reserves: its own cost,
    else the settings' default; nothing while charging is switched off."""
    if not settings.enable_credit_charging:
        return 0
    return settings.default_credits_cost if credits_cost is None else credits_cost


def message_class_of(template_type: TemplateType) -> MessageClass:
    """An offer is marketing (unsubscribe links, the frequency cap); a follow-up the user
    paid for is not."""
    return (
        MessageClass.marketing
        if template_type == TemplateType.offer
        else MessageClass.transactional
    )


def followup_values(
    *,
    user_name: str | None,
    user_email: str | None,
    timezone: str | None = None,
    session_completed_at: datetime | None = None,
    service_type: str | None = None,
    guidance_summary: str | None = None,
    variables: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """What a follow-up template may say: the user (``user_name``, ``user_email``), their
    session (``session_date`` in the user's own zone, ``service_type``,
    ``guidance_summary``), then the caller's ``variables``, which win. What is not known is
    left out, so rendering names it as missing rather than sending an empty greeting."""
    values: dict[str, str] = {}
    if user_name:
        values["user_name"] = user_name
    if user_email:
        values["user_email"] = user_email
    if session_completed_at is not None:
        values["session_date"] = _local(session_completed_at, timezone).date().isoformat()
    if service_type:
        values["service_type"] = service_type
    if guidance_summary:
        values["guidance_summary"] = guidance_summary
    values.update(variables or {})
    return values


def _local(moment: datetime, timezone: str | None) -> datetime:
    try:
        return moment.astimezone(ZoneInfo(timezone)) if timezone else moment
    except (ZoneInfoNotFoundError, ValueError):
        return moment


def limit_refusal(
    settings: FollowupSettings,
    *,
    scheduled_at: datetime,
    now: datetime,
    in_session: int,
    neighbours: list[datetime],
) -> str | None:
    """Why a follow-up at ``scheduled_at`` breaks a limit (a sentence naming it), or None.
    ``in_session``: follow-ups the session already has; ``neighbours``: the user's other
    follow-ups' times."""
    furthest = now + timedelta(days=settings.max_interval_days)
    if scheduled_at > furthest:
        return (
            f"max_interval_days: a follow-up may be scheduled at most "
            f"{settings.max_interval_days} days ahead (until {furthest.isoformat()})"
        )
    if in_session >= settings.max_followups_per_session:
        return (
            f"max_followups_per_session: the session has {in_session} follow-ups already "
            f"(at most {settings.max_followups_per_session})"
        )
    gap = timedelta(hours=settings.min_interval_hours)
    for other in neighbours:
        if abs(other - scheduled_at) < gap:
            return (
                f"min_interval_hours: another follow-up to this user is scheduled at "
                f"{other.isoformat()}, within {settings.min_interval_hours} hours"
            )
    return None


@dataclass
class ScheduledFollowUpInput:
    schedule_id: int
    contact_id: int
    channel: ChannelName
    scheduled_at: datetime
    credits_reserved: int = 0


@dataclass
class Reschedule:
    scheduled_at: datetime


@dataclass
class PreparedMessage:
    """The follow-up's message, rendered at its time from the template as it is then and
    the contact as they are then; or why it cannot be sent (``reason``)."""

    to: str = ""
    text: str = ""
    subject: str = ""
    message_class: MessageClass = MessageClass.transactional
    template_name: str = ""
    locale: str = ""
    approved: Template | None = None
    """The provider-approved template saying the same, for outside WhatsApp's window."""
    reason: str = ""


@dataclass
class SettleRequest:
    """Settle the follow-up's reservation by what the outbox says happened to its message:
    sent -> capture; not sent -> release (or capture, where refunds are switched off)."""

    schedule_id: int
    workflow_id: str
    message_key: str
    ending: ScheduleStatus
    """How the run ends if nothing was sent: ``cancelled``, ``failed`` or ``suppressed``."""
    reason: str = ""


@dataclass
class Settled:
    status: ScheduleStatus
    credits_charged: int
    reason: str = ""
    sent_at: datetime | None = None


@dataclass
class StatusesSeen:
    """What the provider has reported about the follow-up's message, from the store."""

    status: ScheduleStatus
    delivered_at: datetime | None = None
    read_at: datetime | None = None
    credits_charged: int = 0
    refunded: bool = False


@dataclass
class ScheduleUpdate:
    schedule_id: int
    status: ScheduleStatus | None = None
    scheduled_at: datetime | None = None
    failure_reason: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
