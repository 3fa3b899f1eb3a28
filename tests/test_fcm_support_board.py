"""The FCM and Support Board channels against their fakes, over real HTTP on 127.0.0.1.

FCM's access tokens come from the fake's OAuth endpoint through google-auth's real
JWT-bearer exchange, signed with the key of a service-account file written for the test.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import ActivityEnvironment

import integrations.fcm
import tests.fakes.fcm
from activities.delivery import DeliveryActivities
from domain.channels import ChannelName
from domain.delivery import DeliverRequest
from integrations.channels import Channel, OutboundMessage, Unregistered
from integrations.errors import NotFound, Rejected, RetryLater
from integrations.fcm import FcmChannel
from integrations.support_board import SupportBoardChannel, is_bot_echo
from settings import FcmSettings, PolicySettings, SupportBoardSettings
from store.repo import Store
from tests.fakes.fcm import FakeFcm
from tests.fakes.server import RunningServer, serve
from tests.fakes.support_board import FakeSupportBoard
from worker import fcm_channel, support_board_channel

DEVICE = "dZx1:APA91bH-device-token"
BOT = "7"

# -- FCM ------------------------------------------------------------------------------------


def push(to: str = DEVICE, **fields: Any) -> OutboundMessage:
    fields.setdefault("text", "Your order has shipped")
    return OutboundMessage(channel=ChannelName.push, to=to, idempotency_key="wf-1:step-1", **fields)


@pytest.fixture
def fcm() -> FakeFcm:
    return FakeFcm()


@pytest.fixture
def fcm_server(fcm: FakeFcm) -> Iterator[RunningServer]:
    with serve(fcm.app) as running:
        yield running


def fcm_settings(fcm: FakeFcm, server: RunningServer, directory: Path, **over: Any) -> FcmSettings:
    path = fcm.service_account_file(directory, f"{server.url}/token")
    return FcmSettings(credentials_file=path, base_url=server.url, **over)


@pytest.fixture
async def channel(
    fcm: FakeFcm, fcm_server: RunningServer, tmp_path: Path
) -> AsyncIterator[FcmChannel]:
    channel = fcm_channel(fcm_settings(fcm, fcm_server, tmp_path), timeout=5)
    yield channel
    await channel.aclose()


async def test_one_token_serves_many_sends(fcm: FakeFcm, channel: FcmChannel) -> None:
    as_channel: Channel = channel  # mypy checks the protocol here
    assert as_channel.name == ChannelName.push
    receipts = [await channel.send(push(text=f"message {n}")) for n in range(3)]
    receipts += await asyncio.gather(*(channel.send(push()) for _ in range(4)))
    assert fcm.tokens_issued == 1
    assert fcm.token_requests == 1
    assert len(fcm.sends) == 7
    names = {r.provider_message_id for r in receipts}
    assert len(names) == 7
    assert all(n.startswith("projects/nudge-test/messages/") for n in names)
    assert {r.status for r in receipts} == {"sent"}


async def test_send_body_is_exact_and_data_values_are_strings(
    fcm: FakeFcm, channel: FcmChannel
) -> None:
    data: dict[str, Any] = {"order_id": "A-17", "items": 3, "paid": True}
    await channel.send(push(subject="Shipped", text="On its way", data=data))
    await channel.send(push(text="", data={"kind": "silent"}))
    assert fcm.sends == [
        {
            "message": {
                "token": DEVICE,
                "notification": {"title": "Shipped", "body": "On its way"},
                "data": {"order_id": "A-17", "items": "3", "paid": "true"},
            }
        },
        {"message": {"token": DEVICE, "data": {"kind": "silent"}}},
    ]


async def test_the_fake_refuses_data_that_is_not_text(
    fcm: FakeFcm, fcm_server: RunningServer
) -> None:
    """What a client that forgets the conversion would get (checks the fake, not us)."""
    token = fcm.issue_token()
    async with httpx.AsyncClient(base_url=fcm_server.url) as http:
        response = await http.post(
            "/v1/projects/nudge-test/messages:send",
            json={"message": {"token": DEVICE, "data": {"n": 12}}},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert "message.data[0].value" in error["message"]


async def test_unregistered_token_is_unregistered(fcm: FakeFcm, channel: FcmChannel) -> None:
    fcm.unregistered.add(DEVICE)
    with pytest.raises(Unregistered) as caught:
        await channel.send(push())
    assert caught.value.status == 404
    assert fcm.sends == []


@pytest.mark.parametrize(
    ("status", "error_status"),
    [(503, "UNAVAILABLE"), (500, "INTERNAL"), (429, "QUOTA_EXCEEDED")],
)
async def test_transient_failures_are_retry_later(
    fcm: FakeFcm, channel: FcmChannel, status: int, error_status: str
) -> None:
    fcm.fail_next(status, error_status, retry_after="7")
    with pytest.raises(RetryLater) as caught:
        await channel.send(push())
    assert caught.value.status == status
    assert caught.value.retry_after == 7.0
    assert (await channel.send(push())).provider_message_id
    assert fcm.tokens_issued == 1


@pytest.mark.parametrize(
    ("status", "error_status"),
    [(400, "INVALID_ARGUMENT"), (403, "SENDER_ID_MISMATCH"), (401, "THIRD_PARTY_AUTH_ERROR")],
)
async def test_permanent_failures_are_rejected(
    fcm: FakeFcm, channel: FcmChannel, status: int, error_status: str
) -> None:
    fcm.fail_next(status, error_status)
    with pytest.raises(Rejected) as caught:
        await channel.send(push())
    assert not isinstance(caught.value, NotFound)
    assert caught.value.status == status
    await channel.send(push())
    assert fcm.tokens_issued == 1, "an APNs credential problem is no reason to drop our token"


async def test_a_refused_access_token_is_dropped_and_renewed(
    fcm: FakeFcm, channel: FcmChannel
) -> None:
    await channel.send(push())
    fcm.revoke_tokens()
    with pytest.raises(RetryLater) as caught:
        await channel.send(push())
    assert caught.value.status == 401
    assert not caught.value.maybe_delivered
    await channel.send(push())
    assert fcm.tokens_issued == 2
    assert fcm.send_statuses == [200, 401, 200]


class SteppedClock:
    """``time.monotonic`` for the channel's token cache and the fake's token expiry, moved
    only by the test, so "half a token's life later" does not depend on a real sleep; the
    wall clock (JWT ``iat``/``exp``) stays real."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    @staticmethod
    def time() -> float:
        return time.time()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SteppedClock:
    stepped = SteppedClock()
    monkeypatch.setattr(integrations.fcm, "time", stepped)
    monkeypatch.setattr(tests.fakes.fcm, "time", stepped)
    return stepped


