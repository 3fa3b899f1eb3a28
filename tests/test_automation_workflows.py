"""Automation rules as durable workflows, on the time-skipping server: days pass in moments.

Real workflows, real activities, a real SQLite database, sandboxed channels (the send path
records each message in the outbox). Events go through the same ``AutomationStarter`` the
HTTP service uses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from automation_starts import AutomationStarter
from domain.automation_runs import RunStatus
from domain.automations import AutomationRule
from settings import PolicySettings, Settings
from store.automations import RunView
from store.bookings import NewBooking
from store.events import NewLead
from store.repo import Store
from tests.stack import nudge_worker
from tests.waiting import wait_for
from workflows import booking_reminder, contact_watch
from workflows.booking_reminder import BookingReminder
from workflows.contact_watch import ContactWatch

SLACK = timedelta(seconds=30)
"""How late a timer's work may finish: activities take real time while the clock stands."""


@dataclass
class Rig:
    env: WorkflowEnvironment
    store: Store
    starter: AutomationStarter

    def rule(self, **body: Any) -> int:
        return self.store.create_automation(AutomationRule.model_validate(body)).id

    async def lead(self, **fields: Any) -> int:
        contact = self.store.create_lead(NewLead(**fields))
        for event in self.store.list_events(contact_id=contact.id):
            assert await self.starter.dispatch(event)
        return contact.id

    async def now(self) -> datetime:
        return await self.env.get_current_time()

    def runs(self, contact_id: int) -> list[RunView]:
        return self.store.list_runs(contact_id=contact_id)

    def finished(self, contact_id: int) -> list[RunView]:
        return [r for r in self.runs(contact_id) if r.finished_at is not None]

    def sent_to(self, address: str) -> list[str]:
        return [row.body for row in self.store.list_outbox() if row.recipient == address]


@pytest.fixture
async def rig(
    fresh_time_env: WorkflowEnvironment, store: Store, sqlite_url: str, task_queue: str
) -> AsyncIterator[Rig]:
    settings = Settings(
        _env_file=None,
        database_url=sqlite_url,
        secret_key="automation-tests-key-of-32-characters",
        temporal={"task_queue": task_queue},
        policy=PolicySettings(quiet_hours_start="00:00", quiet_hours_end="00:00"),
    )

    async def client() -> Any:
        return fresh_time_env.client

    starter = AutomationStarter(store, client, task_queue)
    async with nudge_worker(fresh_time_env.client, settings, store):
        yield Rig(fresh_time_env, store, starter)
    await starter.drain()


QUIET_3_DAYS = {
    "name": "Follow up after 3 days",
    "type": "lead_followup",
    "trigger": "no_contact_days",
    "delay_days": 3,
    "channel": "email",
    "message_template": "Hi {lead_name}, still thinking it over?",
}


async def test_a_three_day_rule_fires_at_three_days_pushed_back_by_a_reply_and_once(
    rig: Rig,
) -> None:
    rig.rule(**QUIET_3_DAYS)
    contact = await rig.lead(name="Ana Lima", email="ana@example.com", phone="+15551230001")
    watch = rig.env.client.get_workflow_handle(contact_watch.workflow_id_for(contact))
    created = rig.store.contact_for_rule(contact)
    assert created is not None

    async def planned() -> datetime | None:
        return (await watch.query(ContactWatch.next_action)).at

    await wait_for(lambda: _is(planned, created.created_at + timedelta(days=3)))

    await rig.env.sleep(timedelta(days=2))
    assert rig.runs(contact) == [], "nothing before three days"
    replied = await rig.now()  # the customer writes at day 2
    rig.store.record_inbound("sms", "SM-reply", "+15551230001", body="Hmm", received_at=replied)
    await rig.starter.dispatch_for(contact)
    await wait_for(lambda: _is(planned, replied + timedelta(days=3)))

    await rig.env.sleep(timedelta(days=1, hours=1))  # day 3 of the first spell
    assert rig.runs(contact) == [], "the reply pushed the message back"

    await rig.env.sleep(timedelta(days=2))  # past day 3 of the new spell
    await wait_for(lambda: len(rig.finished(contact)) == 1, failure="the rule never fired")
    [run] = rig.finished(contact)
    assert run.status == RunStatus.sent, run.reason
    assert run.due_at == replied + timedelta(days=3)
    assert run.finished_at is not None and run.finished_at - run.due_at < SLACK
    assert rig.sent_to("ana@example.com") == ["Hi Ana Lima, still thinking it over?"]

    await rig.env.sleep(timedelta(days=10))
    assert len(rig.runs(contact)) == 1, "repeat is 1: one message per quiet spell"
    assert (await watch.query(ContactWatch.status)) == "waiting_for_contact"


