"""The send path (policy -> outbox -> channel) driven by a workflow on the time-skipping
server, with the real channel clients talking to fake providers over real sockets."""

from __future__ import annotations

import asyncio
import html
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from temporalio import workflow
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.delivery import DeliveryActivities
from domain.channels import ChannelName, MessageClass, Template
from domain.delivery import DeliverRequest, DeliveryOutcome, DeliveryStatus
from domain.policy import Verdict
from domain.status import OutboxStatus
from integrations.channels import Channel
from integrations.twilio_channel import TwilioChannel
from links import read_unsubscribe_token, unsubscribe_token, unsubscribe_url
from settings import PolicySettings, Settings, SmtpSettings, TwilioSettings, WhatsAppSettings
from starter.inbound import handle_inbound
from store.repo import Store
from tests.fakes.graph import FakeGraph
from tests.fakes.server import serve
from tests.fakes.smtp import FakeSmtp
from tests.fakes.twilio import FakeTwilio
from tests.waiting import wait_for
from worker import smtp_channel, twilio_channel, whatsapp_channel
from workflows.delivery import send
from workflows.search_attributes import NUDGE_STATUS
from workflows.send_message import STATUS_WAIT, SendMessage, SendMessageResult

PHONE = "+15551230000"
KEY = b"test-secret-key"
ROUTE_KEY = "route-test-secret-key-0123456789abcdef"


