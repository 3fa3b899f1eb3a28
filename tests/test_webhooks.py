"""The provider webhooks (Twilio and WhatsApp Cloud) over real HTTP against the served app.

Requests are built the way the providers build them: Twilio's form fields signed with
``X-Twilio-Signature`` over the exact public URL (by the fake's own signer, not the SDK), and
Meta's compact JSON signed with ``X-Hub-Signature-256`` over the raw bytes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import event, select
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.channels import ChannelName
from domain.delivery import DeliveryStatus
from domain.policy import OptOutSource
from domain.status import OutboxStatus
from integrations.channels import OutboundMessage
from service import create_app
from settings import Settings, TemporalSettings, TwilioSettings, WhatsAppSettings
from store.models import DeliveryEvent, InboundMessage
from store.repo import Store
from tests.fakes.graph import FakeGraph
from tests.fakes.server import RunningServer, free_port, serve
from tests.fakes.twilio import FakeTwilio
from tests.routing_lease import age_lease
from tests.waiting import wait_for
from worker import twilio_channel

APP_SECRET = "meta-app-secret-for-tests"
VERIFY_TOKEN = "meta-verify-token-for-tests"
OUR_NUMBER = "+15005550006"
CUSTOMER = "+15551230001"
WA_CUSTOMER = "15551239876"
"""As Meta reports a WhatsApp sender: digits, no ``+``."""
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
INBOUND = "/webhooks/twilio/inbound"
STATUS = "/webhooks/twilio/status"
WHATSAPP = "/webhooks/whatsapp"
OURS = "<signed over our public URL>"


def new_sid(prefix: str = "SM") -> str:
    return prefix + uuid.uuid4().hex


@dataclass
class Hooks:
    client: httpx.AsyncClient
    store: Store
    settings: Settings
    server: RunningServer
    graph: FakeGraph
    twilio: FakeTwilio
    fakes: ExitStack
    """Closes the fake Twilio server, which only tests that send start."""
    twilio_url: str = ""

    def inbound_form(self, sender: str, body: str, sid: str | None = None) -> dict[str, str]:
        """What Twilio posts for an incoming SMS (or WhatsApp, with a ``whatsapp:`` From)."""
        sid = sid or new_sid()
        whatsapp = sender.startswith("whatsapp:")
        form = {
            "ToCountry": "US",
            "ToState": "CA",
            "SmsMessageSid": sid,
            "NumMedia": "0",
            "ToCity": "",
            "FromZip": "",
            "SmsSid": sid,
            "FromState": "",
            "SmsStatus": "received",
            "FromCity": "",
            "Body": body,
            "FromCountry": "US",
            "To": f"whatsapp:{OUR_NUMBER}" if whatsapp else OUR_NUMBER,
            "ToZip": "",
            "NumSegments": "1",
            "MessageSid": sid,
            "AccountSid": self.twilio.account_sid,
            "From": sender,
            "ApiVersion": "2010-04-01",
        }
        if whatsapp:
            form |= {"ProfileName": "Sheena Nelson", "WaId": sender.removeprefix("whatsapp:+")}
        return form

    def twilio_signature(self, path: str, params: dict[str, str]) -> str:
        return self.twilio.sign(self.server.url + path, params)

    async def twilio_post(
        self, path: str, params: dict[str, str], *, signature: str | None = OURS
    ) -> httpx.Response:
        """POST the form with ``X-Twilio-Signature``: Twilio's, over our public URL, unless
        another ``signature`` is given (None: no header at all)."""
        if signature == OURS:
            signature = self.twilio_signature(path, params)
        headers = {} if signature is None else {"X-Twilio-Signature": signature}
        return await self.client.post(path, data=params, headers=headers)

    async def send_sms(self, to: str = CUSTOMER) -> str:
        """Send through the fake Twilio with the real client; the new ``SM…`` sid."""
        if not self.twilio_url:
            self.twilio_url = self.fakes.enter_context(serve(self.twilio.app)).url
        settings = TwilioSettings(
            account_sid=self.twilio.account_sid,
            auth_token=self.twilio.auth_token,
            sms_from=OUR_NUMBER,
            base_url=self.twilio_url,
        )
        async with twilio_channel(settings, ChannelName.sms) as channel:
            receipt = await channel.send(
                OutboundMessage(
                    channel=ChannelName.sms, to=to, idempotency_key=new_sid("k"), text="Hi!"
                )
            )
        return receipt.provider_message_id

    async def whatsapp_post(self, payload: dict[str, Any]) -> httpx.Response:
        raw, headers = self.graph.signed(payload, APP_SECRET)
        return await self.client.post(WHATSAPP, content=raw, headers=headers)


def outbox_row(
    store: Store,
    provider_message_id: str,
    *,
    channel: str = "sms",
    to: str = CUSTOMER,
    workflow_id: str | None = None,
) -> str:
    """An outbox row as the send path leaves it after the provider accepted the message."""
    key = f"test:{uuid.uuid4().hex}"
    store.claim_outbox(
        key,
        workflow_id=workflow_id or key,
        channel=channel,
        recipient=to,
        body="Your order has shipped",
        message_class="transactional",
    )
    store.mark_outbox(key, OutboxStatus.sent, provider_message_id=provider_message_id)
    return key


def outbox_status(store: Store, key: str) -> OutboxStatus:
    found = store.get_outbox(key)
    assert found is not None
    return found.status


def delivery_events(store: Store, provider_message_id: str) -> list[str]:
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(DeliveryEvent.status)
            .where(DeliveryEvent.provider_message_id == provider_message_id)
            .order_by(DeliveryEvent.id)
        )
        return [row[0] for row in rows]


def inbound_rows(store: Store) -> list[tuple[str, str, str, str | None, str]]:
    """(channel, address, kind, reply_id, body) of every stored inbound message."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(
                InboundMessage.channel,
                InboundMessage.address,
                InboundMessage.kind,
                InboundMessage.reply_id,
                InboundMessage.body,
            ).order_by(InboundMessage.id)
        )
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