async def test_repeat_sends_each_message_n_days_after_the_last(rig: Rig) -> None:
    rig.rule(**(QUIET_3_DAYS | {"delay_days": 2, "repeat": 2}))
    contact = await rig.lead(name="Bo", email="bo@example.com")
    await rig.env.sleep(timedelta(days=9))
    await wait_for(lambda: len(rig.finished(contact)) == 2)
    first, second = sorted(rig.finished(contact), key=lambda r: r.due_at)
    assert second.due_at - first.due_at == timedelta(days=2)
    assert len(rig.sent_to("bo@example.com")) == 2, "our own messages start no new spell"


REMINDER_24H = {
    "name": "SMS a day before",
    "type": "booking_reminder",
    "trigger": "booking_reminder_hours",
    "delay_hours": 24,
    "channel": "SMS",
    "message_template": "See you {{booking_time}}!",
}


async def test_a_booking_reminder_moves_with_the_booking_and_a_cancelled_one_ends(
    rig: Rig,
) -> None:
    rig.rule(**REMINDER_24H)
    contact = await rig.lead(name="Cy", phone="+15551230002")
    now = await rig.now()
    booking, event = rig.store.create_booking(
        NewBooking(contact_id=contact, starts_at=now + timedelta(days=3), timezone="UTC")
    )
    await rig.starter.booking_saved(booking, event)
    handle = rig.env.client.get_workflow_handle(booking_reminder.workflow_id_for(booking.id))

    async def planned() -> datetime | None:
        return (await handle.query(BookingReminder.next_action)).at

    await wait_for(lambda: _is(planned, now + timedelta(days=2)))

    moved = now + timedelta(days=5)
    booking, change = rig.store.change_booking(booking.id, {"starts_at": moved})
    await rig.starter.booking_saved(booking, change)
    await wait_for(lambda: _is(planned, moved - timedelta(hours=24)))

    await rig.env.sleep(timedelta(days=3))  # the old reminder time passes: nothing
    assert rig.runs(contact) == []
    await rig.env.sleep(timedelta(days=1, hours=2))
    await wait_for(lambda: len(rig.finished(contact)) == 1, failure="no reminder")
    [run] = rig.finished(contact)
    assert run.status == RunStatus.sent, run.reason
    assert run.due_at == moved - timedelta(hours=24)
    assert rig.sent_to("+15551230002") == [f"See you {_said(moved)}!"]
    await rig.env.sleep(timedelta(days=1))
    await wait_for(lambda: _status(handle, "started"), failure="the reminder did not end")

    other, event = rig.store.create_booking(
        NewBooking(contact_id=contact, starts_at=(await rig.now()) + timedelta(days=4))
    )
    await rig.starter.booking_saved(other, event)
    cancelled, change = rig.store.change_booking(other.id, {"status": "cancelled"})
    await rig.starter.booking_saved(cancelled, change)
    ending = rig.env.client.get_workflow_handle(booking_reminder.workflow_id_for(other.id))
    await wait_for(lambda: _status(ending, "cancelled"), failure="the reminder did not end")
    assert len(rig.runs(contact)) == 1, "the cancelled booking is not reminded"


async def test_a_booking_made_inside_the_window_is_reminded_at_once_or_too_late(
    rig: Rig,
) -> None:
    rig.rule(**REMINDER_24H)
    contact = await rig.lead(phone="+15551230003")
    now = await rig.now()
    soon, event = rig.store.create_booking(
        NewBooking(contact_id=contact, starts_at=now + timedelta(hours=2))
    )
    await rig.starter.booking_saved(soon, event)
    past, event = rig.store.create_booking(
        NewBooking(contact_id=contact, starts_at=now - timedelta(hours=1))
    )
    await rig.starter.booking_saved(past, event)
    await wait_for(lambda: len(rig.finished(contact)) == 2)
    by_status = {run.status: run for run in rig.finished(contact)}
    assert set(by_status) == {RunStatus.sent, RunStatus.too_late}
    sent_at = by_status[RunStatus.sent].finished_at
    assert sent_at is not None and sent_at - now < SLACK, "sent at once"
    assert len(rig.sent_to("+15551230003")) == 1