@pytest.mark.parametrize(
    ("lifetime", "still_cached", "renewed"),
    [
        (2, 0.5, 1.1),  # a short-lived token is renewed after half its life
        (3600, 3000.0, 3301.0),  # an hour's token five minutes before it runs out
    ],
)
async def test_token_is_renewed_before_it_expires(
    fcm_server: RunningServer,
    fcm: FakeFcm,
    tmp_path: Path,
    clock: SteppedClock,
    lifetime: int,
    still_cached: float,
    renewed: float,
) -> None:
    fcm.token_lifetime = lifetime
    channel = fcm_channel(fcm_settings(fcm, fcm_server, tmp_path), timeout=5)
    start = clock.now
    try:
        await channel.send(push())
        clock.now = start + still_cached
        await channel.send(push())
        assert fcm.tokens_issued == 1
        clock.now = start + renewed
        await channel.send(push())
        assert fcm.tokens_issued == 2
        clock.now = start + lifetime  # the first token is dead now; the new one is not
        await channel.send(push())
    finally:
        await channel.aclose()
    assert fcm.tokens_issued == 2
    assert fcm.send_statuses == [200, 200, 200, 200], "renewed before FCM refused it"


async def test_the_fake_refuses_an_expired_token(
    fcm: FakeFcm, fcm_server: RunningServer, clock: SteppedClock
) -> None:
    """What the renewal saves us from: FCM's 401 once a token has lived its life."""
    fcm.token_lifetime = 2
    token = fcm.issue_token()
    async with httpx.AsyncClient(base_url=fcm_server.url) as http:

        async def status() -> int:
            response = await http.post(
                "/v1/projects/nudge-test/messages:send",
                json={"message": {"token": DEVICE}},
                headers={"Authorization": f"Bearer {token}"},
            )
            return response.status_code

        assert await status() == 200
        clock.now += 2
        assert await status() == 401


