"""The WhatsApp Cloud channel against the fake Graph API over real HTTP, and webhook parsing."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from domain.channels import ChannelName, Template
from integrations.channels import OutboundMessage, OutsideWindow
from integrations.errors import Rejected, RetryLater
from integrations.whatsapp_cloud import (
    WhatsAppCloudChannel,
    parse_webhook,
    verify_signature,
    verify_subscription,
)
from settings import WhatsAppSettings
from tests.fakes.graph import FakeGraph
from tests.fakes.server import RunningServer, free_port, serve
from worker import whatsapp_channel

CUSTOMER = "+16505551234"
APP_SECRET = "6c0ffee5ca1ab1e5ec7e7a55e7d15b0b"


@pytest.fixture
def graph() -> FakeGraph:
    return FakeGraph()


@pytest.fixture
def server(graph: FakeGraph) -> Iterator[RunningServer]:
    with serve(graph.app) as running:
        yield running


def settings_for(graph: FakeGraph, url: str, **changes: str) -> WhatsAppSettings:
    values = {
        "token": graph.token,
        "phone_number_id": graph.phone_number_id,
        "app_secret": APP_SECRET,
        "verify_token": "meatyhamhock",
        "graph_url": url,
        "api_version": "v23.0",
    }
    return WhatsAppSettings(**{**values, **changes})


@pytest.fixture
async def channel(graph: FakeGraph, server: RunningServer) -> AsyncIterator[WhatsAppCloudChannel]:
    channel = whatsapp_channel(settings_for(graph, server.url), timeout=5)
    yield channel
    await channel.aclose()


def outbound(**fields: Any) -> OutboundMessage:
    return OutboundMessage(
        channel=ChannelName.whatsapp, to=CUSTOMER, idempotency_key="k1", **fields
    )


BUTTONS: dict[str, Any] = {
    "type": "button",
    "body": {"text": "Did you find the plant you were looking for?"},
    "footer": {"text": "Plant Addict"},
    "action": {
        "buttons": [
            {"type": "reply", "reply": {"id": "found", "title": "Yes, thanks"}},
            {"type": "reply", "reply": {"id": "help", "title": "🌱 I need help"}},
        ]
    },
}

LIST: dict[str, Any] = {
    "type": "list",
    "header": {"type": "text", "text": "Our plants"},
    "body": {"text": "Which one interests you?"},
    "action": {
        "button": "See plants",
        "sections": [
            {
                "title": "Easy care",
                "rows": [
                    {"id": "pothos", "title": "Golden pothos", "description": "Low light"},
                    {"id": "snake", "title": "Snake plant"},
                ],
            },
            {"title": "Statement", "rows": [{"id": "fig", "title": "Fiddle-leaf fig"}]},
        ],
    },
}


# -- sending ---------------------------------------------------------------------------------


async def test_text_is_sent_as_documented(graph: FakeGraph, channel: WhatsAppCloudChannel) -> None:
    receipt = await channel.send(outbound(text="Hi Sheena, still thinking about the monstera?"))
    assert graph.sent == [
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": CUSTOMER,
            "type": "text",
            "text": {"preview_url": False, "body": "Hi Sheena, still thinking about the monstera?"},
        }
    ]
    assert receipt.provider_message_id.startswith("wamid.")
    assert receipt.status == "accepted"


async def test_interactive_buttons_are_sent_as_given(
    graph: FakeGraph, channel: WhatsAppCloudChannel
) -> None:
    await channel.send(outbound(text="ignored when interactive is set", interactive=BUTTONS))
    assert graph.sent == [
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": CUSTOMER,
            "type": "interactive",
            "interactive": BUTTONS,
        }
    ]


async def test_interactive_list_is_sent_as_given(
    graph: FakeGraph, channel: WhatsAppCloudChannel
) -> None:
    await channel.send(outbound(interactive=LIST))
    assert graph.sent == [
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": CUSTOMER,
            "type": "interactive",
            "interactive": LIST,
        }
    ]


async def test_template_is_sent_with_language_code_and_components(
    graph: FakeGraph, channel: WhatsAppCloudChannel
) -> None:
    components = [
        {"type": "body", "parameters": [{"type": "text", "text": "Sheena"}]},
        {
            "type": "button",
            "sub_type": "quick_reply",
            "index": "0",
            "parameters": [{"type": "payload", "payload": "stop-followups"}],
        },
    ]
    template = Template(name="cart_follow_up", language="en_US", components=components)
    receipt = await channel.send(outbound(text="fallback", template=template))
    assert graph.sent == [
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": CUSTOMER,
            "type": "template",
            "template": {
                "name": "cart_follow_up",
                "language": {"code": "en_US"},
                "components": components,
            },
        }
    ]
    assert receipt.status == "accepted"


async def test_template_without_components_leaves_them_out(
    graph: FakeGraph, channel: WhatsAppCloudChannel
) -> None:
    await channel.send(outbound(template=Template(name="hello_world", language="en_US")))
    assert graph.sent[0]["template"] == {"name": "hello_world", "language": {"code": "en_US"}}


async def test_templates_pass_a_closed_window_free_form_does_not(
    graph: FakeGraph, channel: WhatsAppCloudChannel
) -> None:
    graph.outside_window.add(CUSTOMER)
    with pytest.raises(OutsideWindow) as caught:
        await channel.send(outbound(text="Still there?"))
    assert "131047" in str(caught.value)
    with pytest.raises(OutsideWindow):
        await channel.send(outbound(interactive=BUTTONS))
    await channel.send(outbound(template=Template(name="hello_world", language="en_US")))
    assert [body["type"] for body in graph.sent] == ["template"]


@pytest.mark.parametrize(
    ("http_status", "code", "expected"),
    [
        (400, 131047, OutsideWindow),
        (400, 130429, RetryLater),  # throughput: Graph says 400, yet it must be retried
        (400, 131056, RetryLater),
        (429, 4, RetryLater),
        (400, 80007, RetryLater),
        (500, 131000, RetryLater),
        (503, 131016, RetryLater),
        (500, 2, RetryLater),
        (401, 190, Rejected),
        (400, 100, Rejected),
        (400, 131026, Rejected),
        (404, 132001, Rejected),
        (500, 3, Rejected),  # missing capability, served as a 500: retrying cannot help
        (400, 999999, Rejected),  # unknown code: the HTTP status decides
        (502, 999999, RetryLater),
    ],
)
async def test_graph_error_codes_decide_retry_or_not(
    graph: FakeGraph,
    channel: WhatsAppCloudChannel,
    http_status: int,
    code: int,
    expected: type[Exception],
) -> None:
    graph.fail_next(http_status, code, message="Injected")
    with pytest.raises(expected) as caught:
        await channel.send(outbound(text="Hello"))
    assert type(caught.value) is expected
    assert str(code) in str(caught.value)
    assert graph.sent == []


async def test_rejections_are_never_mistaken_for_the_window(
    graph: FakeGraph, channel: WhatsAppCloudChannel
) -> None:
    graph.fail_next(400, 100)
    with pytest.raises(Rejected) as caught:
        await channel.send(outbound(text="Hello"))
    assert not isinstance(caught.value, OutsideWindow)


async def test_gateway_error_without_a_graph_body_is_retried(graph: FakeGraph) -> None:
    # A proxy in front of Graph answers in plain text: the HTTP status alone decides.
    gateway = FastAPI()

    @gateway.post("/{version}/{phone_number_id}/messages")
    async def bad_gateway() -> PlainTextResponse:
        return PlainTextResponse("Bad Gateway", 502)

    with serve(gateway) as running:
        channel = whatsapp_channel(settings_for(graph, running.url), timeout=5)
        try:
            with pytest.raises(RetryLater) as caught:
                await channel.send(outbound(text="Hello"))
        finally:
            await channel.aclose()
    assert caught.value.status == 502


async def test_expired_token_is_rejected(graph: FakeGraph, server: RunningServer) -> None:
    channel = whatsapp_channel(settings_for(graph, server.url, token="expired"), timeout=5)
    try:
        with pytest.raises(Rejected) as caught:
            await channel.send(outbound(text="Hello"))
    finally:
        await channel.aclose()
    assert caught.value.status == 401
    assert "Graph error 190" in str(caught.value)
    assert graph.sent == []


async def test_bad_input_is_rejected_by_the_fake_as_by_graph(
    graph: FakeGraph, channel: WhatsAppCloudChannel
) -> None:
    too_many = {**BUTTONS, "action": {"buttons": BUTTONS["action"]["buttons"] * 2}}
    with pytest.raises(Rejected) as caught:
        await channel.send(outbound(interactive=too_many))
    assert caught.value.status == 400
    assert "Graph error 100" in str(caught.value)
    assert "1 to 3 buttons" in str(caught.value)
    assert graph.sent == []


async def test_nothing_to_send_is_refused_without_a_request(
    graph: FakeGraph, channel: WhatsAppCloudChannel
) -> None:
    with pytest.raises(Rejected):
        await channel.send(outbound(text=""))
    with pytest.raises(Rejected):
        await channel.send(outbound(template=Template(content_sid="HX123")))


async def test_unreachable_graph_is_retried(graph: FakeGraph) -> None:
    channel = whatsapp_channel(settings_for(graph, f"http://127.0.0.1:{free_port()}"), timeout=5)
    try:
        with pytest.raises(RetryLater):
            await channel.send(outbound(text="Hello"))
    finally:
        await channel.aclose()


def test_unconfigured_channel_is_refused() -> None:
    with pytest.raises(ValueError, match="PHONE_NUMBER_ID"):
        whatsapp_channel(WhatsAppSettings(token="t"))


# -- signatures ------------------------------------------------------------------------------

# Meta publishes no official X-Hub-Signature-256 test vector (its webhook docs show only a
# placeholder), so the expected values are computed here with the standard library over
# literal bytes, and the fake's hand-written HMAC is checked against them too.
SIGNED_BODY = (
    b'{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":'
    b'[{"value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":'
    b'"15550783881","phone_number_id":"106540352242922"},"messages":[{"from":"16505551234",'
    b'"id":"wamid.X1","timestamp":"1739321024","type":"text","text":{"body":"Caf\\u00e9?"}}]},'
    b'"field":"messages"}]}]}'
)


def test_signature_matches_a_vector_computed_by_hand() -> None:
    digest = hmac.new(APP_SECRET.encode(), SIGNED_BODY, hashlib.sha256).hexdigest()
    header = f"sha256={digest}"
    assert FakeGraph.sign(APP_SECRET, SIGNED_BODY) == header
    assert verify_signature(APP_SECRET, SIGNED_BODY, header)
    assert verify_signature(APP_SECRET, SIGNED_BODY, header.upper().replace("SHA256=", "sha256="))


def test_signature_matches_a_third_party_published_vector() -> None:
    # From the docs of the Elixir whatsapp_sdk (compute_signature("test", "secret")): not
    # Meta's, but written down independently of this code base.
    header = "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914"
    assert FakeGraph.sign("secret", b"test") == header
    assert verify_signature("secret", b"test", header)


def test_fake_signs_long_secrets_like_hmac() -> None:
    long_secret = "s" * 100  # longer than SHA-256's block: the key is hashed first
    expected = hmac.new(long_secret.encode(), b"body", hashlib.sha256).hexdigest()
    assert FakeGraph.sign(long_secret, b"body") == f"sha256={expected}"


def test_tampered_body_or_wrong_secret_fails() -> None:
    header = FakeGraph.sign(APP_SECRET, SIGNED_BODY)
    assert not verify_signature(APP_SECRET, SIGNED_BODY.replace(b"Caf", b"Cof"), header)
    assert not verify_signature(APP_SECRET, SIGNED_BODY + b"\n", header)
    assert not verify_signature("another-secret", SIGNED_BODY, header)
    assert not verify_signature("", SIGNED_BODY, FakeGraph.sign("", SIGNED_BODY))


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha1=" + "0" * 40,
        "0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914",
        "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c091",
        "sha256=zz29a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914",
        "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914é",
    ],
)
def test_missing_or_malformed_header_fails(header: str | None) -> None:
    assert not verify_signature("secret", b"test", header)


def test_subscription_answers_the_challenge_only_for_our_token() -> None:
    params = {
        "hub.mode": "subscribe",
        "hub.verify_token": "meatyhamhock",
        "hub.challenge": "1158201444",
    }
    assert verify_subscription(params, "meatyhamhock") == "1158201444"
    assert verify_subscription({**params, "hub.verify_token": "other"}, "meatyhamhock") is None
    assert verify_subscription({**params, "hub.mode": "unsubscribe"}, "meatyhamhock") is None
    assert verify_subscription({"hub.challenge": "1"}, "meatyhamhock") is None
    assert verify_subscription({**params, "hub.verify_token": ""}, "") is None


# -- webhook parsing -------------------------------------------------------------------------


def test_a_batch_of_several_entries_is_read_whole(graph: FakeGraph) -> None:
    at = datetime(2025, 2, 12, 0, 43, 44, tzinfo=UTC)
    payload = graph.batch(
        graph.inbound_text(
            "16505551234", "Is the monstera still available?", "wamid.T", timestamp=at
        ),
        graph.inbound_button_reply("16505551234", "help", "🌱 I need help", "wamid.B"),
        graph.inbound_list_reply(
            "16505550000", "fig", "Fiddle-leaf fig", "Bright light", "wamid.L", name="Ana"
        ),
        graph.inbound_quick_reply("16505550000", "stop-followups", "Stop", "wamid.Q"),
        graph.status("wamid.OUT1", "read", "+16505551234", timestamp=at),
        graph.status(
            "wamid.OUT2",
            "failed",
            "16505550000",
            error_code=131026,
            error_title="Message undeliverable",
        ),
        graph.inbound(
            "16505551234",
            "image",
            {"id": "2754859441498128", "mime_type": "image/jpeg"},
            wamid="wamid.I",
        ),
        graph.inbound("16505551234", "unsupported", None, wamid="wamid.U"),
    )
    batch = parse_webhook(payload)

    by_id = {m.id: m for m in batch.messages}
    assert list(by_id) == ["wamid.T", "wamid.B", "wamid.L", "wamid.Q", "wamid.I", "wamid.U"]
    text = by_id["wamid.T"]
    assert (text.from_, text.type, text.text, text.reply_id) == (
        "16505551234",
        "text",
        "Is the monstera still available?",
        None,
    )
    assert text.timestamp == at
    assert text.profile_name == "Sheena Nelson"
    assert text.phone_number_id == graph.phone_number_id
    button = by_id["wamid.B"]
    assert (button.type, button.text, button.reply_id) == ("interactive", "🌱 I need help", "help")
    row = by_id["wamid.L"]
    assert (row.type, row.text, row.reply_id, row.profile_name) == (
        "interactive",
        "Fiddle-leaf fig",
        "fig",
        "Ana",
    )
    quick = by_id["wamid.Q"]
    assert (quick.type, quick.text, quick.reply_id) == ("button", "Stop", "stop-followups")
    assert (by_id["wamid.I"].type, by_id["wamid.I"].text, by_id["wamid.I"].reply_id) == (
        "image",
        "",
        None,
    )
    assert (by_id["wamid.U"].type, by_id["wamid.U"].text) == ("unsupported", "")

    read, failed = batch.statuses
    assert (read.id, read.status, read.recipient_id, read.timestamp) == (
        "wamid.OUT1",
        "read",
        "16505551234",
        at,
    )
    assert (read.error_code, read.error_title) == (None, None)
    assert (failed.id, failed.status, failed.error_code, failed.error_title) == (
        "wamid.OUT2",
        "failed",
        131026,
        "Message undeliverable",
    )


def test_several_changes_in_one_entry_and_other_fields_are_handled(graph: FakeGraph) -> None:
    first = graph.inbound_text("16505551234", "one", "wamid.1")["entry"][0]
    second = graph.inbound_text("16505551234", "two", "wamid.2")["entry"][0]
    first["changes"].append(second["changes"][0])
    first["changes"].append(
        {"field": "message_template_status_update", "value": {"event": "APPROVED"}}
    )
    batch = parse_webhook(graph.batch(first))
    assert [m.text for m in batch.messages] == ["one", "two"]


def test_unicode_survives_the_raw_body_round_trip(graph: FakeGraph) -> None:
    payload = graph.inbound_text("16505551234", "Café ☕ 🌿")
    raw, headers = graph.signed(payload, APP_SECRET)
    assert b"\\u00e9" in raw  # escaped the way Meta sends it
    assert verify_signature(APP_SECRET, raw, headers["X-Hub-Signature-256"])
    assert parse_webhook(json.loads(raw)).messages[0].text == "Café ☕ 🌿"


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda p: p.update(object="page"), "object is 'page'"),
        (lambda p: p.pop("entry"), "entry"),
        (lambda p: p["entry"][0]["changes"][0]["value"]["messages"][0].pop("id"), "messages[0].id"),
        (
            lambda p: p["entry"][0]["changes"][0]["value"]["messages"][0].update(timestamp="soon"),
            "timestamp",
        ),
        (lambda p: p["entry"][0]["changes"][0]["value"]["messages"][0].pop("text"), "type text"),
        (lambda p: p["entry"][0]["changes"][0]["value"].pop("metadata"), "value.metadata"),
    ],
)
def test_malformed_payloads_raise_value_error(
    graph: FakeGraph, mutate: Any, complaint: str
) -> None:
    payload = graph.inbound_text("16505551234", "hi")
    mutate(payload)
    with pytest.raises(ValueError, match="malformed WhatsApp webhook") as caught:
        parse_webhook(payload)
    assert complaint in str(caught.value)


def test_interactive_reply_without_its_object_is_malformed(graph: FakeGraph) -> None:
    payload = graph.inbound_button_reply("16505551234", "help", "Help")
    del payload["entry"][0]["changes"][0]["value"]["messages"][0]["interactive"]["button_reply"]
    with pytest.raises(ValueError, match=r"interactive: type button_reply without button_reply"):
        parse_webhook(payload)