WELCOME_LATER = {
    "name": "Welcome after two hours",
    "type": "lead_followup",
    "trigger": "new_lead",
    "delay_hours": 2,
    "channel": "email",
    "message_template": "Welcome, {lead_name}!",
    "conditions": {"lead_status": "new"},
}


async def test_a_rule_switched_off_during_its_delay_sends_nothing(rig: Rig) -> None:
    rule_id = rig.rule(**WELCOME_LATER)
    contact = await rig.lead(name="Di", email="di@example.com", status="new")
    [waiting] = rig.runs(contact)
    assert waiting.status == RunStatus.waiting
    [event] = rig.store.list_events(contact_id=contact)
    assert waiting.due_at == event.occurred_at + timedelta(hours=2)

    stored = rig.store.get_automation(rule_id)
    assert stored is not None
    off = stored.rule.model_copy(update={"enabled": False})
    await rig.starter.rule_changed(rule_id, rig.store.replace_automation(rule_id, off))
    await wait_for(lambda: rig.finished(contact) != [])
    [run] = rig.runs(contact)
    assert (run.status, run.reason) == (RunStatus.skipped, f"rule {rule_id} was switched off")
    await rig.env.sleep(timedelta(hours=3))
    assert rig.sent_to("di@example.com") == []


async def test_conditions_are_checked_again_when_the_run_is_due(rig: Rig) -> None:
    rig.rule(**WELCOME_LATER)
    stays = await rig.lead(name="Ed", email="ed@example.com", status="new")
    moves_on = await rig.lead(name="Flo", email="flo@example.com", status="new")
    never = await rig.lead(name="Gus", email="gus@example.com", status="won")
    rig.store.patch_lead(moves_on, {"status": "won"})
    assert rig.runs(never) == [], "conditions are checked when the event comes in"

    await rig.env.sleep(timedelta(hours=3))
    await wait_for(lambda: len(rig.finished(stays)) == 1 and len(rig.finished(moves_on)) == 1)
    [sent] = rig.finished(stays)
    [skipped] = rig.finished(moves_on)
    assert sent.status == RunStatus.sent
    assert skipped.status == RunStatus.skipped
    assert skipped.reason is not None and "lead_status" in skipped.reason
    assert rig.sent_to("ed@example.com") == ["Welcome, Ed!"]
    assert rig.sent_to("flo@example.com") == []


async def _status(handle: Any, expected: str) -> bool:
    description = await handle.describe()
    return bool(description.status.name == "COMPLETED" and await handle.result() == expected)


async def _is(planned: Any, expected: datetime) -> bool:
    return bool(await planned() == expected)


def _said(moment: datetime) -> str:
    return f"{moment:%A %d %B at %H:%M} ({moment:%Z})"


async def test_a_rule_deleted_during_its_delay_ends_its_waiting_runs_at_once(rig: Rig) -> None:
    rule_id = rig.rule(**WELCOME_LATER)
    contact = await rig.lead(name="Hal", email="hal@example.com", status="new")
    assert rig.store.delete_automation(rule_id)
    await rig.starter.rule_changed(rule_id, None)
    await wait_for(lambda: rig.finished(contact) != [], failure="the waiting run went on")
    [run] = rig.runs(contact)
    assert (run.status, run.reason) == (RunStatus.skipped, f"rule {rule_id} was deleted")
    assert run.finished_at is not None and run.finished_at < run.due_at, "ended, not timed out"
    assert rig.sent_to("hal@example.com") == []


async def test_an_old_quiet_spell_gets_its_repeats_n_days_apart_not_at_once(rig: Rig) -> None:
    """A lead imported as last contacted ten days ago, under a 3-day rule sent three times:
    the first message goes now, the next two three and six days later."""
    rig.rule(**(QUIET_3_DAYS | {"repeat": 3}))
    contact = rig.store.create_lead(
        NewLead(email="ivy@example.com", last_contacted_at=(await rig.now()) - timedelta(days=10))
    ).id
    await rig.starter.dispatch_for(contact)
    await wait_for(lambda: len(rig.finished(contact)) == 1)
    await rig.env.sleep(timedelta(days=1))
    assert len(rig.runs(contact)) == 1, "the second waits its three days"
    await rig.env.sleep(timedelta(days=6))
    await wait_for(lambda: len(rig.finished(contact)) == 3)
    first, second, third = sorted(rig.finished(contact), key=lambda r: r.created_at)
    assert second.due_at - first.finished_at >= timedelta(days=3) - SLACK  # type: ignore[operator]
    assert third.due_at - second.due_at == timedelta(days=3)