@pytest.fixture
async def hooks(store: Store, sqlite_url: str) -> AsyncIterator[Hooks]:
    fake = FakeTwilio()
    settings = Settings(
        _env_file=None,
        database_url=sqlite_url,
        twilio=TwilioSettings(account_sid=fake.account_sid, auth_token=fake.auth_token),
        whatsapp=WhatsAppSettings(app_secret=APP_SECRET, verify_token=VERIFY_TOKEN),
        # Signals fail fast (connection refused), are logged and ignored.
        temporal=TemporalSettings(address=f"127.0.0.1:{free_port()}"),
    )
    with serve(create_app(settings, store=store)) as server, ExitStack() as fakes:
        settings.public_url = server.url  # Twilio signs the URL it calls: ours
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
            yield Hooks(client, store, settings, server, FakeGraph(), fake, fakes)


# -- Twilio inbound ------------------------------------------------------------------------


async def test_twilio_inbound_is_stored_once_and_answers_empty_twiml(hooks: Hooks) -> None:
    form = hooks.inbound_form(CUSTOMER, "Is my order on its way?")
    before = datetime.now(UTC)
    response = await hooks.twilio_post(INBOUND, form)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml")
    assert response.text == EMPTY_TWIML
    assert hooks.store.count_inbound() == 1
    last = hooks.store.last_inbound("sms", CUSTOMER)
    assert last is not None and before - timedelta(seconds=1) <= last <= datetime.now(UTC)
    assert inbound_rows(hooks.store) == [("sms", CUSTOMER, "text", None, "Is my order on its way?")]

    again = await hooks.twilio_post(INBOUND, form)  # Twilio retries the same MessageSid
    assert again.status_code == 200 and again.text == EMPTY_TWIML
    assert hooks.store.count_inbound() == 1, "a retried MessageSid is stored once"
    assert len(hooks.store.list_contacts(query=CUSTOMER)) == 1


