"""The send path (policy -> outbox -> channel) driven by a workflow on the time-skipping
server, with the real channel clients talking to fake providers over real sockets."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.delivery import DeliverRequest, DeliveryActivities
from activities.policy import Verdict
from integrations.channels import Channel, ChannelName, MessageClass, Template
from integrations.email_smtp import SmtpChannel
from integrations.twilio_channel import TwilioChannel
from integrations.whatsapp_cloud import WhatsAppCloudChannel
from links import read_unsubscribe_token, unsubscribe_url
from settings import PolicySettings, Settings, SmtpSettings, TwilioSettings, WhatsAppSettings
from starter.inbound import handle_inbound
from store.repo import Store
from tests.fakes.graph import FakeGraph
from tests.fakes.server import serve
from tests.fakes.smtp import FakeSmtp
from tests.fakes.twilio import FakeTwilio
from workflows.send_message import SendMessage, SendMessageResult

PHONE = "+15551230000"
KEY = b"test-secret-key"


@dataclass
class Rig:
    env: WorkflowEnvironment
    store: Store
    task_queue: str
    graph: FakeGraph
    twilio: FakeTwilio
    smtp: FakeSmtp

    async def send(self, channel: ChannelName, to: str, **fields: Any) -> SendMessageResult:
        key = f"test:{uuid.uuid4().hex}"
        request = DeliverRequest(
            idempotency_key=key, workflow_id=key, channel=channel, to=to, **fields
        )
        return await self.env.client.execute_workflow(
            SendMessage.run, request, id=key, task_queue=self.task_queue
        )

    async def inbound(self, text: str, phone: str = PHONE, channel: str = "whatsapp") -> None:
        await handle_inbound(
            self.store,
            channel,
            f"wamid.{uuid.uuid4().hex}",
            phone,
            text=text,
            received_at=datetime.now(UTC),
        )


def policy(**changes: Any) -> PolicySettings:
    # Quiet hours off unless a test turns them on: the tests run at any real time of day.
    return PolicySettings(**{"quiet_hours_start": "00:00", "quiet_hours_end": "00:00", **changes})


@pytest.fixture
def fakes() -> Iterator[tuple[FakeGraph, FakeTwilio, FakeSmtp, str, str]]:
    graph, twilio = FakeGraph(), FakeTwilio()
    with ExitStack() as stack:
        graph_server = stack.enter_context(serve(graph.app))
        twilio_server = stack.enter_context(serve(twilio.app))
        smtp = stack.enter_context(FakeSmtp())
        yield graph, twilio, smtp, graph_server.url, twilio_server.url


async def make_rig(
    env: WorkflowEnvironment,
    store: Store,
    task_queue: str,
    fakes: tuple[FakeGraph, FakeTwilio, FakeSmtp, str, str],
    rules: PolicySettings,
) -> AsyncIterator[Rig]:
    graph, twilio, smtp, graph_url, twilio_url = fakes
    channels: dict[ChannelName, Channel | None] = {
        ChannelName.whatsapp: WhatsAppCloudChannel(
            WhatsAppSettings(token=graph.token, phone_number_id=graph.phone_number_id, graph_url=graph_url)
        ),
        ChannelName.sms: TwilioChannel(
            TwilioSettings(
                account_sid=twilio.account_sid, auth_token=twilio.auth_token, sms_from="+15005550006",
                base_url=twilio_url,
            ),
            channel=ChannelName.sms,
        ),
        ChannelName.email: SmtpChannel(
            SmtpSettings(host="127.0.0.1", port=smtp.port, security="none", **{"from": "shop@shop.test"})
        ),
        ChannelName.push: None,  # sandboxed
    }  # fmt: skip
    settings = Settings(_env_file=None, public_url="http://shop.test")
    activities = DeliveryActivities(
        channels,
        store,
        rules,
        unsubscribe_url=lambda channel, address: unsubscribe_url(settings, KEY, channel, address),
    )
    async with Worker(
        env.client, task_queue=task_queue, workflows=[SendMessage], activities=[activities.deliver]
    ):
        yield Rig(env, store, task_queue, graph, twilio, smtp)
    for channel in channels.values():
        if channel is not None:
            await channel.aclose()


@pytest.fixture
async def rig(
    fresh_time_env: WorkflowEnvironment,
    store: Store,
    task_queue: str,
    fakes: tuple[FakeGraph, FakeTwilio, FakeSmtp, str, str],
) -> AsyncIterator[Rig]:
    async for built in make_rig(fresh_time_env, store, task_queue, fakes, policy()):
        yield built


async def test_stop_suppresses_then_start_allows(rig: Rig) -> None:
    await rig.inbound("hi")
    await rig.inbound("STOP")
    result = await rig.send(
        ChannelName.whatsapp, PHONE, text="Spring sale!", message_class=MessageClass.marketing
    )
    assert result.status == "suppressed" and "STOP" in result.reason
    assert rig.graph.sent == [], "nothing reached the provider"
    transactional = await rig.send(ChannelName.whatsapp, PHONE, text="Your order shipped")
    assert transactional.status == "suppressed", "STOP on WhatsApp stops everything there"
    await rig.inbound("start")
    result = await rig.send(ChannelName.whatsapp, PHONE, text="Welcome back")
    assert result.status == "sent"
    assert [m["text"]["body"] for m in rig.graph.sent] == ["Welcome back"]


async def test_twilio_21610_suppresses_and_is_not_retried(rig: Rig) -> None:
    rig.twilio.opted_out.add(PHONE)
    first = await rig.send(ChannelName.sms, PHONE, text="Reminder: tomorrow 10:00")
    assert first.status == "suppressed" and "21610" in first.reason
    assert rig.twilio.messages == []
    assert [s.reason for s in rig.store.list_suppressions(channel="sms")] != []
    rig.twilio.opted_out.clear()
    again = await rig.send(ChannelName.sms, PHONE, text="Reminder again")
    assert again.status == "suppressed", "the provider's opt-out is remembered"
    assert rig.twilio.messages == []


async def test_whatsapp_window_with_and_without_a_template(rig: Rig) -> None:
    other = "+15551239999"
    closed = await rig.send(ChannelName.whatsapp, other, text="Hello")
    assert closed.status == "outside_whatsapp_window"
    assert "no approved template" in closed.reason
    template = Template(name="order_update", language="en_US")
    templated = await rig.send(ChannelName.whatsapp, other, text="Hello", template=template)
    assert templated.status == "sent"
    assert rig.graph.sent[-1]["type"] == "template"
    assert rig.graph.sent[-1]["template"]["name"] == "order_update"
    await rig.inbound("hi there", phone=other)
    opened = await rig.send(ChannelName.whatsapp, other, text="Hello", template=template)
    assert opened.status == "sent" and rig.graph.sent[-1]["type"] == "text", (
        "free text inside the window"
    )


async def test_sandboxed_channel_records_and_sends_nothing(rig: Rig) -> None:
    result = await rig.send(ChannelName.push, "device-token-1", text="Hi", data={"order": "42"})
    assert result.status == "sandboxed"
    [row] = rig.store.list_outbox(channel="push")
    assert row.status == "sandboxed" and row.sent_at is not None


async def test_marketing_email_carries_one_click_unsubscribe(
    rig: Rig, fakes: tuple[FakeGraph, FakeTwilio, FakeSmtp, str, str]
) -> None:
    result = await rig.send(
        ChannelName.email, "Ann@Example.com", subject="New plants", text="Fresh stock!",
        message_class=MessageClass.marketing,
    )  # fmt: skip
    assert result.status == "sent"
    [mail] = rig.smtp.messages
    header = mail["List-Unsubscribe"]
    assert header.startswith("<http://shop.test/unsubscribe/") and header.endswith(">")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = header.strip("<>").rsplit("/", 1)[1]
    assert read_unsubscribe_token(KEY, token) == ("email", "ann@example.com")
    receipt = await rig.send(ChannelName.email, "ann@example.com", subject="Receipt", text="Thanks")
    assert receipt.status == "sent"
    assert rig.smtp.messages[-1]["List-Unsubscribe"] is None, (
        "transactional mail has no such header"
    )


async def test_an_idempotency_key_sends_once(rig: Rig) -> None:
    request = DeliverRequest(
        idempotency_key="once",
        workflow_id="once",
        channel=ChannelName.sms,
        to=PHONE,
        text="Only once",
    )
    for run in range(2):
        result = await rig.env.client.execute_workflow(
            SendMessage.run, request, id=f"once-{run}-{rig.task_queue}", task_queue=rig.task_queue
        )
        assert result.status == "sent"
    assert len(rig.twilio.messages) == 1


async def test_quiet_hours_hold_marketing_until_the_first_allowed_minute(
    fresh_time_env: WorkflowEnvironment,
    store: Store,
    task_queue: str,
    fakes: tuple[FakeGraph, FakeTwilio, FakeSmtp, str, str],
) -> None:
    now = datetime.now(UTC)
    start = (now - timedelta(hours=1)).strftime("%H:%M")
    end_at = (now + timedelta(hours=3)).replace(second=0, microsecond=0)
    rules = PolicySettings(
        quiet_hours_start=start, quiet_hours_end=end_at.strftime("%H:%M"), default_timezone="UTC"
    )
    async for rig in make_rig(fresh_time_env, store, task_queue, fakes, rules):
        await rig.inbound("hello")
        marketing = await rig.send(
            ChannelName.whatsapp, PHONE, text="Sale", message_class=MessageClass.marketing
        )
        assert marketing.status == "sent"
        assert marketing.finished_at is not None and marketing.finished_at >= end_at
        assert marketing.finished_at < end_at + timedelta(minutes=5), (
            "sent at the first allowed minute"
        )
        # Transactional messages are not held: the policy answers "send" at the same moment.
        deciding = DeliveryActivities({}, store, rules)
        during = end_at - timedelta(hours=1)
        contact = store.contact_for("whatsapp", PHONE)
        receipt = DeliverRequest(
            "r", "r", ChannelName.whatsapp, PHONE, text="Receipt", as_of=during
        )
        assert (await deciding.decide(receipt, contact)).verdict == Verdict.send
        sale = DeliverRequest(
            "s", "s", ChannelName.whatsapp, PHONE, text="Sale", as_of=during,
            message_class=MessageClass.marketing,
        )  # fmt: skip
        held = await deciding.decide(sale, contact)
        assert held.verdict == Verdict.wait and held.not_before == end_at


async def test_frequency_cap_across_workflows(
    fresh_time_env: WorkflowEnvironment,
    store: Store,
    task_queue: str,
    fakes: tuple[FakeGraph, FakeTwilio, FakeSmtp, str, str],
) -> None:
    rules = policy(frequency_cap=2, frequency_window=timedelta(hours=24))
    async for rig in make_rig(fresh_time_env, store, task_queue, fakes, rules):
        first = await rig.send(
            ChannelName.sms, PHONE, text="Offer 1", message_class=MessageClass.marketing
        )
        await rig.send(ChannelName.sms, PHONE, text="Offer 2", message_class=MessageClass.marketing)
        third = await rig.send(
            ChannelName.sms, PHONE, text="Offer 3", message_class=MessageClass.marketing
        )
        assert first.finished_at and third.finished_at
        assert third.finished_at - first.finished_at >= timedelta(hours=23, minutes=59), (
            "waited for the window"
        )
        assert [m["Body"] for m in rig.twilio.messages] == ["Offer 1", "Offer 2", "Offer 3"]


def test_unsubscribe_page_and_one_click(store: Store, sqlite_url: str) -> None:
    from api.app import create_app

    settings = Settings(_env_file=None, database_url=sqlite_url, secret_key="k")
    with (
        serve(create_app(settings, store=store)) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        url = unsubscribe_url(settings, b"k", "email", "ann@example.com").replace(
            "http://127.0.0.1:8000", ""
        )
        page = http.get(url)
        assert page.status_code == 200 and "ann@example.com" in page.text
        assert store.suppression_for("email", "ann@example.com", "marketing") is None, (
            "GET changes nothing"
        )
        done = http.post(url, content="List-Unsubscribe=One-Click")
        assert done.status_code == 200
        assert store.suppression_for("email", "ann@example.com", "marketing") is not None
        assert store.suppression_for("email", "ann@example.com", "transactional") is None
        assert http.get(url[:-3] + "xyz").status_code == 404