async def test_deliver_forgets_a_device_token_fcm_calls_unregistered(
    fcm: FakeFcm, channel: FcmChannel, store: Store
) -> None:
    """Through the send path: FCM's UNREGISTERED removes that token from its contact (and
    only that one), and the send ends ``failed`` without a retry."""
    contact = store.upsert_contact("shop", "c-7", name="Ann")
    store.update_contact(contact, fields={}, device_tokens=[DEVICE, "other-phone"])
    fcm.unregistered.add(DEVICE)
    activities = DeliveryActivities({ChannelName.push: channel}, store, PolicySettings())
    request = DeliverRequest(
        "push-1", "wf-push", ChannelName.push, DEVICE, text="Shipped", contact_id=contact
    )

    outcome = await ActivityEnvironment().run(activities.deliver, request)

    assert outcome.status == "failed"
    assert outcome.reason.startswith("device token unregistered")
    found = store.get_contact(contact)
    assert found is not None and found.device_tokens == ["other-phone"]
    row = store.get_outbox("push-1")
    assert row is not None and row.status == "failed" and row.attempts == 1
    assert fcm.sends == [] and fcm.send_statuses == [404]
    again = await ActivityEnvironment().run(activities.deliver, request)
    assert again.status == "failed" and fcm.send_statuses == [404], "a retry sends nothing"


async def test_a_key_the_token_endpoint_does_not_know_is_rejected(
    fcm: FakeFcm, fcm_server: RunningServer, tmp_path: Path
) -> None:
    stranger = FakeFcm()  # same project and e-mail, different key
    path = stranger.service_account_file(tmp_path, f"{fcm_server.url}/token")
    channel = fcm_channel(FcmSettings(credentials_file=path, base_url=fcm_server.url), timeout=5)
    try:
        with pytest.raises(Rejected, match="Invalid JWT Signature"):
            await channel.send(push())
    finally:
        await channel.aclose()
    assert fcm.tokens_issued == 0
    assert fcm.send_statuses == []


async def test_project_id_setting_overrides_the_file(
    fcm: FakeFcm, fcm_server: RunningServer, tmp_path: Path
) -> None:
    settings = fcm_settings(fcm, fcm_server, tmp_path, project_id="someone-else")
    channel = fcm_channel(settings, timeout=5)
    try:
        with pytest.raises(Rejected) as caught:
            await channel.send(push())
    finally:
        await channel.aclose()
    assert caught.value.status == 403
    assert "someone-else" in caught.value.body


def test_unusable_credentials_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NUDGE_FCM__CREDENTIALS_FILE"):
        fcm_channel(FcmSettings())
    with pytest.raises(ValueError, match="NUDGE_FCM__CREDENTIALS_FILE"):
        fcm_channel(FcmSettings(credentials_file=tmp_path / "missing.json"))
    app_config = tmp_path / "google-services.json"
    app_config.write_text(json.dumps({"project_info": {"project_id": "x"}}))
    with pytest.raises(ValueError, match=r"NUDGE_FCM__CREDENTIALS_FILE.*service-account"):
        fcm_channel(FcmSettings(credentials_file=app_config))
    broken = tmp_path / "broken.json"
    info = json.loads(
        FakeFcm().service_account_file(tmp_path, "http://127.0.0.1:1/token").read_text()
    )
    broken.write_text(json.dumps({**info, "private_key": "not a key"}))
    with pytest.raises(ValueError, match="NUDGE_FCM__CREDENTIALS_FILE"):
        fcm_channel(FcmSettings(credentials_file=broken))


# -- Support Board ----------------------------------------------------------------------------


def sb_message(to: str, text: str = "Thanks, we'll be in touch") -> OutboundMessage:
    return OutboundMessage(
        channel=ChannelName.support_board, to=to, idempotency_key="wf-2:step-1", text=text
    )


@pytest.fixture
def board() -> FakeSupportBoard:
    return FakeSupportBoard()


@pytest.fixture
def board_server(board: FakeSupportBoard) -> Iterator[RunningServer]:
    with serve(board.app) as running:
        yield running


def board_settings(server: RunningServer, token: str) -> SupportBoardSettings:
    return SupportBoardSettings(url=f"{server.url}/include/api.php", token=token, bot_user_id=BOT)


@pytest.fixture
async def sb(
    board: FakeSupportBoard, board_server: RunningServer
) -> AsyncIterator[SupportBoardChannel]:
    channel = support_board_channel(board_settings(board_server, board.admin_token), timeout=5)
    yield channel
    await channel.aclose()


async def test_send_message_form_fields(board: FakeSupportBoard, sb: SupportBoardChannel) -> None:
    as_channel: Channel = sb  # mypy checks the protocol here
    assert as_channel.name == ChannelName.support_board
    as_bot = await sb.send(sb_message("42"))
    as_agent = await sb.send(sb_message("42:9", "A human here"))
    assert board.calls == [
        {
            "token": board.admin_token,
            "function": "send-message",
            "user_id": BOT,
            "conversation_id": "42",
            "message": "Thanks, we'll be in touch",
            "attachments": "[]",
        },
        {
            "token": board.admin_token,
            "function": "send-message",
            "user_id": "9",
            "conversation_id": "42",
            "message": "A human here",
            "attachments": "[]",
        },
    ]
    assert (as_bot.provider_message_id, as_agent.provider_message_id) == ("1000", "1001")


