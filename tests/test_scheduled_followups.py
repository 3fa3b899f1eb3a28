"""Scheduled follow-ups paid with credits, on the time-skipping server: days pass in moments.

Real workflows and activities, a real SQLite database, e-mail in sandbox mode and SMS
through a fake Twilio on 127.0.0.1. Each test checks the message (sent once, or not at all)
and the ledger (reserved, then captured or released exactly once).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from domain.credits import EntryKind
from domain.scheduled_followups import FollowupSettings, ScheduleStatus
from domain.templates import MessageTemplate
from followup_schedules import FollowupScheduler, Refused, ScheduleRequest
from settings import PolicySettings, Settings, TwilioSettings
from store.events import NewLead
from store.repo import Store
from store.scheduled_followups import ScheduleView
from tests.fakes.server import serve
from tests.fakes.twilio import FakeTwilio
from tests.waiting import wait_for
from worker import build_activities, build_worker

SMS_FROM = "+15550001111"


@dataclass
class Rig:
    env: WorkflowEnvironment
    store: Store
    scheduler: FollowupScheduler
    twilio: FakeTwilio

    async def now(self) -> datetime:
        return await self.env.get_current_time()

    def contact(self, **fields: Any) -> int:
        lead = NewLead(**({"name": "Meena", "email": "meena@example.com"} | fields))
        contact = self.store.create_lead(lead)
        self.store.add_credits(
            contact.id, EntryKind.grant, 20, reason="bought", key=f"g{contact.id}"
        )
        return contact.id

    async def schedule(self, contact_id: int, after: timedelta, **fields: Any) -> ScheduleView:
        view, _ = await self.scheduler.schedule(
            ScheduleRequest(
                contact_id=contact_id,
                template=fields.pop("template", "checkin"),
                scheduled_at=await self.now() + after,
                **fields,
            ),
            now=await self.now(),
        )
        return view

    def view(self, schedule_id: int) -> ScheduleView:
        view = self.store.get_schedule(schedule_id)
        assert view is not None
        return view

    def kinds(self, contact_id: int) -> list[str]:
        return sorted(e.kind.value for e in self.store.credit_entries(contact_id))


def template(**fields: Any) -> MessageTemplate:
    return MessageTemplate.model_validate(
        {
            "name": "checkin",
            "channel": "email",
            "subject": "How are you, {{user_name}}?",
            "variants": {
                "en": "Dear {{user_name}}, how did {{service_type}} go?",
                "ta": "அன்புள்ள {{user_name}}, {{service_type}} எப்படி இருந்தது?",
            },
            "variables": ["user_name", "service_type"],
            "template_type": "session_followup",
            "credits_cost": 5,
        }
        | fields
    )


@pytest.fixture
async def rig(
    fresh_time_env: WorkflowEnvironment, store: Store, sqlite_url: str, task_queue: str
) -> AsyncIterator[Rig]:
    twilio = FakeTwilio()
    with serve(twilio.app) as twilio_server:
        settings = Settings(
            _env_file=None,
            database_url=sqlite_url,
            secret_key="scheduled-tests-key-of-32-characters",
            temporal={"task_queue": task_queue},
            policy=PolicySettings(quiet_hours_start="00:00", quiet_hours_end="00:00"),
            twilio=TwilioSettings(
                account_sid=twilio.account_sid,
                auth_token=twilio.auth_token,
                sms_from=SMS_FROM,
                base_url=twilio_server.url,
            ),
        )
        store.create_template(template())
        store.create_template(
            template(name="sms-checkin", channel="sms", subject=None, template_type="check_in")
        )

        async def client() -> Any:
            return fresh_time_env.client

        scheduler = FollowupScheduler(store, client, task_queue)
        rig = Rig(fresh_time_env, store, scheduler, twilio)
        rig.settings = settings  # type: ignore[attr-defined]
        yield rig


@pytest.fixture
async def worker(rig: Rig) -> AsyncIterator[None]:
    settings: Settings = rig.settings  # type: ignore[attr-defined]
    async with (
        build_activities(settings, rig.store) as activities,
        build_worker(rig.env.client, settings, activities.all()),
    ):
        yield


async def test_scheduled_three_days_ahead_sends_at_three_days_and_captures(
    rig: Rig, worker: None
) -> None:
    contact = rig.contact(locale="ta")
    view = await rig.schedule(contact, timedelta(days=3), variables={"service_type": "ஜோதிடம்"})
    assert view.status == ScheduleStatus.pending and view.credits_reserved == 5
    assert rig.store.credit_balance(contact).balance == 15
    await rig.env.sleep(timedelta(days=3) - timedelta(hours=1))
    assert rig.store.list_outbox() == [], "nothing before its time"

    await rig.env.sleep(timedelta(hours=2))
    await wait_for(lambda: rig.view(view.id).status == ScheduleStatus.sent)
    [row] = rig.store.list_outbox()
    assert row.body.startswith("அன்புள்ள Meena, ஜோதிடம் எப்படி"), "the contact's locale"
    assert row.recipient == "meena@example.com"
    done = rig.view(view.id)
    assert done.sent_at is not None and done.sent_at - view.scheduled_at < timedelta(seconds=30)
    assert done.credits_charged == 5
    balance = rig.store.credit_balance(contact)
    assert (balance.balance, balance.reserved, balance.spent) == (15, 0, 5)
    assert rig.kinds(contact) == ["capture", "grant", "reserve"]


async def test_rescheduled_follow_up_moves_in_place(rig: Rig, worker: None) -> None:
    contact = rig.contact()
    view = await rig.schedule(contact, timedelta(days=3), variables={"service_type": "tarot"})
    later = view.scheduled_at + timedelta(days=2)
    moved = await rig.scheduler.reschedule(view.id, later, now=await rig.now())
    assert moved.scheduled_at == later
    await rig.env.sleep(timedelta(days=4))
    assert rig.store.list_outbox() == [], "not at the old time"
    await rig.env.sleep(timedelta(days=1, hours=1))
    await wait_for(lambda: rig.view(view.id).status == ScheduleStatus.sent)
    sent_at = rig.view(view.id).sent_at
    assert sent_at is not None and sent_at - later < timedelta(seconds=30)


async def test_cancelled_before_sending_releases_and_sends_nothing(rig: Rig, worker: None) -> None:
    contact = rig.contact()
    view = await rig.schedule(contact, timedelta(days=1), variables={"service_type": "tarot"})
    cancelled = await rig.scheduler.cancel(view.id)
    assert cancelled.status == ScheduleStatus.cancelled and cancelled.credits_charged == 0
    assert rig.store.credit_balance(contact).balance == 20
    assert rig.kinds(contact) == ["grant", "release", "reserve"]
    await rig.env.sleep(timedelta(days=2))
    assert rig.store.list_outbox() == []
    with pytest.raises(Refused) as again:
        await rig.scheduler.cancel(view.id)
    assert again.value.status == 409


async def test_cancelled_from_temporal_releases_the_same_way(rig: Rig, worker: None) -> None:
    contact = rig.contact()
    view = await rig.schedule(contact, timedelta(days=1), variables={"service_type": "tarot"})
    handle = rig.env.client.get_workflow_handle(view.workflow_id)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert rig.view(view.id).status == ScheduleStatus.cancelled
    assert rig.store.credit_balance(contact).balance == 20


async def test_provider_failure_releases_when_configured_and_keeps_when_not(
    rig: Rig, worker: None
) -> None:
    refunded = rig.contact(email="a@example.com", phone="+15551234001")
    kept = rig.contact(email="b@example.com", phone="+15551234002")
    first = await rig.schedule(
        refunded, timedelta(hours=1), template="sms-checkin", variables={"service_type": "x"}
    )
    rig.twilio.fail_next(400, 21211)  # not a valid phone number: not retried
    await rig.env.sleep(timedelta(hours=2))
    await wait_for(lambda: rig.view(first.id).status == ScheduleStatus.failed)
    assert rig.store.credit_balance(refunded).balance == 20
    assert rig.kinds(refunded) == ["grant", "release", "reserve"]
    with pytest.raises(WorkflowFailureError):
        await rig.env.client.get_workflow_handle(first.workflow_id).result()

    rig.store.save_followup_settings(FollowupSettings(refund_on_failure=False))
    second = await rig.schedule(
        kept, timedelta(hours=1), template="sms-checkin", variables={"service_type": "x"}
    )
    rig.twilio.fail_next(400, 21211)
    await rig.env.sleep(timedelta(hours=2))
    await wait_for(lambda: rig.view(second.id).status == ScheduleStatus.failed)
    assert rig.store.credit_balance(kept).balance == 15, "refund_on_failure is off"
    assert rig.view(second.id).credits_charged == 5


async def test_no_address_on_the_channel_is_refused_before_anything_is_kept(rig: Rig) -> None:
    contact = rig.contact(phone=None)
    with pytest.raises(Refused) as refused:
        await rig.schedule(contact, timedelta(days=1), template="sms-checkin")
    assert refused.value.status == 422 and refused.value.loc == ("channel",)
    assert "no sms address" in refused.value.message
    with pytest.raises(Refused) as missing:
        await rig.schedule(contact, timedelta(days=1))
    assert missing.value.status == 422 and "service_type" in missing.value.message
    assert rig.store.credit_balance(contact).balance == 20
    assert rig.store.list_schedules(_all()) == []


def _all() -> Any:
    from store.scheduled_followups import ScheduleFilter

    return ScheduleFilter()


async def test_a_terminated_run_is_settled_by_the_sweep(rig: Rig, worker: None) -> None:
    contact = rig.contact()
    view = await rig.schedule(contact, timedelta(days=1), variables={"service_type": "tarot"})
    await rig.env.client.get_workflow_handle(view.workflow_id).terminate("by an operator")
    assert rig.store.credit_balance(contact).balance == 15, "Terminate runs no clean-up"
    now = await rig.now()
    assert await rig.scheduler.settle_stranded(now=now) == 0, "not overdue yet"
    assert await rig.scheduler.settle_stranded(now=now + timedelta(days=2)) == 1
    settled = rig.view(view.id)
    assert settled.status == ScheduleStatus.failed and "terminated" in (
        settled.failure_reason or ""
    )
    assert rig.store.credit_balance(contact).balance == 20
    assert await rig.scheduler.settle_stranded(now=now + timedelta(days=2)) == 0