async def test_twilio_inbound_without_a_signature_is_forbidden(hooks: Hooks) -> None:
    response = await hooks.twilio_post(INBOUND, hooks.inbound_form(CUSTOMER, "hi"), signature=None)
    assert response.status_code == 403
    assert "X-Twilio-Signature" in response.json()["detail"]
    assert hooks.store.count_inbound() == 0


@pytest.mark.parametrize(
    "url",
    [
        "https://nudge.example" + INBOUND,  # the URL of another deployment
        "{base}" + STATUS,  # our other webhook
        "{base}" + INBOUND + "?extra=1",  # a query string we were not called with
    ],
)
async def test_twilio_inbound_signed_for_another_url_is_forbidden(hooks: Hooks, url: str) -> None:
    form = hooks.inbound_form(CUSTOMER, "hi")
    signature = hooks.twilio.sign(url.format(base=hooks.server.url), form)
    response = await hooks.twilio_post(INBOUND, form, signature=signature)
    assert response.status_code == 403
    assert hooks.store.count_inbound() == 0


@pytest.mark.parametrize(
    "tamper",
    [
        {"Body": "STOP"},  # a changed value
        {"From": "+15559999999"},  # a changed sender
        {"Extra": "field"},  # an added field
    ],
)
async def test_twilio_inbound_with_a_tampered_param_is_forbidden(
    hooks: Hooks, tamper: dict[str, str]
) -> None:
    form = hooks.inbound_form(CUSTOMER, "hi")
    signature = hooks.twilio_signature(INBOUND, form)
    response = await hooks.twilio_post(INBOUND, form | tamper, signature=signature)
    assert response.status_code == 403
    assert hooks.store.count_inbound() == 0
    assert hooks.store.suppression_for("sms", CUSTOMER, "transactional") is None


async def test_twilio_inbound_with_an_empty_auth_token_verifies_nothing(hooks: Hooks) -> None:
    hooks.settings.twilio.auth_token = SecretStr("")
    form = hooks.inbound_form(CUSTOMER, "hi")
    forged = FakeTwilio(auth_token="").sign(hooks.server.url + INBOUND, form)
    response = await hooks.twilio_post(INBOUND, form, signature=forged)
    assert response.status_code == 403
    assert hooks.store.count_inbound() == 0


async def test_twilio_whatsapp_inbound_is_the_whatsapp_channel(hooks: Hooks) -> None:
    form = hooks.inbound_form(f"whatsapp:{CUSTOMER}", "Hello from WhatsApp")
    response = await hooks.twilio_post(INBOUND, form)
    assert response.status_code == 200 and response.text == EMPTY_TWIML
    assert hooks.store.last_inbound("whatsapp", CUSTOMER) is not None
    assert hooks.store.last_inbound("sms", CUSTOMER) is None
    assert inbound_rows(hooks.store) == [
        ("whatsapp", CUSTOMER, "text", None, "Hello from WhatsApp")
    ]
    [contact] = hooks.store.list_contacts(query=CUSTOMER)
    assert contact.name == "Sheena Nelson", "ProfileName names a new contact"


async def test_twilio_stop_and_start_over_sms(hooks: Hooks) -> None:
    async def say(text: str) -> None:
        response = await hooks.twilio_post(INBOUND, hooks.inbound_form(CUSTOMER, text))
        assert response.status_code == 200, response.text

    def suppressed() -> bool:
        return hooks.store.suppression_for("sms", CUSTOMER, "transactional") is not None

    await say("please stop")
    assert not suppressed(), "only the whole message is a keyword"
    await say("STOP")
    assert suppressed()
    [row] = hooks.store.list_suppressions(channel="sms", address=CUSTOMER)
    assert (row.scope, row.source) == ("all", "keyword")
    await say("start")
    assert not suppressed()
    await say("please stop")
    assert not suppressed()
    assert hooks.store.count_inbound() == 4


# -- Twilio statuses -----------------------------------------------------------------------