async def test_a_held_message_is_dropped_when_its_rule_is_switched_off_during_the_hold(
    fresh_time_env: WorkflowEnvironment, store: Store, sqlite_url: str, task_queue: str
) -> None:
    """Quiet hours hold a welcome e-mail; the rule is switched off meanwhile: when the hold
    ends the run asks again, and sends nothing."""
    now = await fresh_time_env.get_current_time()
    settings = Settings(
        _env_file=None,
        database_url=sqlite_url,
        secret_key="automation-tests-key-of-32-characters",
        temporal={"task_queue": task_queue},
        policy=PolicySettings(
            quiet_hours_start=(now - timedelta(hours=1)).strftime("%H:%M"),
            quiet_hours_end=(now + timedelta(hours=2)).strftime("%H:%M"),
            quiet_hours_channels="email",
        ),
    )

    async def client() -> Any:
        return fresh_time_env.client

    rig = Rig(fresh_time_env, store, AutomationStarter(store, client, task_queue))
    rule_id = rig.rule(**(WELCOME_LATER | {"delay_hours": 0}))
    async with nudge_worker(fresh_time_env.client, settings, store):
        contact = await rig.lead(name="Jo", email="jo@example.com", status="new")
        [run] = rig.runs(contact)
        handle = fresh_time_env.client.get_workflow_handle(run.workflow_id)

        async def held() -> bool:
            return str(await handle.query("status")).startswith("held_until")

        await wait_for(held, failure="the welcome was not held by quiet hours")
        stored = rig.store.get_automation(rule_id)
        assert stored is not None
        off = stored.rule.model_copy(update={"enabled": False})
        await rig.starter.rule_changed(rule_id, rig.store.replace_automation(rule_id, off))
        await rig.env.sleep(timedelta(hours=3))
        await wait_for(lambda: rig.finished(contact) != [], failure="the run did not end")
    [run] = rig.runs(contact)
    assert (run.status, run.reason) == (RunStatus.skipped, f"rule {rule_id} was switched off")
    assert [r.status for r in store.list_outbox() if r.recipient == "jo@example.com"] == ["held"]
    await rig.starter.drain()


async def test_a_dry_run_of_a_contact_update_changes_nothing(rig: Rig) -> None:
    rule_id = rig.rule(
        name="Mark as contacted",
        type="crm_update",
        trigger="session_completed",
        set={"status": "contacted", "tags": ["seen"]},
    )
    contact = await rig.lead(email="kim@example.com", status="new")
    stored = rig.store.get_automation(rule_id)
    assert stored is not None
    tried = await rig.starter.run_now(stored, contact, dry_run=True, data={})
    assert tried.status == RunStatus.dry_run
    assert "contacted" in tried.text
    after = rig.store.contact_for_rule(contact)
    assert after is not None and (after.status, after.tags) == ("new", [])
    done = await rig.starter.run_now(stored, contact, dry_run=False, data={})
    assert done.status == RunStatus.done
    after = rig.store.contact_for_rule(contact)
    assert after is not None and (after.status, after.tags) == ("contacted", ["seen"])


async def test_only_contacts_a_quiet_rule_applies_to_are_watched(rig: Rig) -> None:
    rig.rule(**(QUIET_3_DAYS | {"conditions": {"tags": "vip"}}))
    contact = await rig.lead(email="lu@example.com")
    watch = rig.env.client.get_workflow_handle(contact_watch.workflow_id_for(contact))
    with pytest.raises(RPCError):
        await watch.describe()
    rig.store.patch_lead(contact, {"tags": ["vip"]})  # no event: a tag is not a status
    await rig.starter.contact_changed(contact)
    await wait_for(lambda: _watching(watch), failure="the tagged contact is not watched")


async def _watching(handle: Any) -> bool:
    try:
        return str(await handle.query(ContactWatch.status)) == "watching"
    except RPCError:
        return False
