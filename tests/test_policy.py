"""The contact-policy rules, one at a time."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from domain.policy import (
    Keyword,
    frequency_until,
    opt_keyword,
    quiet_until,
    whatsapp_window_open,
)

START, END = time(21, 0), time(8, 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("STOP", Keyword.stop),
        ("stop", Keyword.stop),
        (" Stop. ", Keyword.stop),
        ("UNSUBSCRIBE", Keyword.stop),
        ("optout", Keyword.stop),
        ("StopAll", Keyword.stop),
        ("revoke", Keyword.stop),
        ("start", Keyword.start),
        ("YES", Keyword.start),
        ("unstop", Keyword.start),
        ("please stop texting", None),
        ("stop it", None),
        ("yes please", None),
        ("", None),
    ],
)
def test_opt_keywords_are_whole_messages(text: str, expected: Keyword | None) -> None:
    assert opt_keyword(text) == expected


def test_outside_quiet_hours_sends_now() -> None:
    noon = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert quiet_until(noon, "UTC", START, END) is None
    assert quiet_until(datetime(2026, 6, 1, 8, 0, tzinfo=UTC), "UTC", START, END) is None
    assert quiet_until(datetime(2026, 6, 1, 20, 59, tzinfo=UTC), "UTC", START, END) is None


def test_quiet_hours_are_in_the_contacts_zone_across_midnight() -> None:
    # 23:30 UTC is 09:30 next morning in Sydney (allowed) but 19:30 in New York (allowed),
    # and 01:30 in Paris (quiet until 08:00 Paris = 06:00 UTC in summer).
    now = datetime(2026, 6, 1, 23, 30, tzinfo=UTC)
    assert quiet_until(now, "Australia/Sydney", START, END) is None
    assert quiet_until(now, "America/New_York", START, END) is None
    assert quiet_until(now, "Europe/Paris", START, END) == datetime(2026, 6, 2, 6, 0, tzinfo=UTC)
    # 21:15 local in Paris (19:15 UTC): wait until 08:00 the next local morning.
    evening = datetime(2026, 6, 1, 19, 15, tzinfo=UTC)
    assert quiet_until(evening, "Europe/Paris", START, END) == datetime(
        2026, 6, 2, 6, 0, tzinfo=UTC
    )


def test_quiet_hours_across_a_dst_change_send_at_the_first_allowed_minute() -> None:
    # Europe/Paris springs forward on 2026-03-29: 08:00 that morning is 06:00 UTC, not 07:00.
    night = datetime(2026, 3, 28, 22, 0, tzinfo=UTC)  # 23:00 CET
    assert quiet_until(night, "Europe/Paris", START, END) == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)
    # New York falls back on 2026-11-01: 08:00 EST that morning is 13:00 UTC.
    night = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)  # 23:00 EDT on Oct 31
    assert quiet_until(night, "America/New_York", START, END) == datetime(
        2026, 11, 1, 13, 0, tzinfo=UTC
    )


def test_quiet_hours_that_do_not_wrap_and_switched_off() -> None:
    lunch = (time(12, 0), time(13, 0))
    at = datetime(2026, 6, 1, 12, 30, tzinfo=UTC)
    assert quiet_until(at, "UTC", *lunch) == datetime(2026, 6, 1, 13, 0, tzinfo=UTC)
    assert quiet_until(at, "UTC", time(9, 0), time(9, 0)) is None


def test_frequency_cap() -> None:
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    day = timedelta(hours=24)
    sent = [now - timedelta(hours=h) for h in (23, 5, 1)]
    assert frequency_until(sent[:2], now, 3, day) is None
    assert frequency_until(sent, now, 3, day) == now + timedelta(hours=1), "when the oldest leaves"
    old = [now - timedelta(hours=30), *sent[1:]]
    assert frequency_until(old, now, 3, day) is None, "older than the window does not count"
    assert frequency_until(sent, now, 0, day) is None, "0 switches the cap off"


def test_frequency_cap_counts_a_send_claimed_after_the_clock_was_read() -> None:
    """``now`` is when the attempt was scheduled; a concurrent send may have claimed its place
    a moment later, and must count all the same."""
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    day = timedelta(hours=24)
    claimed = [now - timedelta(hours=2), now + timedelta(milliseconds=40)]
    assert frequency_until(claimed, now, 2, day) == now - timedelta(hours=2) + day
    assert frequency_until(claimed, now, 3, day) is None


def test_whatsapp_window() -> None:
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    day = timedelta(hours=24)
    assert whatsapp_window_open(now - timedelta(hours=23, minutes=59), now, day)
    assert not whatsapp_window_open(now - timedelta(hours=24), now, day)
    assert not whatsapp_window_open(None, now, day)