async def test_twilio_statuses_out_of_order_keep_the_furthest(hooks: Hooks) -> None:
    sid = await hooks.send_sms()
    key = outbox_row(hooks.store, sid)

    async def report(status: str) -> None:
        params = hooks.twilio.status_callback_params(sid, status)
        response = await hooks.twilio_post(STATUS, params)
        assert response.status_code == 204, response.text

    await report("sending")  # intermediate: adds nothing to "sent"
    assert outbox_status(hooks.store, key) == OutboxStatus.sent
    assert delivery_events(hooks.store, sid) == []
    await report("delivered")
    assert outbox_status(hooks.store, key) == OutboxStatus.delivered
    await report("sent")  # late
    assert outbox_status(hooks.store, key) == OutboxStatus.delivered, "sent after delivered"
    await report("read")
    assert outbox_status(hooks.store, key) == OutboxStatus.read
    before = hooks.store.get_outbox(key)
    await report("read")  # Twilio retries a callback
    assert hooks.store.get_outbox(key) == before, "the duplicate changed nothing"
    assert delivery_events(hooks.store, sid) == ["delivered", "sent", "read"]
    [row] = hooks.store.list_outbox(workflow_id=key)
    assert (row.status, row.provider_message_id, row.error) == (OutboxStatus.read, sid, None)


async def test_twilio_status_url_with_a_query_string_is_signed_with_it(hooks: Hooks) -> None:
    sid = await hooks.send_sms()
    key = outbox_row(hooks.store, sid)
    path = STATUS + "?outbox=" + key.replace(":", "%3A")
    response = await hooks.twilio_post(path, hooks.twilio.status_callback_params(sid, "delivered"))
    assert response.status_code == 204, response.text
    assert outbox_status(hooks.store, key) == OutboxStatus.delivered


async def test_twilio_undelivered_21610_suppresses_the_number(hooks: Hooks) -> None:
    sid = await hooks.send_sms()
    key = outbox_row(hooks.store, sid)
    params = hooks.twilio.status_callback_params(sid, "undelivered", error_code=21610)
    response = await hooks.twilio_post(STATUS, params)
    assert response.status_code == 204, response.text
    found = hooks.store.suppression_for("sms", CUSTOMER, "transactional")
    assert found is not None and found.source == "provider_block" and "21610" in found.reason
    row = hooks.store.get_outbox(key)
    assert row is not None and row.status == OutboxStatus.failed
    assert row.error == "provider error 21610"


async def test_twilio_21610_block_is_lifted_by_start_but_not_an_operators(hooks: Hooks) -> None:
    hooks.store.suppress(
        "sms", CUSTOMER, scope="marketing", reason="no offers, please",
        source=OptOutSource.operator,
    )  # fmt: skip
    sid = await hooks.send_sms()
    outbox_row(hooks.store, sid)
    params = hooks.twilio.status_callback_params(sid, "undelivered", error_code=21610)
    assert (await hooks.twilio_post(STATUS, params)).status_code == 204
    assert hooks.store.suppression_for("sms", CUSTOMER, "transactional") is not None

    response = await hooks.twilio_post(INBOUND, hooks.inbound_form(CUSTOMER, "START"))
    assert response.status_code == 200, response.text
    assert hooks.store.suppression_for("sms", CUSTOMER, "transactional") is None
    [kept] = hooks.store.list_suppressions(channel="sms", address=CUSTOMER)
    assert (kept.scope, kept.source) == ("marketing", "operator")


async def test_twilio_undelivered_for_another_reason_does_not_suppress(hooks: Hooks) -> None:
    sid = await hooks.send_sms()
    key = outbox_row(hooks.store, sid)
    params = hooks.twilio.status_callback_params(sid, "undelivered", error_code=30003)
    assert (await hooks.twilio_post(STATUS, params)).status_code == 204
    assert hooks.store.suppression_for("sms", CUSTOMER, "transactional") is None
    assert outbox_status(hooks.store, key) == OutboxStatus.failed


