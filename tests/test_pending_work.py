"""Pending work is visible: a held send has an outbox row ``held`` saying until when and why,
and every workflow answers ``next_action`` (what it does next, when, why) with its current
details in the Web UI saying the same sentence; the running lists show it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.delivery import DeliveryActivities
from domain.channels import ChannelName, MessageClass
from domain.delivery import DeliverRequest
from domain.next_action import NextAction
from domain.policy import HoldReason, frequency_until
from domain.status import OutboxStatus
from service import create_app
from settings import PolicySettings, Settings, TemporalSettings
from store.delivery import FrequencyCap, FrequencyCapped
from store.repo import Role, Store
from tests.fakes.server import free_port, serve
from tests.menu_rig import Rig
from tests.menus import shop_menu
from tests.stack import (
    Fakes,
    nudge_worker,
    quiet_now_on_the_dev_server,
    running_fakes,
    settings_for,
    write_script_config,
)
from tests.waiting import eventually
from workflows.helpdesk_followup import FollowUpInput, HelpdeskFollowUp
from workflows.helpdesk_followup import start_options as followup_start
from workflows.helpdesk_poll import HelpdeskPoll, PollInput
from workflows.send_message import SendMessage
from workflows.send_message import start_options as message_start

TAG = "Needs-Sales-Followup"
PHONE = "+15551230000"
EMAIL = "customer@example.com"


async def details(handle: WorkflowHandle[Any, Any]) -> str:
    """The run's current details, as the Web UI reads them."""
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return str(metadata.current_details)


async def says(handle: WorkflowHandle[Any, Any], what: str, why: str = "") -> bool:
    """The run's next action is ``what`` (for a reason that begins with ``why``) and its
    details are the same sentence."""
    action: NextAction = await handle.query("next_action", result_type=NextAction)
    return (
        action.what == what
        and action.why.startswith(why)
        and await details(handle) == action.sentence()
    )


def marketing_sms(key: str, contact_id: int | None = None) -> DeliverRequest:
    return DeliverRequest(
        idempotency_key=key,
        workflow_id=key,
        channel=ChannelName.sms,
        to=PHONE,
        text="Sale",
        message_class=MessageClass.marketing,
        contact_id=contact_id,
    )


@contextlib.contextmanager
def http_api(settings: Settings, store: Store) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    user = {"Authorization": f"Bearer {store.create_token(Role.user)}"}
    with (
        serve(create_app(settings, store=store)) as server,
        httpx.Client(base_url=server.url, timeout=15) as client,
    ):
        yield client, user


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    with running_fakes() as running:
        yield running


# -- the sentence ----------------------------------------------------------------------------


def test_a_next_action_reads_as_one_sentence() -> None:
    at = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)
    assert (
        NextAction("sends follow-up 2", at, "24h after step 1").sentence()
        == "sends follow-up 2 at 2026-12-04 09:30 UTC: 24h after step 1"
    )
    assert (
        NextAction("sends the message", at, "held by quiet hours", "Europe/Paris").sentence()
        == "sends the message at 2026-12-04 10:30 Europe/Paris: held by quiet hours"
    )
    assert NextAction("answers the customer's message").sentence() == (
        "answers the customer's message"
    )


# -- the held row ----------------------------------------------------------------------------


async def test_a_held_sms_marketing_send_at_night_has_a_held_outbox_row_until_it_goes(
    fresh_time_env: WorkflowEnvironment, store: Store, task_queue: str
) -> None:
    env = fresh_time_env
    now = await env.get_current_time()
    night = now.astimezone(UTC).replace(hour=23, minute=0, second=0, microsecond=0)
    await env.sleep((night if night > now else night + timedelta(days=1)) - now)
    activities = DeliveryActivities({ChannelName.sms: None}, store, PolicySettings())
    key = f"test:{uuid.uuid4().hex}"
    settings = Settings(
        _env_file=None, temporal=TemporalSettings(address=f"127.0.0.1:{free_port()}")
    )
    async with Worker(
        env.client, task_queue=task_queue, workflows=[SendMessage], activities=[activities.deliver]
    ):
        handle = await env.client.start_workflow(
            SendMessage.run, marketing_sms(key), id=key, task_queue=task_queue
        )
        assert await eventually(lambda: says(handle, "sends the message", "held by"))
        action = await handle.query(SendMessage.next_action)
        assert action.at is not None and action.at.astimezone(UTC).hour == 8
        assert action.why == "held by quiet hours"
        assert await details(handle) == (
            f"sends the message at {action.at:%Y-%m-%d} 08:00 UTC: held by quiet hours"
        )

        [row] = store.list_outbox()
        assert (row.idempotency_key, row.status) == (key, OutboxStatus.held)
        assert row.not_before == action.at and row.held_reason == HoldReason.quiet_hours
        assert row.contact_id == store.contact_for("sms", PHONE)
        with http_api(settings, store) as (client, user):
            listed = client.get("/v1/outbox", params={"status": "held"}, headers=user)
            assert listed.status_code == 200, listed.text
            [shown] = listed.json()
            assert shown["idempotency_key"] == key and shown["status"] == "held"
            assert shown["held_reason"] == "quiet hours"
            assert datetime.fromisoformat(shown["not_before"]) == row.not_before

        result = await handle.result()  # the clock skips to the morning
        assert result.status == "sandboxed"
        assert (
            await handle.query(SendMessage.next_action)
        ).sentence() == "nothing: ended sandboxed"
    [row] = store.list_outbox()
    assert row.status == OutboxStatus.sandboxed and row.sent_at is not None, "the same row went"
    assert row.held_reason == HoldReason.quiet_hours, "the row still says it was held"
    assert result.finished_at is not None and result.finished_at.astimezone(UTC).hour == 8
    assert store.list_outbox(status="held") == []


