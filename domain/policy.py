"""Contact policy: may this message go now, later, or never?

Pure functions over facts the delivery activity reads from the store, so each rule is
tested on its own: opt-out keywords, quiet hours in the contact's time zone (DST included),
the frequency cap across all workflows, and WhatsApp's 24-hour customer-service window.
"""

# No ``from __future__ import annotations``: these types cross the workflow boundary and
# pydantic resolves their annotations inside the workflow sandbox.

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from domain.addresses import address_channel

STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
START_WORDS = frozenset({"START", "YES", "UNSTOP"})


class Keyword(StrEnum):
    stop = "stop"
    start = "start"


class OptOutSource(StrEnum):
    """What created an opt-out, which decides what may lift it: a contact's START undoes
    only what the contact did on that channel (``LIFTED_BY_START``), never an operator's
    suppression or an unsubscribe from marketing mail."""

    keyword = "keyword"
    """The contact wrote STOP (or another opt-out word)."""
    provider_block = "provider_block"
    """The provider refused to send because the contact opted out with it (Twilio 21610);
    a START to that provider lifts its block too."""
    operator = "operator"
    """``POST /v1/suppressions``; only an operator lifts it."""
    unsubscribe_link = "unsubscribe_link"


LIFTED_BY_START = frozenset({OptOutSource.keyword, OptOutSource.provider_block})


def opt_keyword(text: str) -> Keyword | None:
    """Only the whole message counts ("stop" yes, "please stop by" no), in any case."""
    word = text.strip().strip(".!").upper()
    if word in STOP_WORDS:
        return Keyword.stop
    if word in START_WORDS:
        return Keyword.start
    return None


def parse_clock(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def quiet_until(now: datetime, zone: str, start: time, end: time) -> datetime | None:
    """The first allowed moment (UTC) if ``now`` falls in quiet hours, else None.

    Quiet hours may wrap midnight (21:00-08:00). The end is a wall-clock time in the
    contact's zone, so on a DST change day the wait is an hour shorter or longer.
    """
    if start == end:
        return None
    tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    clock = local.time().replace(tzinfo=None)
    wraps = start > end
    quiet = (clock >= start or clock < end) if wraps else (start <= clock < end)
    if not quiet:
        return None
    day = local.date()
    if wraps and clock >= start:
        day += timedelta(days=1)
    return _wall_clock(day, end, tz)


def quiet_hours_apply(channel: str, channels: Iterable[str]) -> bool:
    """Whether quiet hours hold marketing on ``channel``: only on the configured channels, by
    default those that ring a phone (SMS, WhatsApp, push), not e-mail or a helpdesk reply,
    which wait in an inbox. WhatsApp is one channel whichever provider carries it: both reach
    the same phone."""
    return address_channel(channel) in {address_channel(name) for name in channels}


def _wall_clock(day: date, at: time, tz: ZoneInfo) -> datetime:
    """A local wall-clock time as an aware UTC instant; a time skipped by DST moves forward."""
    naive = datetime.combine(day, at)
    candidate = naive.replace(tzinfo=tz)
    roundtrip = candidate.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    if roundtrip != naive:  # the clock jumped over this time: the first minute after it
        candidate = candidate.astimezone(UTC).astimezone(tz)
    return candidate.astimezone(UTC)


def frequency_until(
    sent: list[datetime], now: datetime, cap: int, window: timedelta
) -> datetime | None:
    """When the next marketing message fits under the cap, or None if it fits now.

    A time after ``now`` counts too: a concurrent send may have claimed its place a moment
    after this one's clock was read (``now`` is when the attempt started)."""
    if cap <= 0:
        return None
    recent = sorted(t for t in sent if now - window < t)
    if len(recent) < cap:
        return None
    return recent[-cap] + window


def whatsapp_window_open(last_inbound: datetime | None, now: datetime, window: timedelta) -> bool:
    return last_inbound is not None and now - last_inbound < window


class Verdict(StrEnum):
    send = "send"
    send_template = "send_template"
    wait = "wait"
    suppressed = "suppressed"
    outside_whatsapp_window = "outside_whatsapp_window"


class HoldReason(StrEnum):
    """Why a marketing message waits (``Verdict.wait``)."""

    quiet_hours = "quiet hours"
    frequency_cap = "frequency cap"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    not_before: datetime | None = None
    reason: str = ""
    timezone: str = ""
    """The time zone a marketing message was judged in (the contact's, else the policy's
    default): a hold's ``not_before`` is shown as a wall-clock time there."""


HELD_PREFIX = "held_until_"


def held_status(not_before: datetime, timezone: str, reason: str) -> str:
    """``held_until_08:00_quiet_hours``: what a held run reports (its ``status`` query, the
    ``NudgeStatus`` search attribute). The time is ``not_before`` on the wall clock of the
    zone the hold was judged in, the one quiet hours are written for; UTC when it is unknown
    (results recorded before the zone was). A hold longer than a day still shows only the
    time: the run's ``next_action`` (and its details) say the date."""
    local = not_before.astimezone(ZoneInfo(timezone or "UTC"))
    return f"{HELD_PREFIX}{local:%H:%M}_{reason.strip().replace(' ', '_') or 'policy'}"