async def test_messenger_send_message_form_fields(
    board: FakeSupportBoard, sb: SupportBoardChannel
) -> None:
    receipt = await sb.send(sb_message("messenger:6012345678:10998877"))
    assert board.calls == [
        {
            "token": board.admin_token,
            "function": "messenger-send-message",
            "psid": "6012345678",
            "facebook_page_id": "10998877",
            "message": "Thanks, we'll be in touch",
            "attachments": "[]",
        }
    ]
    assert receipt.provider_message_id.startswith("m_")
    assert board.webhooks == [], "Messenger sends fire no message-sent webhook"


async def test_success_false_is_rejected(board: FakeSupportBoard, sb: SupportBoardChannel) -> None:
    board.fail_next(200, {"success": False, "response": "conversation-not-found"})
    with pytest.raises(Rejected, match="conversation-not-found") as caught:
        await sb.send(sb_message("404"))
    assert not isinstance(caught.value, NotFound)


async def test_status_error_is_rejected(
    board: FakeSupportBoard, board_server: RunningServer
) -> None:
    channel = support_board_channel(board_settings(board_server, board.agent_token), timeout=5)
    try:
        with pytest.raises(Rejected, match="invalid-token"):
            await channel.send(sb_message("42"))
    finally:
        await channel.aclose()
    assert board.messages == []


@pytest.mark.parametrize(
    "answer",
    [
        {"success": True, "response": [{"error": {"message": "(#10) outside the window"}}]},
        ["error", "Support Board Error [ajax.php]: No functions found with the given name."],
        "<br /><b>Warning</b>: something in functions.php",
    ],
)
async def test_anything_but_success_true_is_rejected(
    board: FakeSupportBoard, sb: SupportBoardChannel, answer: Any
) -> None:
    board.fail_next(200, answer)
    with pytest.raises(Rejected):
        await sb.send(sb_message("messenger:1:2"))


async def test_a_transient_facebook_error_is_retry_later(
    board: FakeSupportBoard, sb: SupportBoardChannel
) -> None:
    error = {"message": "An unexpected error has occurred.", "code": 2, "is_transient": True}
    board.fail_next(200, {"success": True, "response": [{"error": error}]})
    with pytest.raises(RetryLater, match="unexpected error"):
        await sb.send(sb_message("messenger:1:2"))


async def test_server_errors_are_retry_later(
    board: FakeSupportBoard, sb: SupportBoardChannel
) -> None:
    board.fail_next(500)
    with pytest.raises(RetryLater) as caught:
        await sb.send(sb_message("42"))
    assert caught.value.status == 500
    assert caught.value.maybe_delivered, "PHP may have stored the message before failing"
    board.fail_next(503, "Service Unavailable")
    with pytest.raises(RetryLater) as caught:
        await sb.send(sb_message("42"))
    assert not caught.value.maybe_delivered
    assert (await sb.send(sb_message("42"))).provider_message_id == "1000"


async def test_a_result_without_id_falls_back_to_the_idempotency_key(
    board: FakeSupportBoard, sb: SupportBoardChannel
) -> None:
    board.fail_next(200, {"success": True, "response": True})
    assert (await sb.send(sb_message("42"))).provider_message_id == "wf-2:step-1"


@pytest.mark.parametrize("to", ["", ":9", "42:9:1", "messenger:1", "messenger::2"])
async def test_malformed_addresses_are_rejected_unsent(
    board: FakeSupportBoard, sb: SupportBoardChannel, to: str
) -> None:
    with pytest.raises(Rejected):
        await sb.send(sb_message(to))
    assert board.calls == []


async def test_the_bot_s_own_messages_are_echoes(
    board: FakeSupportBoard, sb: SupportBoardChannel
) -> None:
    board.customers["42"] = "1234"
    await sb.send(sb_message("42"))
    await sb.send(sb_message("42:9", "An agent's reply"))
    from_bot, from_agent = board.webhooks
    assert is_bot_echo(from_bot, BOT)
    assert not is_bot_echo(from_agent, BOT)
    from_customer = {**from_bot, "data": {**from_bot["data"], "user_id": 1234}}
    assert not is_bot_echo(from_customer, BOT)
    numeric = {**from_bot, "data": {**from_bot["data"], "user_id": 7}}
    assert is_bot_echo(numeric, BOT)
    assert not is_bot_echo({**from_bot, "function": "new-messages"}, BOT)
    assert not is_bot_echo(from_bot, "")
    assert not is_bot_echo({"function": "message-sent"}, BOT)