def test_a_held_row_takes_no_place_under_the_frequency_cap_and_is_claimed_by_its_send(
    store: Store,
) -> None:
    contact = store.contact_for("sms", PHONE)
    now = datetime.now(UTC)
    window = timedelta(hours=24)
    cap = FrequencyCap(contact, now - window, lambda times: frequency_until(times, now, 1, window))
    fields: dict[str, Any] = {
        "workflow_id": "w",
        "channel": "sms",
        "recipient": PHONE,
        "message_class": "marketing",
        "contact_id": contact,
    }
    held = store.hold_outbox(
        "held", body="Sale", not_before=now + timedelta(hours=8), reason="quiet hours", **fields
    )
    assert held.status == OutboxStatus.held

    first = store.claim_outbox("other", body="New in", cap=cap, **fields)
    assert first.status == OutboxStatus.pending, "the held row did not count toward the cap"
    with pytest.raises(FrequencyCapped):  # the other one took the only place
        store.claim_outbox("held", body="Sale", cap=cap, **fields)
    store.hold_outbox(
        "held", body="Sale", not_before=now + window, reason="frequency cap", **fields
    )
    row = store.get_outbox("held")
    assert row is not None and (row.status, row.held_reason) == ("held", "frequency cap")

    claimed = store.claim_outbox("held", body="Sale, updated", **fields)  # no cap applies now
    assert (claimed.status, claimed.body) == (OutboxStatus.pending, "Sale, updated")
    store.hold_outbox("held", body="x", not_before=now, reason="quiet hours", **fields)
    assert store.get_outbox("held") == claimed, "a claimed row is never held again"


# -- next_action of each workflow ------------------------------------------------------------


async def test_a_helpdesk_followup_says_which_step_it_sends_when(
    fresh_time_env: WorkflowEnvironment,
    fakes: Fakes,
    store: Store,
    sqlite_url: str,
    task_queue: str,
    tmp_path: Path,
) -> None:
    env = fresh_time_env
    settings = settings_for(fakes, sqlite_url, task_queue, write_script_config(tmp_path))
    settings.policy = PolicySettings(quiet_hours_channels="")
    slug = _conversation(fakes)
    async with nudge_worker(env.client, settings, store):
        began = await env.get_current_time()
        handle = await env.client.start_workflow(
            HelpdeskFollowUp.run,
            FollowUpInput(
                conversation=slug,
                waits=[timedelta(minutes=30), timedelta(hours=24)],
                trigger_tag=TAG,
            ),
            task_queue=task_queue,
            **followup_start(slug).options(),
        )
        assert await eventually(lambda: says(handle, "sends follow-up 1"))
        action = await handle.query(HelpdeskFollowUp.next_action)
        assert action.why == "30m after the sequence began"
        assert action.at is not None
        assert timedelta(minutes=29) < action.at - began < timedelta(minutes=31)

        await env.sleep(timedelta(minutes=40))
        assert await eventually(lambda: says(handle, "sends follow-up 2"))
        action = await handle.query(HelpdeskFollowUp.next_action)
        assert action.why == "1d after step 1"
        assert await details(handle) == (
            f"sends follow-up 2 at {action.at:%Y-%m-%d %H:%M} UTC: 1d after step 1"
        )
        await handle.result()
        assert await says(handle, "nothing")
        assert (await handle.query(HelpdeskFollowUp.next_action)).why == "ended completed"


async def test_a_poll_says_what_it_did(
    fresh_time_env: WorkflowEnvironment,
    fakes: Fakes,
    store: Store,
    sqlite_url: str,
    task_queue: str,
    tmp_path: Path,
) -> None:
    env = fresh_time_env
    settings = settings_for(fakes, sqlite_url, task_queue, write_script_config(tmp_path))
    slug = _conversation(fakes)
    async with nudge_worker(env.client, settings, store):
        handle = await env.client.start_workflow(
            HelpdeskPoll.run,
            PollInput(trigger_tag=TAG, waits=[timedelta(hours=1)]),
            id=f"poll:{uuid.uuid4().hex}",
            task_queue=task_queue,
        )
        result = await handle.result()
        assert await says(handle, "nothing")
        assert (await handle.query(HelpdeskPoll.next_action)).why == (
            f"ended: {len(result.started)} follow-ups started, 0 already running"
        )
        for started in result.started:
            await env.client.get_workflow_handle(started).terminate("test over")
    assert followup_start(slug).id in result.started


