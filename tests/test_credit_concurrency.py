"""Credits never go below zero, also when many requests spend them at once: 100 schedules
race for a contact whose credits pay for 10, on SQLite and on PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from domain.credits import EntryKind, InsufficientCredits
from domain.scheduled_followups import FollowupSettings
from domain.templates import MessageTemplate
from store.events import NewLead
from store.repo import Store
from store.scheduled_followups import NewSchedule, ScheduleView

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)
RACERS = 100


def test_100_concurrent_schedules_take_exactly_the_10_that_are_paid_for(any_store: Store) -> None:
    store = any_store
    contact = store.create_lead(NewLead(name="Kavya", email="kavya@example.com")).id
    store.add_credits(contact, EntryKind.grant, 30, reason="bought", key="first")
    store.add_credits(contact, EntryKind.grant, 20, reason="bought", key="second")
    template = store.create_template(
        MessageTemplate.model_validate(
            {"name": "t", "channel": "email", "subject": "s", "variants": {"en": "hi"}}
        )
    )
    settings = FollowupSettings(min_interval_hours=0, max_followups_per_session=1000)

    def schedule(i: int) -> ScheduleView | None:
        new = NewSchedule(
            contact_id=contact,
            template_id=template.id,
            template_name="t",
            channel="email",
            scheduled_at=NOW + timedelta(hours=1, seconds=i),
            cost=5,
        )
        try:
            return store.schedule_followup(new, settings, now=NOW)[0]
        except InsufficientCredits as refused:
            assert refused.cost == 5 and 0 <= refused.balance < 5
            return None

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(schedule, range(RACERS)))
    accepted = [r for r in results if r is not None]
    assert len(accepted) == 10
    balance = store.credit_balance(contact)
    assert (balance.balance, balance.reserved, balance.spent, balance.granted) == (0, 50, 0, 50)
    assert balance.consistent
    entries = store.credit_entries(contact, limit=500)
    assert sum(e.amount for e in entries if e.kind == EntryKind.grant) == 50
    assert sum(e.amount for e in entries if e.kind == EntryKind.reserve) == 50
    with pytest.raises(InsufficientCredits):
        store.add_credits(contact, EntryKind.adjust, -1, reason="oops", key="below-zero")
