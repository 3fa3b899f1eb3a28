"""Record workflow histories for the replay test: `python -m tests.record_histories`.

Run it only when a workflow gains a new path worth guarding; never to "fix" a failing replay
test - that failure means a change needs `workflow.patched`. A prefix starting with
``send_message`` records ``SendMessage`` runs (an SMS through the fake Twilio, one with a
``delivered`` status signalled back), one starting with ``helpdesk_poll`` a ``HelpdeskPoll``
run that starts two follow-ups, and any other prefix follow-ups.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from automation_starts import AutomationStarter
from domain.automation_runs import workflow_id_for
from domain.automations import AutomationRule
from domain.channels import ChannelName
from domain.credits import EntryKind
from domain.delivery import DeliverRequest, DeliveryStatus
from domain.templates import MessageTemplate
from followup_schedules import FollowupScheduler, ScheduleRequest
from settings import PolicySettings, Settings, TwilioSettings
from store.bookings import NewBooking
from store.db import upgrade
from store.events import NewLead
from store.repo import Store
from tests.conftest import temporal_test_server
from tests.fakes.server import serve
from tests.fakes.twilio import FakeTwilio
from tests.stack import nudge_worker, running_fakes, settings_for, write_script_config
from tests.waiting import eventually
from workflows import booking_reminder, contact_watch
from workflows.helpdesk_followup import FollowUpInput, HelpdeskFollowUp, start_options
from workflows.helpdesk_poll import HelpdeskPoll, PollInput, schedule_id_for
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES
from workflows.send_message import SendMessage

HERE = Path(__file__).with_name("histories")
TAG = "Needs-Sales-Followup"
WAITS = [timedelta(minutes=30), timedelta(hours=24)]


async def save(client: Client, workflow_id: str, name: str) -> None:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    (HERE / f"{name}.json").write_text(history.to_json())


async def main(prefix: str) -> None:
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_test_server(), data_converter=pydantic_data_converter
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace="default",
            search_attributes={
                k.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for k in SEARCH_ATTRIBUTES
            },
        )
    )
    workdir = Path(tempfile.mkdtemp())
    url = f"sqlite:///{workdir / 'nudge.db'}"
    upgrade(url)
    store = Store.from_url(url)
    if prefix == "automations":
        await record_automations(env, store, url)
    elif prefix == "scheduled_followup":
        await record_scheduled(env, store, url)
    elif prefix.startswith("send_message"):
        await record_send_messages(env, store, url, prefix)
    elif prefix.startswith("helpdesk_poll"):
        await record_poll(env, store, url, workdir, prefix)
    else:
        await record_followups(env, store, url, workdir, prefix)
    store.close()
    await env.shutdown()


async def record_send_messages(
    env: WorkflowEnvironment,
    store: Store,
    url: str,
    prefix: str,
    names: tuple[str, ...] = ("sent", "delivered", "reamaze_sent"),
) -> None:
    """An SMS that is sent and hears nothing back, one whose ``delivered`` status is
    signalled while the run waits for it, and a reply posted into a Re:amaze conversation
    (a channel that reports no statuses)."""
    twilio = FakeTwilio()
    with running_fakes() as fakes, serve(twilio.app) as twilio_server:
        settings = settings_for(fakes, url, "record")
        settings.twilio = TwilioSettings(
            account_sid=twilio.account_sid,
            auth_token=twilio.auth_token,
            sms_from="+15005550006",
            base_url=twilio_server.url,
        )
        async with nudge_worker(env.client, settings, store):
            for name in names:
                key = f"record:{name}-{uuid.uuid4().hex[:6]}"
                request = DeliverRequest(
                    key, key, ChannelName.sms, "+15551230000", text="Your order has shipped"
                )
                if name.startswith("reamaze"):
                    fakes.reamaze.add_conversation(key, tags=[], customer_email="c@example.com")
                    request.channel, request.to = ChannelName.reamaze, key
                handle = await env.client.start_workflow(
                    SendMessage.run, request, id=key, task_queue="record"
                )
                if name == "delivered":
                    await until_sent(store, key)
                    await handle.signal(SendMessage.delivery_status, DeliveryStatus(key, name))
                await handle.result()
                await save(env.client, handle.id, f"{prefix}_{name}")


async def until_sent(store: Store, key: str) -> None:
    """Until the outbox row of ``key`` is marked sent, so its status can be signalled."""

    def sent() -> bool:
        row = store.get_outbox(key)
        return row is not None and row.status == "sent"

    if not await eventually(sent, within=60, every=0.1):
        raise RuntimeError(f"{key} was not sent within a minute")


async def record_poll(
    env: WorkflowEnvironment, store: Store, url: str, workdir: Path, prefix: str
) -> None:
    """A poll that finds two tagged conversations and starts a follow-up for each."""
    with running_fakes() as fakes:
        settings = settings_for(fakes, url, "record", write_script_config(workdir))
        for _ in range(2):
            slug = f"polled-{uuid.uuid4().hex[:6]}"
            fakes.reamaze.add_conversation(slug, tags=[TAG], customer_email=f"{slug}@example.com")
        async with nudge_worker(env.client, settings, store):
            handle = await env.client.start_workflow(
                HelpdeskPoll.run,
                PollInput(trigger_tag=TAG, waits=WAITS),
                id=f"{schedule_id_for()}:run",
                task_queue="record",
            )
            result = await handle.result()
            assert len(result.started) == 2, result
            await save(env.client, handle.id, f"{prefix}_started_two")


async def record_followups(
    env: WorkflowEnvironment, store: Store, url: str, workdir: Path, prefix: str
) -> None:
    with running_fakes() as fakes:
        settings = settings_for(fakes, url, "record", write_script_config(workdir))
        async with nudge_worker(env.client, settings, store):
            for name in ("completed", "purchase", "cancelled", "failed"):
                slug = f"{name}-{uuid.uuid4().hex[:6]}"
                fakes.reamaze.add_conversation(
                    slug, tags=[TAG], customer_email=f"{slug}@example.com"
                )
                fakes.reamaze.add_message(
                    slug,
                    "Hello?",
                    email=f"{slug}@example.com",
                    created_at=datetime(2026, 1, 1, tzinfo=UTC),
                )
                if name == "purchase":
                    fakes.reamaze.add_message(
                        slug, "payment successful", email=f"{slug}@example.com"
                    )
                if name == "failed":  # Re:amaze refuses the credentials: a FAILED run
                    fakes.reamaze.fail_next("GET", f"/conversations/{slug}", 401)
                handle = await env.client.start_workflow(
                    HelpdeskFollowUp.run,
                    FollowUpInput(conversation=slug, waits=WAITS, trigger_tag=TAG),
                    task_queue="record",
                    **start_options(slug).options(),
                )
                if name == "cancelled":
                    await env.sleep(timedelta(minutes=40))
                    await handle.cancel()
                try:
                    await handle.result()
                except Exception:
                    pass
                await save(env.client, handle.id, f"{prefix}_{name}")


async def record_automations(env: WorkflowEnvironment, store: Store, url: str) -> None:
    """``AutomationRun`` (sent, skipped by its conditions), ``ContactWatch`` (fired once,
    parked), ``BookingReminder`` (moved then reminded, cancelled)."""
    settings = Settings(
        _env_file=None,
        database_url=url,
        secret_key="record-histories-key-of-32-characters",
        temporal={"task_queue": "record"},
        policy=PolicySettings(quiet_hours_start="00:00", quiet_hours_end="00:00"),
    )

    async def client() -> Client:
        return env.client

    starter = AutomationStarter(store, client, "record")

    def rule(**body: Any) -> int:
        return store.create_automation(AutomationRule.model_validate(body)).id

    async def lead(**fields: Any) -> int:
        contact = store.create_lead(NewLead(**fields))
        await starter.dispatch_for(contact.id)
        return contact.id

    async with nudge_worker(env.client, settings, store):
        welcome = rule(
            name="welcome", type="lead_followup", trigger="new_lead", delay_hours=1,
            channel="email", message_template="Hi {lead_name}!", conditions={"status": "new"},
        )  # fmt: skip
        rule(
            name="quiet", type="lead_followup", trigger="no_contact_days", delay_days=3,
            channel="email", message_template="Still there, {lead_name}?",
        )  # fmt: skip
        rule(
            name="remind", type="booking_reminder", trigger="booking_reminder_hours",
            delay_hours=24, channel="sms", message_template="See you soon!",
        )  # fmt: skip
        sent = await lead(name="Ana", email="ana@example.com", phone="+15551230001", status="new")
        skipped = await lead(name="Bo", email="bo@example.com", status="new")
        store.patch_lead(skipped, {"status": "won"})
        now = await env.get_current_time()
        booking, event = store.create_booking(
            NewBooking(contact_id=sent, starts_at=now + timedelta(days=2))
        )
        await starter.booking_saved(booking, event)
        booking, moved = store.change_booking(booking.id, {"starts_at": now + timedelta(days=4)})
        await starter.booking_saved(booking, moved)
        other, event = store.create_booking(
            NewBooking(contact_id=sent, starts_at=now + timedelta(days=5))
        )
        await starter.booking_saved(other, event)
        other, cancelled = store.change_booking(other.id, {"status": "cancelled"})
        await starter.booking_saved(other, cancelled)
        await env.sleep(timedelta(days=6))
        await eventually(lambda: len(store.list_runs(contact_id=sent)) == 3, within=60)
        for contact, name in ((sent, "sent"), (skipped, "skipped")):
            await save(
                env.client, workflow_id_for(welcome, contact, "event-" + str(_first(store, contact))),
                f"automation_run_{name}",
            )  # fmt: skip
        await save(env.client, contact_watch.workflow_id_for(sent), "contact_watch_fired")
        await save(
            env.client, booking_reminder.workflow_id_for(booking.id), "booking_reminder_started"
        )
        await save(
            env.client, booking_reminder.workflow_id_for(other.id), "booking_reminder_cancelled"
        )
    await starter.drain()


async def record_scheduled(env: WorkflowEnvironment, store: Store, url: str) -> None:
    """``ScheduledFollowUp``: an SMS moved once, sent and then reported delivered and read
    (captured); one cancelled while it waited (released)."""
    twilio = FakeTwilio()
    with serve(twilio.app) as twilio_server:
        settings = Settings(
            _env_file=None,
            database_url=url,
            secret_key="record-histories-key-of-32-characters",
            temporal={"task_queue": "record"},
            policy=PolicySettings(quiet_hours_start="00:00", quiet_hours_end="00:00"),
            twilio=TwilioSettings(
                account_sid=twilio.account_sid,
                auth_token=twilio.auth_token,
                sms_from="+15550001111",
                base_url=twilio_server.url,
            ),
        )

        async def client() -> Client:
            return env.client

        scheduler = FollowupScheduler(store, client, "record")
        store.create_template(
            MessageTemplate.model_validate(
                {"name": "checkin", "channel": "sms", "variables": ["user_name"],
                 "variants": {"en": "Hi {{user_name}}", "ta": "வணக்கம் {{user_name}}"}}
            )
        )  # fmt: skip
        contact = store.create_lead(NewLead(name="Meena", phone="+15551230001", locale="ta"))
        store.add_credits(contact.id, EntryKind.grant, 20, reason="bought", key="record")
        async with nudge_worker(env.client, settings, store):
            now = await env.get_current_time()
            sent, _ = await scheduler.schedule(
                ScheduleRequest(contact.id, "checkin", scheduled_at=now + timedelta(days=1)),
                now=now,
            )
            cancelled, _ = await scheduler.schedule(
                ScheduleRequest(contact.id, "checkin", scheduled_at=now + timedelta(days=3)),
                now=now,
            )
            await scheduler.reschedule(sent.id, now + timedelta(days=2), now=now)
            await scheduler.cancel(cancelled.id)
            await env.sleep(timedelta(days=2, hours=1))
            await eventually(lambda: len(store.list_outbox()) == 1, within=60)
            [row] = store.list_outbox()
            assert row.provider_message_id is not None
            handle = env.client.get_workflow_handle(sent.workflow_id)
            for status in ("delivered", "read"):
                store.record_status(
                    "twilio", row.provider_message_id, status, occurred_at=datetime.now(UTC)
                )
                await handle.signal("delivery_status", DeliveryStatus(row.idempotency_key, status))
            await handle.result()
            await save(env.client, sent.workflow_id, "scheduled_followup_read")
            await save(env.client, cancelled.workflow_id, "scheduled_followup_cancelled")


def _first(store: Store, contact_id: int) -> int:
    """The contact's ``new_lead`` event."""
    return min(e.id for e in store.list_events(contact_id=contact_id, type_="new_lead"))


if __name__ == "__main__":
    # A new prefix keeps the histories of older code (they guard its running workflows).
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "helpdesk_followup"))