async def test_twilio_status_without_message_status_is_422(hooks: Hooks) -> None:
    sid = await hooks.send_sms()
    params = hooks.twilio.status_callback_params(sid, "delivered")
    del params["MessageStatus"]
    response = await hooks.twilio_post(STATUS, params)
    assert response.status_code == 422
    assert "MessageStatus" in response.json()["detail"]
    assert delivery_events(hooks.store, sid) == []


async def test_twilio_status_unsigned_is_forbidden(hooks: Hooks) -> None:
    sid = await hooks.send_sms()
    key = outbox_row(hooks.store, sid)
    params = hooks.twilio.status_callback_params(sid, "read")
    assert (await hooks.twilio_post(STATUS, params, signature=None)).status_code == 403
    assert outbox_status(hooks.store, key) == OutboxStatus.sent


class ConnectionLost(Exception):
    """Stands in for the database connection dropping as it acknowledges a COMMIT."""


async def test_twilio_inbound_retried_after_a_5xx_is_stored_once_and_routed_once(
    hooks: Hooks, dev_env: WorkflowEnvironment
) -> None:
    """Twilio retries an inbound message only when the webhook URL asks it to (the README's
    ``#rc=5&rp=5xx,ct,rt``). Here the first delivery is stored, but the connection drops as
    the COMMIT is acknowledged and the webhook answers 500; Twilio's retry finds the message
    stored and answers 200 without storing it again. The message is routed once, by the
    first retry (or sweep) after the failed attempt's lease has run out."""
    hooks.settings.temporal.address = dev_env.client.service_client.config.target_host
    form = hooks.inbound_form(f"whatsapp:{CUSTOMER}", "are you open on sunday?")
    armed = [True]

    def drop(_session: Any) -> None:
        if armed[0]:
            armed[0] = False
            raise ConnectionLost("server closed the connection unexpectedly")

    event.listen(hooks.store.sessions, "after_commit", drop)
    signed = {"X-Twilio-Signature": hooks.twilio_signature(INBOUND, form)}
    try:  # on a connection of its own: the server closes it after a 500
        async with httpx.AsyncClient(base_url=hooks.server.url, timeout=15) as once:
            first = await once.post(INBOUND, data=form, headers=signed)
    finally:
        event.remove(hooks.store.sessions, "after_commit", drop)
    assert first.status_code == 500
    assert hooks.store.count_inbound() == 1, "stored before the connection dropped"

    retried = await hooks.twilio_post(INBOUND, form)
    assert retried.status_code == 200 and retried.text == EMPTY_TWIML
    assert hooks.store.count_inbound() == 1, "a retried MessageSid is stored once"

    age_lease(hooks.store)  # the failed attempt never routed it; its lease runs out
    assert (await hooks.twilio_post(INBOUND, form)).status_code == 200

    def routing() -> tuple[datetime | None, int]:
        with hooks.store.engine.connect() as connection:
            row = connection.execute(
                select(InboundMessage.routed_at, InboundMessage.route_attempts)
            ).one()
            return row[0], row[1]

    await wait_for(lambda: routing()[0] is not None, failure="the message was never routed")
    assert (await hooks.twilio_post(INBOUND, form)).status_code == 200
    assert hooks.store.take_unrouted(max_age=timedelta(days=1)) == [], "nor will the sweep"
    assert routing()[1] == 2, "routed once after the failed attempt"
    assert hooks.store.count_inbound() == 1


# -- WhatsApp verification -----------------------------------------------------------------


async def test_whatsapp_verification_answers_the_bare_challenge(hooks: Hooks) -> None:
    params = {
        "hub.mode": "subscribe",
        "hub.verify_token": VERIFY_TOKEN,
        "hub.challenge": "1158201444",
    }
    response = await hooks.client.get(WHATSAPP, params=params)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "1158201444"


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1158201444"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.challenge": "1158201444"},
    ],
)
async def test_whatsapp_verification_with_a_wrong_token_is_forbidden(
    hooks: Hooks, params: dict[str, str]
) -> None:
    response = await hooks.client.get(WHATSAPP, params=params)
    assert response.status_code == 403
    assert "1158201444" not in response.text


