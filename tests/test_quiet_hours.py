"""Quiet hours that fit each channel, and a held run that says until when and why.

Quiet hours hold marketing on the channels that ring a phone (SMS, WhatsApp, push) unless
``NUDGE_POLICY__QUIET_HOURS_CHANNELS`` says otherwise; e-mail and helpdesk replies wait in an
inbox. A held run reports ``held_until_08:00_quiet_hours``: the wall-clock time in the zone
the hold was judged in (the contact's, else ``NUDGE_POLICY__DEFAULT_TIMEZONE``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.delivery import DeliveryActivities
from cli import _policy_line
from domain.channels import ChannelName, MessageClass
from domain.delivery import DeliverRequest
from domain.policy import HoldReason, Verdict, held_status, quiet_hours_apply
from domain.status import FollowUpStatus
from service import create_app
from settings import PolicySettings, Settings
from store.repo import Role, Store
from tests.fakes.server import serve
from tests.stack import (
    Fakes,
    nudge_worker,
    quiet_now_on_the_dev_server,
    running_fakes,
    settings_for,
    write_script_config,
)
from tests.waiting import eventually
from workflows.helpdesk_followup import FollowUpInput, HelpdeskFollowUp, workflow_id_for
from workflows.search_attributes import NUDGE_STATUS
from workflows.send_message import SendMessage

TAG = "Needs-Sales-Followup"
PHONE = "+15551230000"
DEFAULTS = PolicySettings()
"""21:00-08:00 in UTC on sms, whatsapp, push: what a shop gets without configuring anything."""


# -- the rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "held"),
    [
        (ChannelName.sms, True),
        (ChannelName.whatsapp, True),
        (ChannelName.whatsapp_twilio, True),
        (ChannelName.push, True),
        (ChannelName.email, False),
        (ChannelName.reamaze, False),
        (ChannelName.support_board, False),
    ],
)
def test_quiet_hours_hold_by_default_only_what_rings_a_phone(
    channel: ChannelName, held: bool
) -> None:
    assert quiet_hours_apply(channel, DEFAULTS.quiet_hours_channels) is held


def test_naming_either_whatsapp_covers_both_providers() -> None:
    """Twilio and Meta reach the same WhatsApp number: one name holds both."""
    assert quiet_hours_apply(ChannelName.whatsapp, [ChannelName.whatsapp_twilio])
    assert quiet_hours_apply(ChannelName.whatsapp_twilio, [ChannelName.whatsapp])
    assert not quiet_hours_apply(ChannelName.sms, [])


def test_the_channels_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUDGE_POLICY__QUIET_HOURS_CHANNELS", " sms, reamaze ,email")
    policy = Settings(_env_file=None).policy
    assert policy.quiet_hours_channels == [ChannelName.sms, ChannelName.reamaze, ChannelName.email]
    monkeypatch.setenv("NUDGE_POLICY__QUIET_HOURS_CHANNELS", "")
    assert Settings(_env_file=None).policy.quiet_hours_channels == []


def test_an_unknown_channel_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUDGE_POLICY__QUIET_HOURS_CHANNELS", "sms,pager")
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    message = str(caught.value)
    assert "quiet_hours_channels" in message and "'pager' is not a channel" in message
    assert "whatsapp_twilio" in message, "the error lists the channels there are"


@pytest.mark.parametrize(
    ("until", "zone", "reason", "expected"),
    [
        (datetime(2026, 6, 2, 6, 0, tzinfo=UTC), "Europe/Paris", "quiet hours",
         "held_until_08:00_quiet_hours"),
        (datetime(2026, 1, 15, 19, 30, tzinfo=UTC), "America/New_York", "frequency cap",
         "held_until_14:30_frequency_cap"),
        (datetime(2026, 1, 15, 8, 0, tzinfo=UTC), "", "quiet hours",
         "held_until_08:00_quiet_hours"),
    ],
)  # fmt: skip
def test_a_hold_reads_as_the_wall_clock_of_the_zone_it_was_judged_in(
    until: datetime, zone: str, reason: str, expected: str
) -> None:
    assert held_status(until, zone, reason) == expected


def test_nudge_dev_prints_the_policy() -> None:
    settings = Settings(_env_file=None)
    assert (
        _policy_line(settings)
        == "quiet hours 21:00-08:00 (UTC) on sms, whatsapp, push; cap 3 per 24h"
    )
    settings.policy = PolicySettings(
        default_timezone="America/Denver", quiet_hours_channels="", frequency_cap=0
    )
    assert (
        _policy_line(settings) == "quiet hours 21:00-08:00 (America/Denver) on no channel; no cap"
    )
    settings.policy = PolicySettings(quiet_hours_start="00:00", quiet_hours_end="00:00")
    assert _policy_line(settings).startswith("quiet hours off; ")


@pytest.mark.parametrize("channel", [ChannelName.email, ChannelName.reamaze])
async def test_an_inbox_channel_is_not_held_at_night(store: Store, channel: ChannelName) -> None:
    decision = await _decide(store, DEFAULTS, channel, datetime(2026, 6, 1, 23, 0, tzinfo=UTC))
    assert decision.verdict == Verdict.send


async def test_a_shop_in_the_americas_is_held_by_its_own_night_not_utcs(store: Store) -> None:
    """15:00 in Denver is 21:00 UTC: held if quiet hours were judged in UTC, sent in Denver."""
    afternoon = datetime(2026, 1, 15, 22, 0, tzinfo=UTC)
    in_utc = await _decide(store, DEFAULTS, ChannelName.sms, afternoon)
    assert in_utc.verdict == Verdict.wait
    denver = PolicySettings(default_timezone="America/Denver")
    assert (await _decide(store, denver, ChannelName.sms, afternoon)).verdict == Verdict.send

    night = datetime(2026, 1, 16, 6, 0, tzinfo=UTC)  # 23:00 in Denver
    held = await _decide(store, denver, ChannelName.sms, night)
    assert held.verdict == Verdict.wait and held.reason == HoldReason.quiet_hours
    assert held.not_before is not None
    assert held_status(held.not_before, held.timezone, held.reason) == (
        "held_until_08:00_quiet_hours"
    )


async def _decide(store: Store, policy: PolicySettings, channel: ChannelName, at: datetime) -> Any:
    to = {ChannelName.email: "a@shop.test", ChannelName.reamaze: "conv-1"}.get(channel, PHONE)
    activities = DeliveryActivities({}, store, policy)
    request = DeliverRequest(
        idempotency_key="k",
        workflow_id="w",
        channel=channel,
        to=to,
        text="Sale",
        message_class=MessageClass.marketing,
        as_of=at,
    )
    return await activities.decide(request, None)


# -- held runs on the time-skipping server ---------------------------------------------------


async def _skip_to(env: WorkflowEnvironment, hour: int) -> datetime:
    """Move the server's clock on to the next ``hour``:00 UTC."""
    now = await env.get_current_time()
    target = now.astimezone(UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
    if target <= now:
        target += timedelta(days=1)
    await env.sleep(target - now)
    return target


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    with running_fakes() as running:
        yield running


def _conversation(fakes: Fakes) -> str:
    slug = f"conv-{uuid.uuid4().hex[:8]}"
    fakes.reamaze.add_conversation(slug, tags=[TAG])
    fakes.reamaze.add_message(
        slug,
        "Do you ship?",
        email="customer@example.com",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return slug


async def _start_followup(
    client: Client, slug: str, task_queue: str, wait: timedelta
) -> WorkflowHandle[HelpdeskFollowUp, Any]:
    return await client.start_workflow(
        HelpdeskFollowUp.run,
        FollowUpInput(conversation=slug, waits=[wait], trigger_tag=TAG),
        id=workflow_id_for("reamaze", slug),
        task_queue=task_queue,
    )


async def test_a_helpdesk_followup_due_at_night_is_not_held_by_default(
    fresh_time_env: WorkflowEnvironment,
    fakes: Fakes,
    store: Store,
    sqlite_url: str,
    task_queue: str,
    tmp_path: Path,
) -> None:
    env = fresh_time_env
    settings = settings_for(fakes, sqlite_url, task_queue, write_script_config(tmp_path))
    settings.policy = DEFAULTS
    night = await _skip_to(env, 22)
    slug = _conversation(fakes)
    async with nudge_worker(env.client, settings, store):
        handle = await _start_followup(env.client, slug, task_queue, timedelta(minutes=30))
        result = await handle.result()
    assert result.status == FollowUpStatus.completed
    assert len(fakes.reamaze.posts_for(slug)) == 1
    ended = (await handle.describe()).close_time
    assert ended is not None and ended < night + timedelta(hours=1), "sent at 22:30, not 08:00"


async def test_a_helpdesk_followup_is_held_where_quiet_hours_are_set_to_hold_it(
    fresh_time_env: WorkflowEnvironment,
    fakes: Fakes,
    store: Store,
    sqlite_url: str,
    task_queue: str,
    tmp_path: Path,
) -> None:
    env = fresh_time_env
    settings = settings_for(fakes, sqlite_url, task_queue, write_script_config(tmp_path))
    settings.policy = PolicySettings(quiet_hours_channels="sms,reamaze")
    await _skip_to(env, 22)
    slug = _conversation(fakes)
    async with nudge_worker(env.client, settings, store):
        handle = await _start_followup(env.client, slug, task_queue, timedelta(minutes=30))
        await env.sleep(timedelta(minutes=40))
        held = "held_until_08:00_quiet_hours"
        assert await eventually(lambda: _status(handle, HelpdeskFollowUp.status, held))
        assert (await handle.describe()).typed_search_attributes.get(NUDGE_STATUS) == held
        assert fakes.reamaze.posts_for(slug) == []

        result = await handle.result()  # the clock skips to the morning
    assert result.status == FollowUpStatus.completed
    assert len(fakes.reamaze.posts_for(slug)) == 1
    ended = (await handle.describe()).close_time
    assert ended is not None and ended.astimezone(UTC).hour == 8


async def test_an_sms_marketing_send_at_night_says_until_when_it_is_held(
    fresh_time_env: WorkflowEnvironment, store: Store, task_queue: str
) -> None:
    env = fresh_time_env
    activities = DeliveryActivities({ChannelName.sms: None}, store, DEFAULTS)
    await _skip_to(env, 23)
    key = f"test:{uuid.uuid4().hex}"
    async with Worker(
        env.client, task_queue=task_queue, workflows=[SendMessage], activities=[activities.deliver]
    ):
        handle = await env.client.start_workflow(
            SendMessage.run,
            DeliverRequest(
                idempotency_key=key,
                workflow_id=key,
                channel=ChannelName.sms,
                to=PHONE,
                text="Sale",
                message_class=MessageClass.marketing,
            ),
            id=key,
            task_queue=task_queue,
        )
        held = "held_until_08:00_quiet_hours"
        assert await eventually(lambda: _status(handle, SendMessage.status, held))
        description = await handle.describe()
        assert description.typed_search_attributes.get(NUDGE_STATUS) == held
        [row] = store.list_outbox()
        assert (row.status, row.held_reason) == ("held", HoldReason.quiet_hours), "held, not sent"

        result = await handle.result()
        assert await handle.query(SendMessage.status) == "sandboxed"
    assert result.status == "sandboxed"
    assert result.finished_at is not None and result.finished_at.astimezone(UTC).hour == 8


async def _status(handle: WorkflowHandle[Any, Any], query: Any, expected: str) -> bool:
    return bool(await handle.query(query) == expected)


# -- the running list, on the real dev server (the test server cannot list) ----------------


async def test_the_running_list_shows_a_held_followup(
    dev_env: WorkflowEnvironment,
    fakes: Fakes,
    store: Store,
    sqlite_url: str,
    task_queue: str,
    tmp_path: Path,
) -> None:
    """Quiet hours set around the real clock, so this holds at any time of day."""
    settings = settings_for(fakes, sqlite_url, task_queue, write_script_config(tmp_path))
    end = quiet_now_on_the_dev_server(settings, dev_env, "reamaze")
    slug = _conversation(fakes)
    held = f"held_until_{end}_quiet_hours"
    async with nudge_worker(dev_env.client, settings, store):
        handle = await _start_followup(dev_env.client, slug, task_queue, timedelta(seconds=1))
        try:
            assert await eventually(lambda: _status(handle, HelpdeskFollowUp.status, held))
            user = {"Authorization": f"Bearer {store.create_token(Role.user)}"}
            with (
                serve(create_app(settings, store=store)) as server,
                httpx.Client(base_url=server.url, timeout=15) as client,
            ):

                def listed() -> bool:
                    running = client.get("/v1/followups/running", headers=user).json()
                    return any(
                        run["workflow_id"] == handle.id and run["status"] == held for run in running
                    )

                assert await eventually(listed), "the running list says until when and why"
        finally:
            await handle.cancel()
            await eventually(lambda: bool(store.list_followups(conversation=slug)))
