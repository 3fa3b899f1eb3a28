"""The Twilio channel against the fake Twilio, over real HTTP on 127.0.0.1, and the webhook
signature check against published vectors and an independent implementation."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from domain.channels import ChannelName, Template
from integrations.channels import OutboundMessage, OutsideWindow, RecipientOptedOut
from integrations.errors import NotFound, Rejected, RetryLater
from integrations.twilio_channel import TwilioChannel, verify_signature
from settings import TwilioSettings
from tests.fakes.server import RunningServer, serve
from tests.fakes.twilio import FakeTwilio, compute_signature
from worker import twilio_channel

SMS_FROM = "+15005550006"
WHATSAPP_FROM = "+14155238886"
CUSTOMER = "+15558675310"
SERVICE_SID = "MG" + "0123456789abcdef" * 2
CONTENT_SID = "HX" + "fedcba9876543210" * 2
MESSAGE_SID = re.compile(r"SM[0-9a-f]{32}")


@pytest.fixture
def fake() -> FakeTwilio:
    return FakeTwilio()


@pytest.fixture
def server(fake: FakeTwilio) -> Iterator[RunningServer]:
    with serve(fake.app) as running:
        yield running


def settings_for(fake: FakeTwilio, server: RunningServer, **changes: Any) -> TwilioSettings:
    values: dict[str, Any] = {
        "account_sid": fake.account_sid,
        "auth_token": fake.auth_token,
        "sms_from": SMS_FROM,
        "whatsapp_from": WHATSAPP_FROM,
        "base_url": server.url,
    }
    return TwilioSettings(**(values | changes))


@pytest.fixture
async def sms(fake: FakeTwilio, server: RunningServer) -> AsyncIterator[TwilioChannel]:
    async with twilio_channel(settings_for(fake, server), channel=ChannelName.sms) as channel:
        yield channel


def sms_message(text: str = "Your order has shipped.", **fields: Any) -> OutboundMessage:
    return OutboundMessage(
        channel=ChannelName.sms, to=CUSTOMER, idempotency_key="wf-1/step-1", text=text, **fields
    )


def whatsapp_message(**fields: Any) -> OutboundMessage:
    return OutboundMessage(
        channel=ChannelName.whatsapp_twilio, to=CUSTOMER, idempotency_key="wf-1/step-1", **fields
    )


# -- sending -------------------------------------------------------------------------------


async def test_sms_posts_exactly_the_documented_form(fake: FakeTwilio, sms: TwilioChannel) -> None:
    receipt = await sms.send(sms_message("Hi, your plant is on its way."))
    assert fake.messages == [
        {"To": CUSTOMER, "From": SMS_FROM, "Body": "Hi, your plant is on its way."}
    ]
    assert MESSAGE_SID.fullmatch(receipt.provider_message_id)
    assert receipt.status == "queued"
    assert sms.name == ChannelName.sms


async def test_whatsapp_prefixes_both_ends(fake: FakeTwilio, server: RunningServer) -> None:
    settings = settings_for(fake, server)
    async with twilio_channel(settings, channel=ChannelName.whatsapp_twilio) as channel:
        assert channel.name == ChannelName.whatsapp_twilio
        await channel.send(whatsapp_message(text="Hello!"))
    assert fake.messages == [
        {"To": f"whatsapp:{CUSTOMER}", "From": f"whatsapp:{WHATSAPP_FROM}", "Body": "Hello!"}
    ]


async def test_whatsapp_prefix_is_never_doubled(fake: FakeTwilio, server: RunningServer) -> None:
    settings = settings_for(fake, server, whatsapp_from=f"whatsapp:{WHATSAPP_FROM}")
    async with twilio_channel(settings, channel=ChannelName.whatsapp_twilio) as channel:
        message = OutboundMessage(
            channel=ChannelName.whatsapp_twilio,
            to=f"whatsapp:{CUSTOMER}",
            idempotency_key="k",
            text="Hello!",
        )
        await channel.send(message)
    assert fake.messages[0]["To"] == f"whatsapp:{CUSTOMER}"
    assert fake.messages[0]["From"] == f"whatsapp:{WHATSAPP_FROM}"


async def test_a_messaging_service_replaces_from(fake: FakeTwilio, server: RunningServer) -> None:
    settings = settings_for(fake, server, messaging_service_sid=SERVICE_SID)
    async with twilio_channel(settings, channel=ChannelName.sms) as channel:
        receipt = await channel.send(sms_message("Hi"))
    assert fake.messages == [{"To": CUSTOMER, "MessagingServiceSid": SERVICE_SID, "Body": "Hi"}]
    assert receipt.status == "accepted", "Twilio's first status through a Messaging Service"


async def test_whatsapp_through_a_messaging_service_still_prefixes_to(
    fake: FakeTwilio, server: RunningServer
) -> None:
    settings = settings_for(fake, server, messaging_service_sid=SERVICE_SID)
    async with twilio_channel(settings, channel=ChannelName.whatsapp_twilio) as channel:
        await channel.send(whatsapp_message(text="Hello!"))
    assert fake.messages == [
        {"To": f"whatsapp:{CUSTOMER}", "MessagingServiceSid": SERVICE_SID, "Body": "Hello!"}
    ]


async def test_a_template_goes_as_content_sid_and_variables(
    fake: FakeTwilio, server: RunningServer
) -> None:
    variables = {"1": "Ana", "2": "Promoção: 20% off"}
    template = Template(content_sid=CONTENT_SID, variables=variables)
    async with twilio_channel(
        settings_for(fake, server), channel=ChannelName.whatsapp_twilio
    ) as channel:
        await channel.send(
            whatsapp_message(text="ignored when a template is set", template=template)
        )
    (form,) = fake.messages
    assert form.keys() == {"To", "From", "ContentSid", "ContentVariables"}, "no Body"
    assert form["ContentSid"] == CONTENT_SID
    assert json.loads(form["ContentVariables"]) == variables


async def test_a_template_without_variables_sends_no_content_variables(
    fake: FakeTwilio, sms: TwilioChannel
) -> None:
    await sms.send(sms_message("", template=Template(content_sid=CONTENT_SID)))
    assert fake.messages == [{"To": CUSTOMER, "From": SMS_FROM, "ContentSid": CONTENT_SID}]


async def test_status_callback_is_passed_on(fake: FakeTwilio, sms: TwilioChannel) -> None:
    callback = "https://nudge.example/webhooks/twilio/status?outbox=42"
    await sms.send(sms_message(status_callback=callback))
    assert fake.messages[0]["StatusCallback"] == callback


@pytest.mark.parametrize(
    "message",
    [
        sms_message(""),
        sms_message("", template=Template(name="order_update", language="en")),
        OutboundMessage(channel=ChannelName.email, to=CUSTOMER, idempotency_key="k", text="x"),
    ],
    ids=["no text", "template without content sid", "another channel's message"],
)
async def test_an_unsendable_message_is_rejected_before_any_request(
    fake: FakeTwilio, sms: TwilioChannel, message: OutboundMessage
) -> None:
    with pytest.raises(Rejected) as raised:
        await sms.send(message)
    assert not isinstance(raised.value, RetryLater)
    assert fake.messages == []


# -- failures ------------------------------------------------------------------------------


async def test_an_unsubscribed_recipient_is_opted_out_and_never_retried(
    fake: FakeTwilio, sms: TwilioChannel
) -> None:
    fake.opted_out.add(CUSTOMER)
    with pytest.raises(RecipientOptedOut) as raised:
        await sms.send(sms_message())
    assert isinstance(raised.value, Rejected)
    assert raised.value.status == 400
    assert "21610" in str(raised.value)
    assert fake.messages == []


async def test_outside_the_whatsapp_window_is_outside_window(
    fake: FakeTwilio, server: RunningServer
) -> None:
    fake.fail_next(400, 63016)
    settings = settings_for(fake, server)
    async with twilio_channel(settings, channel=ChannelName.whatsapp_twilio) as channel:
        with pytest.raises(OutsideWindow) as raised:
            await channel.send(whatsapp_message(text="Still there?"))
    assert isinstance(raised.value, Rejected)
    assert "63016" in str(raised.value)


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_server_errors_and_throttling_retry_later(
    fake: FakeTwilio, sms: TwilioChannel, status: int
) -> None:
    fake.fail_next(status, retry_after="7")
    with pytest.raises(RetryLater) as raised:
        await sms.send(sms_message())
    assert raised.value.status == status
    assert raised.value.retry_after == 7.0
    receipt = await sms.send(sms_message())
    assert MESSAGE_SID.fullmatch(receipt.provider_message_id)
    assert len(fake.messages) == 1


async def test_code_20429_retries_later_whatever_the_status(
    fake: FakeTwilio, sms: TwilioChannel
) -> None:
    fake.fail_next(400, 20429)
    with pytest.raises(RetryLater):
        await sms.send(sms_message())


@pytest.mark.parametrize("code", [21211, 21614, 21608])
async def test_a_bad_number_is_rejected(fake: FakeTwilio, sms: TwilioChannel, code: int) -> None:
    fake.fail_next(400, code)
    with pytest.raises(Rejected) as raised:
        await sms.send(sms_message())
    assert type(raised.value) is Rejected
    assert f"error {code}" in str(raised.value)


async def test_the_fake_refuses_a_number_that_is_not_e164(
    fake: FakeTwilio, server: RunningServer
) -> None:
    async with twilio_channel(settings_for(fake, server)) as channel:
        with pytest.raises(Rejected, match="21211"):
            await channel.send(
                OutboundMessage(ChannelName.sms, to="555-1234", idempotency_key="k", text="x")
            )
    assert fake.messages == []


async def test_a_wrong_auth_token_is_rejected(fake: FakeTwilio, server: RunningServer) -> None:
    settings = settings_for(fake, server, auth_token="not-the-token")
    async with twilio_channel(settings) as channel:
        with pytest.raises(Rejected, match="20003") as raised:
            await channel.send(sms_message())
    assert raised.value.status == 401
    assert fake.messages == []


async def test_an_unreachable_twilio_retries_later(fake: FakeTwilio) -> None:
    settings = TwilioSettings(
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        sms_from=SMS_FROM,
        base_url="http://127.0.0.1:9",
    )
    async with twilio_channel(settings, timeout=2) as channel:
        with pytest.raises(RetryLater):
            await channel.send(sms_message())


def test_configuration_errors_are_raised_at_start_up() -> None:
    configured = TwilioSettings(account_sid="AC1", auth_token="t", sms_from=SMS_FROM)
    with pytest.raises(ValueError, match="not whatsapp"):
        twilio_channel(configured, channel=ChannelName.whatsapp)
    with pytest.raises(ValueError, match="ACCOUNT_SID"):
        twilio_channel(TwilioSettings(sms_from=SMS_FROM))
    with pytest.raises(ValueError, match="WHATSAPP_FROM"):
        twilio_channel(configured, channel=ChannelName.whatsapp_twilio)


# -- reconciliation ------------------------------------------------------------------------


async def test_fetch_message_reads_the_current_status(fake: FakeTwilio, sms: TwilioChannel) -> None:
    receipt = await sms.send(sms_message())
    sid = receipt.provider_message_id
    fetched = await sms.fetch_message(sid)
    assert (fetched["sid"], fetched["status"], fetched["to"]) == (sid, "queued", CUSTOMER)
    assert fetched["error_code"] is None
    fake.status_callback_params(sid, "undelivered", error_code=30003)
    fetched = await sms.fetch_message(sid)
    assert (fetched["status"], fetched["error_code"]) == ("undelivered", 30003)


async def test_fetching_an_unknown_message_is_not_found(sms: TwilioChannel) -> None:
    with pytest.raises(NotFound, match="20404"):
        await sms.fetch_message("SM" + "0" * 32)


# -- webhook signatures --------------------------------------------------------------------

# twilio/twilio-python tests/unit/test_request_validator.py: Twilio's own SDK test vector.
SDK_TOKEN = "12345"
SDK_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
SDK_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
SDK_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
SDK_SIGNATURE_WITH_PORT_443 = "kvajT1Ptam85bY51eRf/AJRuM3w="
SDK_DUPLICATES = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
SDK_DUPLICATES_SIGNATURE = "IK+Dwps556ElfBT0I3Rgjkr1wJU="

# The worked example of Twilio's webhook-security page (same URL and token, numbers ending
# 5310), as quoted by several independent implementations.
DOCS_PARAMS = SDK_PARAMS | {"Caller": "+14158675310", "From": "+14158675310"}
DOCS_SIGNATURE = "GvWf1cFY/Q7PnoempGyD5oXAezc="


def test_the_published_vectors_pass() -> None:
    assert verify_signature(SDK_TOKEN, SDK_URL, SDK_PARAMS, SDK_SIGNATURE)
    assert verify_signature(SDK_TOKEN, SDK_URL, DOCS_PARAMS, DOCS_SIGNATURE)


def test_a_signature_made_over_the_default_port_passes() -> None:
    assert verify_signature(SDK_TOKEN, SDK_URL, SDK_PARAMS, SDK_SIGNATURE_WITH_PORT_443)


def test_the_independent_signer_reproduces_the_published_vectors() -> None:
    assert compute_signature(SDK_TOKEN, SDK_URL, SDK_PARAMS) == SDK_SIGNATURE
    assert compute_signature(SDK_TOKEN, SDK_URL, DOCS_PARAMS) == DOCS_SIGNATURE
    assert compute_signature(SDK_TOKEN, SDK_URL, SDK_DUPLICATES) == SDK_DUPLICATES_SIGNATURE


@pytest.mark.parametrize(
    ("token", "url", "params", "signature"),
    [
        (SDK_TOKEN, SDK_URL, SDK_PARAMS | {"Digits": "9999"}, SDK_SIGNATURE),
        (SDK_TOKEN, SDK_URL, SDK_PARAMS | {"Body": "extra"}, SDK_SIGNATURE),
        (SDK_TOKEN, SDK_URL, {k: v for k, v in SDK_PARAMS.items() if k != "To"}, SDK_SIGNATURE),
        (SDK_TOKEN, SDK_URL.replace("foo=1", "foo=2"), SDK_PARAMS, SDK_SIGNATURE),
        (SDK_TOKEN, SDK_URL.replace("https:", "http:"), SDK_PARAMS, SDK_SIGNATURE),
        (SDK_TOKEN, "https://mycompany.com/myapp.php", SDK_PARAMS, SDK_SIGNATURE),
        ("54321", SDK_URL, SDK_PARAMS, SDK_SIGNATURE),
        ("", SDK_URL, SDK_PARAMS, SDK_SIGNATURE),
        (SDK_TOKEN, SDK_URL, SDK_PARAMS, None),
        (SDK_TOKEN, SDK_URL, SDK_PARAMS, ""),
        (SDK_TOKEN, SDK_URL, SDK_PARAMS, SDK_SIGNATURE.lower()),
    ],
    ids=[
        "tampered param",
        "added param",
        "dropped param",
        "different query",
        "different scheme",
        "query dropped",
        "wrong token",
        "no token",
        "missing header",
        "empty header",
        "altered signature",
    ],
)
def test_anything_changed_fails(
    token: str, url: str, params: dict[str, str], signature: str | None
) -> None:
    assert not verify_signature(token, url, params, signature)


async def test_the_fakes_signature_agrees_with_verify_signature(
    fake: FakeTwilio, sms: TwilioChannel
) -> None:
    url = "https://nudge.example/webhooks/twilio/status?outbox=42"
    receipt = await sms.send(sms_message(status_callback=url))
    params = fake.status_callback_params(receipt.provider_message_id, "delivered")
    assert params["MessageSid"] == receipt.provider_message_id
    assert params["MessageStatus"] == "delivered"
    signature = fake.sign(url, params)
    assert verify_signature(fake.auth_token, url, params, signature)
    assert not verify_signature(fake.auth_token, url, params | {"MessageStatus": "read"}, signature)


def test_non_ascii_and_spaces_are_signed_alike(fake: FakeTwilio) -> None:
    url = "https://nudge.example/webhooks/twilio/inbound"
    params = {
        "Body": "Olá! Quero o vaso 🌿 de 20 cm",
        "From": f"whatsapp:{CUSTOMER}",
        "ProfileName": "Ana María",
        "NumMedia": "0",
        "MessageSid": "SM" + "1" * 32,
    }
    assert verify_signature(fake.auth_token, url, params, fake.sign(url, params))