async def test_whatsapp_verification_without_a_configured_token_is_forbidden(
    hooks: Hooks,
) -> None:
    hooks.settings.whatsapp.verify_token = SecretStr("")
    params = {"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "42"}
    assert (await hooks.client.get(WHATSAPP, params=params)).status_code == 403


# -- WhatsApp deliveries -------------------------------------------------------------------


async def test_whatsapp_batch_of_two_entries_is_all_handled(hooks: Hooks) -> None:
    graph = hooks.graph
    wamid = graph.new_wamid()
    key = outbox_row(hooks.store, wamid, channel="whatsapp", to="+" + WA_CUSTOMER)
    first = graph.inbound_text(WA_CUSTOMER, "hello")
    tap = graph.inbound_button_reply(WA_CUSTOMER, "confirm-yes", "Yes please")
    # Two messages in one entry's change, the status in a second entry.
    value = first["entry"][0]["changes"][0]["value"]
    value["messages"] += tap["entry"][0]["changes"][0]["value"]["messages"]
    payload = graph.batch(first, graph.status(wamid, "delivered", WA_CUSTOMER))
    assert len(payload["entry"]) == 2

    response = await hooks.whatsapp_post(payload)
    assert response.status_code == 200, response.text
    phone = "+" + WA_CUSTOMER
    assert inbound_rows(hooks.store) == [
        ("whatsapp", phone, "text", None, "hello"),
        ("whatsapp", phone, "interactive", "confirm-yes", "Yes please"),
    ]
    assert hooks.store.last_inbound("whatsapp", phone) is not None
    assert outbox_status(hooks.store, key) == OutboxStatus.delivered
    assert delivery_events(hooks.store, wamid) == ["delivered"]


async def test_whatsapp_tampered_body_is_forbidden(hooks: Hooks) -> None:
    raw, headers = hooks.graph.signed(hooks.graph.inbound_text(WA_CUSTOMER, "hello"), APP_SECRET)
    tampered = raw.replace(b'"body":"hello"', b'"body":"STOP"')
    assert tampered != raw
    response = await hooks.client.post(WHATSAPP, content=tampered, headers=headers)
    assert response.status_code == 403
    assert hooks.store.count_inbound() == 0
    assert hooks.store.suppression_for("whatsapp", "+" + WA_CUSTOMER, "transactional") is None


@pytest.mark.parametrize(
    "signature",
    [
        None,  # no header at all
        "",  # an empty one
        "sha1=0123456789abcdef0123456789abcdef01234567",  # the old SHA-1 header's format
        "signed-with-another-secret",
    ],
)
async def test_whatsapp_missing_or_wrong_signature_is_forbidden(
    hooks: Hooks, signature: str | None
) -> None:
    raw = hooks.graph.encode(hooks.graph.inbound_text(WA_CUSTOMER, "hello"))
    headers = {"Content-Type": "application/json"}
    if signature == "signed-with-another-secret":
        signature = hooks.graph.sign("another-app-secret", raw)
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    response = await hooks.client.post(WHATSAPP, content=raw, headers=headers)
    assert response.status_code == 403
    assert hooks.store.count_inbound() == 0


async def test_whatsapp_without_an_app_secret_verifies_nothing(hooks: Hooks) -> None:
    hooks.settings.whatsapp.app_secret = SecretStr("")
    raw = hooks.graph.encode(hooks.graph.inbound_text(WA_CUSTOMER, "hello"))
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": hooks.graph.sign("", raw)}
    assert (await hooks.client.post(WHATSAPP, content=raw, headers=headers)).status_code == 403
    assert hooks.store.count_inbound() == 0


async def test_whatsapp_same_wamid_twice_is_stored_once(hooks: Hooks) -> None:
    payload = hooks.graph.inbound_text(WA_CUSTOMER, "where is my parcel?")
    for _ in range(2):
        response = await hooks.whatsapp_post(payload)
        assert response.status_code == 200, response.text
    assert hooks.store.count_inbound() == 1
    # ... and twice within one delivery.
    twice = hooks.graph.batch(payload, payload)
    assert (await hooks.whatsapp_post(twice)).status_code == 200
    assert hooks.store.count_inbound() == 1


async def test_whatsapp_stop_suppresses_the_plus_number(hooks: Hooks) -> None:
    phone = "+" + WA_CUSTOMER
    response = await hooks.whatsapp_post(hooks.graph.inbound_text(WA_CUSTOMER, "Stop."))
    assert response.status_code == 200, response.text
    found = hooks.store.suppression_for("whatsapp", phone, "transactional")
    assert found is not None and (found.scope, found.source) == ("all", "keyword")
    assert hooks.store.suppression_for("whatsapp", WA_CUSTOMER, "transactional") is None
    assert hooks.store.suppression_for("sms", phone, "transactional") is None

    tap = hooks.graph.inbound_button_reply(WA_CUSTOMER, "start", "START")
    assert (await hooks.whatsapp_post(tap)).status_code == 200
    assert hooks.store.suppression_for("whatsapp", phone, "transactional") is not None, (
        "a button titled START is a reply, not a keyword"
    )
    assert (await hooks.whatsapp_post(hooks.graph.inbound_text(WA_CUSTOMER, "start"))).is_success
    assert hooks.store.suppression_for("whatsapp", phone, "transactional") is None


async def test_whatsapp_read_without_delivered_goes_to_read(hooks: Hooks) -> None:
    wamid = hooks.graph.new_wamid()
    key = outbox_row(hooks.store, wamid, channel="whatsapp", to="+" + WA_CUSTOMER)
    read = hooks.graph.status(wamid, "read", WA_CUSTOMER)
    assert (await hooks.whatsapp_post(read)).status_code == 200
    assert outbox_status(hooks.store, key) == OutboxStatus.read
    late = hooks.graph.status(wamid, "delivered", WA_CUSTOMER)
    assert (await hooks.whatsapp_post(late)).status_code == 200
    assert outbox_status(hooks.store, key) == OutboxStatus.read
    assert delivery_events(hooks.store, wamid) == ["read", "delivered"]


async def test_whatsapp_failed_status_records_the_error(hooks: Hooks) -> None:
    wamid = hooks.graph.new_wamid()
    key = outbox_row(hooks.store, wamid, channel="whatsapp", to="+" + WA_CUSTOMER)
    failed = hooks.graph.status(
        wamid, "failed", WA_CUSTOMER, error_code=131026, error_title="Message undeliverable"
    )
    assert (await hooks.whatsapp_post(failed)).status_code == 200
    row = hooks.store.get_outbox(key)
    assert row is not None and row.status == OutboxStatus.failed
    assert row.error == "provider error 131026"


def _bad_timestamp(graph: FakeGraph) -> dict[str, Any]:
    payload = graph.status(graph.new_wamid(), "read", WA_CUSTOMER)
    payload["entry"][0]["changes"][0]["value"]["statuses"][0]["timestamp"] = "yesterday"
    return payload


def _no_sender(graph: FakeGraph) -> dict[str, Any]:
    payload = graph.inbound_text(WA_CUSTOMER, "hello")
    del payload["entry"][0]["changes"][0]["value"]["messages"][0]["from"]
    return payload


def _text_without_text(graph: FakeGraph) -> dict[str, Any]:
    payload = graph.inbound_text(WA_CUSTOMER, "hello")
    del payload["entry"][0]["changes"][0]["value"]["messages"][0]["text"]
    return payload


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda g: b"this is not JSON", "body:"),
        (lambda g: g.encode({"object": "page", "entry": []}), "object is 'page'"),
        (lambda g: g.encode({"entry": []}), "object"),
        (lambda g: g.encode([1, 2]), "expected a JSON object"),
        (
            lambda g: g.encode(_bad_timestamp(g)),
            "entry[0].changes[0].value.statuses[0].timestamp",
        ),
        (lambda g: g.encode(_no_sender(g)), "entry[0].changes[0].value.messages[0].from"),
        (
            lambda g: g.encode(_text_without_text(g)),
            "entry[0].changes[0].value.messages[0]: type text without text",
        ),
    ],
    ids=["not-json", "wrong-object", "no-object", "a-list", "timestamp", "no-from", "no-text"],
)
async def test_whatsapp_malformed_but_signed_is_400_naming_the_problem(
    hooks: Hooks, build: Any, named: str
) -> None:
    raw: bytes = build(hooks.graph)
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": hooks.graph.sign(APP_SECRET, raw),
    }
    response = await hooks.client.post(WHATSAPP, content=raw, headers=headers)
    assert response.status_code == 400, response.text
    assert named in response.json()["detail"]
    assert hooks.store.count_inbound() == 0