async def test_a_menu_conversation_says_when_it_expires_and_where_it_waits(rig: Rig) -> None:
    rig.store.save_menu(shop_menu(expiry="2h"))
    await rig.say("hi")
    await rig.replies(1)
    handle = rig.handle()
    assert await eventually(lambda: says(handle, "ends the conversation as expired"))
    action = await handle.query("next_action", result_type=NextAction)
    view = await rig.view()
    assert (
        action.why == f"waiting for the customer's answer at step {view.step} of menu {view.menu}"
    )
    assert action.at is not None
    assert PHONE not in await details(handle), "the Web UI's details carry no address"

    await rig.env.sleep(timedelta(hours=3))
    result = await rig.result()
    assert result.status == "expired"
    assert await says(handle, "nothing")


# -- the running lists, on the real dev server (the test server cannot list) -----------------


async def test_the_running_lists_show_what_each_run_does_next(
    dev_env: WorkflowEnvironment,
    fakes: Fakes,
    store: Store,
    sqlite_url: str,
    task_queue: str,
    tmp_path: Path,
) -> None:
    """Quiet hours set around the real clock on Re:amaze and SMS, so both hold at any hour:
    a follow-up (its contact known from reading the conversation) and a message sent to a
    bare phone number (its contact known from its first hold)."""
    settings = settings_for(fakes, sqlite_url, task_queue, write_script_config(tmp_path))
    quiet_now_on_the_dev_server(settings, dev_env, "reamaze,sms")
    slug = _conversation(fakes)
    key = f"message:test-{uuid.uuid4().hex}"
    async with nudge_worker(dev_env.client, settings, store):
        followup = await dev_env.client.start_workflow(
            HelpdeskFollowUp.run,
            FollowUpInput(conversation=slug, waits=[timedelta(seconds=1)], trigger_tag=TAG),
            task_queue=task_queue,
            **followup_start(slug).options(),
        )
        message = await dev_env.client.start_workflow(
            SendMessage.run,
            marketing_sms(key),
            task_queue=task_queue,
            **message_start(marketing_sms(key)).options(),
        )
        try:
            assert await eventually(lambda: says(followup, "sends follow-up 1", "held by"))
            assert await eventually(lambda: says(message, "sends the message", "held by"))
            held = (await followup.query(HelpdeskFollowUp.next_action)).sentence()
            assert held.endswith("held by quiet hours; the conversation is read again first")
            with http_api(settings, store) as (client, user):
                # The HTTP calls run in a thread: the worker that answers the service's
                # queries runs on this event loop.
                async def running() -> list[Any]:
                    listed = await asyncio.to_thread(
                        client.get, "/v1/followups/running", headers=user
                    )
                    assert listed.status_code == 200, listed.text
                    return [run for run in listed.json() if run["workflow_id"] == followup.id]

                async def listed_once() -> bool:
                    return bool(await running())

                assert await eventually(listed_once)
                [run] = await running()
                assert run["next_action"]["sentence"] == held
                assert run["next_action"]["what"] == "sends follow-up 1"

                by_email = [c.id for c in store.list_contacts(query=EMAIL)]
                by_phone = store.contact_for("sms", PHONE)
                expected = {by_email[0]: followup.id, by_phone: message.id}
                for contact, workflow_id in expected.items():
                    path = f"/v1/contacts/{contact}/next"

                    async def listed(path: str = path) -> list[Any]:
                        found = await asyncio.to_thread(client.get, path, headers=user)
                        assert found.status_code == 200, found.text
                        return list(found.json())

                    async def shows(path: str = path, wanted: str = workflow_id) -> bool:
                        return [run["workflow_id"] for run in await listed(path)] == [wanted]

                    assert await eventually(shows), f"{path} lists {workflow_id}"
                    [work] = await listed()
                    handle = dev_env.client.get_workflow_handle(workflow_id)
                    assert work["next_action"]["sentence"] == await details(handle)
                    assert work["status"].startswith("held_until_")
                assert work["kind"] == "send_message"

                missing = client.get("/v1/contacts/999999/next", headers=user)
                assert missing.status_code == 404 and "contact_id" in missing.text
        finally:
            for handle in (followup, message):
                with contextlib.suppress(RPCError):
                    await handle.terminate("test over")


def _conversation(fakes: Fakes) -> str:
    slug = f"conv-{uuid.uuid4().hex[:8]}"
    fakes.reamaze.add_conversation(slug, tags=[TAG])
    fakes.reamaze.add_message(
        slug, "Do you ship?", email=EMAIL, created_at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    return slug