@dataclass
class Rig:
    env: WorkflowEnvironment
    store: Store
    task_queue: str
    graph: FakeGraph
    twilio: FakeTwilio
    smtp: FakeSmtp

    async def send(self, channel: ChannelName, to: str, **fields: Any) -> SendMessageResult:
        return await (await self.start(channel, to, **fields)).result()

    async def start(
        self, channel: ChannelName, to: str, **fields: Any
    ) -> WorkflowHandle[Any, SendMessageResult]:
        key = f"test:{uuid.uuid4().hex}"
        request = DeliverRequest(
            idempotency_key=key, workflow_id=key, channel=channel, to=to, **fields
        )
        return await self.env.client.start_workflow(
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


@dataclass
class LocalSent:
    outcome: DeliveryOutcome
    at: datetime


@workflow.defn(sandboxed=False)
class LocalSend:
    """The send path as a local activity, as replies a customer is waiting for use it."""

    @workflow.run
    async def run(self, request: DeliverRequest) -> LocalSent:
        outcome = await send(request, local=True)
        return LocalSent(outcome, workflow.now())


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
        ChannelName.whatsapp: whatsapp_channel(
            WhatsAppSettings(token=graph.token, phone_number_id=graph.phone_number_id, graph_url=graph_url)
        ),
        ChannelName.sms: twilio_channel(
            TwilioSettings(
                account_sid=twilio.account_sid, auth_token=twilio.auth_token, sms_from="+15005550006",
                base_url=twilio_url,
            ),
            channel=ChannelName.sms,
        ),
        ChannelName.email: smtp_channel(
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
        env.client,
        task_queue=task_queue,
        workflows=[SendMessage, LocalSend],
        activities=[activities.deliver],
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
    assert "example.com" not in header.lower(), "the link carries no readable address"
    plain = mail.get_body(preferencelist=("plain",))
    assert plain is not None and header.strip("<>") in plain.get_content(), (
        "the same link is visible in the message"
    )
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


async def test_a_local_send_waits_out_quiet_hours_by_the_workflow_clock(
    fresh_time_env: WorkflowEnvironment,
    store: Store,
    task_queue: str,
    fakes: tuple[FakeGraph, FakeTwilio, FakeSmtp, str, str],
) -> None:
    """A local activity's info carries the worker's clock, not the server's: on the
    time-skipping server the worker's clock lags, and the policy must go by the later
    (the workflow's), or the message would wait for quiet hours that are over."""
    now = datetime.now(UTC)
    end_at = (now + timedelta(hours=3)).replace(second=0, microsecond=0)
    rules = policy(
        quiet_hours_start=(now - timedelta(hours=1)).strftime("%H:%M"),
        quiet_hours_end=end_at.strftime("%H:%M"),
        default_timezone="UTC",
    )
    async for rig in make_rig(fresh_time_env, store, task_queue, fakes, rules):
        key = f"local:{uuid.uuid4().hex}"
        request = DeliverRequest(
            key, key, ChannelName.sms, PHONE, text="Sale", message_class=MessageClass.marketing
        )
        sent = await rig.env.client.execute_workflow(
            LocalSend.run, request, id=key, task_queue=task_queue
        )
        assert sent.outcome.status == "sent"
        assert end_at <= sent.at < end_at + timedelta(minutes=5)
        assert [m["Body"] for m in rig.twilio.messages] == ["Sale"]


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


# -- a retried send and the policy's clock ---------------------------------------------------


async def test_a_marketing_retry_into_quiet_hours_waits_for_their_end(
    fresh_time_env: WorkflowEnvironment,
    store: Store,
    task_queue: str,
    fakes: tuple[FakeGraph, FakeTwilio, FakeSmtp, str, str],
) -> None:
    """The provider is down just before quiet hours begin and asks for ten minutes: the retry
    runs in quiet hours, so it must hold the message rather than judge by the clock the
    workflow asked at."""
    now = datetime.now(UTC)
    quiet_from = (now + timedelta(minutes=2)).replace(second=0, microsecond=0)
    quiet_to = quiet_from + timedelta(hours=3)
    rules = policy(
        quiet_hours_start=quiet_from.strftime("%H:%M"),
        quiet_hours_end=quiet_to.strftime("%H:%M"),
        default_timezone="UTC",
    )
    async for rig in make_rig(fresh_time_env, store, task_queue, fakes, rules):
        rig.twilio.fail_next(503, retry_after="600")
        result = await rig.send(
            ChannelName.sms, PHONE, text="Sale", message_class=MessageClass.marketing
        )
        assert result.status == "sent"
        assert result.finished_at is not None and result.finished_at >= quiet_to, (
            "not sent during quiet hours"
        )
        assert result.finished_at < quiet_to + timedelta(minutes=5)
        assert [m["Body"] for m in rig.twilio.messages] == ["Sale"]
        [row] = store.list_outbox()
        assert row.attempts == 2, "one refused call, one send after quiet hours"


# -- concurrent attempts and sends -----------------------------------------------------------


class ClaimTogether(Store):
    """The real store, with every attempt held after its claim until all have claimed: the
    moment where two attempts of one send used to both go on to send."""

    def __init__(self, store: Store, attempts: int) -> None:
        super().__init__(store.engine)
        self.barrier = threading.Barrier(attempts, timeout=15)

    def claim_outbox(self, key: str, **fields: Any) -> Any:
        row = super().claim_outbox(key, **fields)
        self.barrier.wait()
        return row


def twilio_sms(fakes: tuple[FakeGraph, FakeTwilio, FakeSmtp, str, str]) -> TwilioChannel:
    twilio, url = fakes[1], fakes[4]
    settings = TwilioSettings(
        account_sid=twilio.account_sid,
        auth_token=twilio.auth_token,
        sms_from="+15005550006",
        base_url=url,
    )
    return twilio_channel(settings, channel=ChannelName.sms)


async def attempt(activities: DeliveryActivities, request: DeliverRequest) -> DeliveryOutcome:
    """One activity attempt, as the worker runs it (with an activity context)."""
    return await ActivityEnvironment().run(activities.deliver, request)


@pytest.mark.parametrize("channel", [ChannelName.sms, ChannelName.push])
async def test_two_live_attempts_of_one_send_send_once(
    store: Store, fakes: tuple[FakeGraph, FakeTwilio, FakeSmtp, str, str], channel: ChannelName
) -> None:
    """Temporal starts a second attempt when the first looks dead, and the first may be
    alive: only the attempt that takes the row from pending may call the provider."""
    sms = twilio_sms(fakes)
    channels: dict[ChannelName, Channel | None] = {ChannelName.sms: sms, ChannelName.push: None}
    activities = DeliveryActivities(channels, ClaimTogether(store, 2), policy())
    request = DeliverRequest("race", "race", channel, PHONE, text="Your order shipped")
    try:
        outcomes = await asyncio.gather(
            attempt(activities, request), attempt(activities, request), return_exceptions=True
        )
        # The loser, if it came while the winner was sending, steps back to be retried;
        # its retry finds the winner's answer.
        later = await attempt(activities, request)
    finally:
        await sms.aclose()
    row = store.get_outbox("race")
    assert row is not None
    if channel == ChannelName.sms:
        assert len(fakes[1].messages) == 1, "one SMS"
        assert row.status == OutboxStatus.sent and row.attempts == 1
        answers = [o.status if isinstance(o, DeliveryOutcome) else o for o in outcomes]
        assert "sent" in answers, answers
        for other in answers:
            assert other == "sent" or (
                isinstance(other, ApplicationError) and other.type == "RetryLater"
            ), answers
        assert later.status == "sent"
    else:
        assert row.status == OutboxStatus.sandboxed
        assert [getattr(o, "status", o) for o in outcomes] == ["sandboxed", "sandboxed"]


async def test_a_cancel_mid_send_waits_until_the_answer_is_recorded(
    store: Store, fakes: tuple[FakeGraph, FakeTwilio, FakeSmtp, str, str]
) -> None:
    """Temporal cancels an attempt whose heartbeats came late (a busy worker). Honoured mid
    send, the cancel would leave the row ``sending`` - sent, but recorded as if it might not
    have been - and the customer's conversation would wait for an answer it never gets."""
    twilio = fakes[1]
    sms = twilio_sms(fakes)
    activities = DeliveryActivities({ChannelName.sms: sms}, store, policy())
    env = ActivityEnvironment()
    twilio.hold.hold_next(1.0)
    request = DeliverRequest("cancelled", "wf", ChannelName.sms, PHONE, text="Shipped")
    try:
        running = asyncio.ensure_future(env.run(activities.deliver, request))
        assert await asyncio.to_thread(twilio.hold.accepted.wait, 10)
        env.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        retried = await attempt(activities, request)
    finally:
        await sms.aclose()
    row = store.get_outbox("cancelled")
    assert row is not None and row.status == OutboxStatus.sent and row.provider_message_id
    assert (retried.status, retried.provider_message_id) == ("sent", row.provider_message_id)
    assert len(twilio.messages) == 1


async def test_a_send_in_flight_is_waited_for_then_reported_unknown(
    store: Store, fakes: tuple[FakeGraph, FakeTwilio, FakeSmtp, str, str]
) -> None:
    """A second attempt that finds the row ``sending`` neither sends nor gives up at once:
    the first may be alive (a worker too busy to heartbeat); only past the grace is the send
    reported unknown."""
    sms = twilio_sms(fakes)
    patient = DeliveryActivities({ChannelName.sms: sms}, store, policy())
    impatient = DeliveryActivities(
        {ChannelName.sms: sms}, store, policy(), in_flight_grace=timedelta(0)
    )
    try:
        for key in ("slow", "dead"):
            store.claim_outbox(
                key, workflow_id="wf", channel="sms", recipient=PHONE, body="Shipped",
                message_class="transactional",
            )  # fmt: skip
            assert store.take_outbox(key, OutboxStatus.sending) is not None  # "attempt 1"
        with pytest.raises(ApplicationError) as stepped_back:
            await attempt(patient, DeliverRequest("slow", "wf", ChannelName.sms, PHONE, "Shipped"))
        assert stepped_back.value.type == "RetryLater" and not stepped_back.value.non_retryable
        store.mark_outbox("slow", OutboxStatus.sent, provider_message_id="SM-first")
        retried = await attempt(
            patient, DeliverRequest("slow", "wf", ChannelName.sms, PHONE, "Shipped")
        )
        assert (retried.status, retried.provider_message_id) == ("sent", "SM-first")

        gone = await attempt(
            impatient, DeliverRequest("dead", "wf", ChannelName.sms, PHONE, "Shipped")
        )
        assert gone.status == "unknown"
    finally:
        await sms.aclose()
    assert fakes[1].messages == [], "neither attempt sent a second message"
    dead = store.get_outbox("dead")
    assert dead is not None and dead.status == OutboxStatus.unknown


async def test_concurrent_marketing_sends_to_one_contact_stay_under_the_cap(
    store: Store, fakes: tuple[FakeGraph, FakeTwilio, FakeSmtp, str, str]
) -> None:
    sms = twilio_sms(fakes)
    rules = policy(frequency_cap=2, frequency_window=timedelta(hours=24))
    activities = DeliveryActivities({ChannelName.sms: sms}, store, rules)
    contact = store.contact_for("sms", PHONE)
    requests = [
        DeliverRequest(
            f"offer-{n}", f"offer-{n}", ChannelName.sms, PHONE, text=f"Offer {n}",
            message_class=MessageClass.marketing, contact_id=contact,
        )
        for n in range(5)
    ]  # fmt: skip
    before = datetime.now(UTC)
    try:
        outcomes = await asyncio.gather(*(attempt(activities, r) for r in requests))
    finally:
        await sms.aclose()
    assert sorted(o.status for o in outcomes) == ["sent", "sent", "wait", "wait", "wait"]
    assert len(fakes[1].messages) == 2, "no more than the cap went out"
    for held in (o for o in outcomes if o.status == "wait"):
        assert held.reason == "frequency cap"
        assert held.not_before is not None and held.not_before > before + timedelta(hours=23)
    assert sorted(row.status for row in store.list_outbox()) == [
        "held", "held", "held", "sent", "sent",
    ], "a held message has a held row, which takes no place under the cap"  # fmt: skip


async def test_deliver_heartbeats_while_the_database_is_slow(store: Store, sqlite_url: str) -> None:
    """Nothing used to heartbeat before the provider call: a claim waiting on a busy database
    past the 10 s heartbeat timeout made Temporal start a second, concurrent attempt."""
    activities = DeliveryActivities({ChannelName.push: None}, store, policy())
    request = DeliverRequest("slow-db", "slow-db", ChannelName.push, "device-1", text="Hi")
    env = ActivityEnvironment()
    beats: list[float] = []
    env.on_heartbeat = lambda *details: beats.append(time.monotonic())
    locker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another writer holds the database
    started = time.monotonic()
    sending = asyncio.ensure_future(env.run(activities.deliver, request))
    await asyncio.sleep(3.5)
    released = time.monotonic()
    locker.execute("COMMIT")
    locker.close()
    assert (await sending).status == "sandboxed"
    assert [beat for beat in beats if started + 1 < beat < released], (
        "heartbeats while the database kept the activity waiting"
    )


# -- delivery statuses reach SendMessage -----------------------------------------------------


async def wait_until_sent(rig: Rig, key: str) -> None:
    """Until the outbox row of ``key`` is marked sent (the provider took the message)."""

    def sent() -> bool:
        row = rig.store.get_outbox(key)
        return row is not None and row.status == OutboxStatus.sent

    await wait_for(sent, within=15, failure=f"{key} was never sent")


async def test_send_message_ends_with_the_delivered_status_it_is_signalled(rig: Rig) -> None:
    handle = await rig.start(ChannelName.sms, PHONE, text="Your order shipped")
    await wait_until_sent(rig, handle.id)
    await handle.signal(SendMessage.delivery_status, DeliveryStatus(handle.id, "sent"))
    await handle.signal(SendMessage.delivery_status, DeliveryStatus(handle.id, "delivered"))
    result = await handle.result()
    assert (result.status, result.statuses) == ("delivered", ["sent", "delivered"])
    described = await handle.describe()
    assert described.typed_search_attributes.get(NUDGE_STATUS) == "delivered"
    assert described.close_time is not None
    assert described.close_time - described.start_time < STATUS_WAIT, "ended on the status"


async def test_send_message_without_a_status_ends_sent_after_the_wait(rig: Rig) -> None:
    handle = await rig.start(ChannelName.sms, PHONE, text="Your order shipped")
    result = await handle.result()
    assert (result.status, result.statuses) == ("sent", [])
    described = await handle.describe()
    assert described.typed_search_attributes.get(NUDGE_STATUS) == "sent"
    assert described.close_time is not None
    assert described.close_time - described.start_time >= STATUS_WAIT
    sandboxed = await rig.start(ChannelName.push, "device-token-2", text="Hi")
    assert (await sandboxed.result()).status == "sandboxed"
    run = await sandboxed.describe()
    assert run.close_time is not None and run.close_time - run.start_time < STATUS_WAIT, (
        "nothing reports on a sandboxed message: no wait"
    )


def test_unsubscribe_page_and_one_click(store: Store, sqlite_url: str) -> None:
    from service import create_app

    settings = Settings(_env_file=None, database_url=sqlite_url, secret_key=ROUTE_KEY)
    with (
        serve(create_app(settings, store=store)) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        url = unsubscribe_url(settings, ROUTE_KEY.encode(), "email", "ann@example.com").replace(
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
        assert http.get(url[:-3] + ("xyz" if not url.endswith("xyz") else "abc")).status_code == 404


def test_unsubscribe_page_confirms_with_a_plain_form_post(store: Store, sqlite_url: str) -> None:
    """A person who follows the link gets a page whose button posts an ordinary HTML form
    (not RFC 8058's one-click body); submitting it as a browser does opts them out."""
    from service import create_app

    settings = Settings(_env_file=None, database_url=sqlite_url, secret_key=ROUTE_KEY)
    with (
        serve(create_app(settings, store=store)) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        path = unsubscribe_url(settings, ROUTE_KEY.encode(), "email", "bob@example.com").replace(
            settings.public_url.rstrip("/"), ""
        )
        page = http.get(path)
        assert page.status_code == 200 and "bob@example.com" in page.text
        forms = re.findall(r'<form method="post" action="([^"]*)">(.*?)</form>', page.text, re.S)
        [(action, inside)] = forms
        assert '<button type="submit">' in inside
        target = urljoin(str(page.url), html.unescape(action))
        assert target == str(page.url), "the form posts back to the link itself"
        assert store.suppression_for("email", "bob@example.com", "marketing") is None

        submitted = http.post(target, data={})  # what a browser sends: a form, no body fields
        assert submitted.status_code == 200 and "Unsubscribed" in submitted.text
        [row] = store.list_suppressions(channel="email", address="bob@example.com")
        assert (row.scope, row.source, row.reason) == (
            "marketing",
            "unsubscribe_link",
            "unsubscribe link",
        )

        token = path.rsplit("/", 1)[1]
        middle = len(token) // 2
        flipped = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
        other = unsubscribe_token(b"another key of at least 32 chars!", "email", "eve@example.com")
        for tampered in (flipped, token[:-2], other, "garbage"):
            for method in ("GET", "POST"):
                answer = http.request(method, f"/unsubscribe/{tampered}", data={})
                assert 400 <= answer.status_code < 500, (method, tampered, answer.status_code)
        assert store.suppression_for("email", "eve@example.com", "marketing") is None