# -- statuses reach the workflow that sent the message -------------------------------------


@workflow.defn(sandboxed=False)
class AwaitDeliveryStatus:
    """Stands in for a sending workflow: waits for the first ``delivery_status`` signal."""

    def __init__(self) -> None:
        self._updates: list[DeliveryStatus] = []

    @workflow.signal
    def delivery_status(self, update: DeliveryStatus) -> None:
        self._updates.append(update)

    @workflow.run
    async def run(self) -> DeliveryStatus:
        await workflow.wait_condition(lambda: bool(self._updates))
        return self._updates[0]


@pytest.mark.parametrize("provider", ["twilio", "whatsapp"])
async def test_a_status_reaches_the_sending_workflow_as_a_signal(
    hooks: Hooks, dev_env: WorkflowEnvironment, task_queue: str, provider: str
) -> None:
    hooks.settings.temporal.address = dev_env.client.service_client.config.target_host
    workflow_id = f"test-await-status-{uuid.uuid4().hex}"
    async with Worker(dev_env.client, task_queue=task_queue, workflows=[AwaitDeliveryStatus]):
        handle = await dev_env.client.start_workflow(
            AwaitDeliveryStatus.run, id=workflow_id, task_queue=task_queue
        )
        if provider == "twilio":
            sid = await hooks.send_sms()
            key = outbox_row(hooks.store, sid, workflow_id=workflow_id)
            params = hooks.twilio.status_callback_params(sid, "delivered")
            assert (await hooks.twilio_post(STATUS, params)).status_code == 204
            expected = DeliveryStatus(key, "delivered")
        else:
            wamid = hooks.graph.new_wamid()
            key = outbox_row(
                hooks.store,
                wamid,
                channel="whatsapp",
                to="+" + WA_CUSTOMER,
                workflow_id=workflow_id,
            )
            read = hooks.graph.status(wamid, "read", WA_CUSTOMER)
            assert (await hooks.whatsapp_post(read)).status_code == 200
            expected = DeliveryStatus(key, "read")
        result = await asyncio.wait_for(handle.result(), timeout=15)
    assert result == expected


async def test_concurrent_first_messages_from_a_new_number_are_all_handled(
    hooks: Hooks,
) -> None:
    """BUG (store/delivery.py, _channel_link via record_inbound): the first messages from a
    new number, arriving together, each try to create the contact; the loser's INSERT violates
    uq_contacts_source_external and the IntegrityError escapes as a 500. Twilio does not retry
    an inbound webhook, so a STOP sent right after a first "hi" can be lost. Expected: every
    request answers 200 and every STOP suppresses."""
    numbers = [f"+1555{uuid.uuid4().int % 10**7:07d}" for _ in range(5)]
    forms = [hooks.inbound_form(number, text) for number in numbers for text in ("hi", "STOP", "?")]
    responses = await asyncio.gather(
        *(hooks.twilio_post(INBOUND, form) for form in forms), return_exceptions=True
    )
    codes = [r.status_code if isinstance(r, httpx.Response) else repr(r) for r in responses]
    assert codes == [200] * len(forms), f"answers in order (hi, STOP, ?) per number: {codes}"
    assert hooks.store.count_inbound() == len(forms)
    unsuppressed = [
        n for n in numbers if hooks.store.suppression_for("sms", n, "transactional") is None
    ]
    assert unsuppressed == []
