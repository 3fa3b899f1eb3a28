"""The outbound webhook client against a receiver that verifies signatures, over real HTTP.

The receiver re-implements the documented check (``tests/fakes/webhook_receiver.py``), so a
signature accepted here is one a customer's server would accept.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from domain.automations import signature
from integrations.errors import NotFound, Rejected, RetryLater
from integrations.webhooks import WebhookClient, encode_body
from tests.fakes.server import RunningServer, free_port, serve
from tests.fakes.webhook_receiver import TOLERANCE, WebhookReceiver, verify

SECRET = "whsec-0123456789abcdef"
BODY = {
    "event": "automation.run",
    "rule": {"id": 12, "name": "Zoë's reminder"},
    "contact": {"name": "Zoë Åberg", "tags": ["vip", "née"], "score": 4.5, "opted_in": True},
    "note": None,
}


@pytest.fixture
def receiver() -> WebhookReceiver:
    return WebhookReceiver(SECRET)


@pytest.fixture
def server(receiver: WebhookReceiver) -> Iterator[RunningServer]:
    with serve(receiver.app) as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[WebhookClient]:
    client = WebhookClient(timeout=5)
    yield client
    await client.aclose()


async def test_signed_call_is_accepted_and_body_round_trips(
    receiver: WebhookReceiver, server: RunningServer, client: WebhookClient
) -> None:
    status = await client.post(f"{server.url}/hooks/crm", SECRET, BODY, "run-1:webhook")
    assert status == 200
    [call] = receiver.received
    assert call.verified
    assert call.path == "/hooks/crm"
    assert call.body == BODY
    assert call.delivery_id == "run-1:webhook"
    assert call.user_agent == "Nudge-Webhooks/1"
    # The bytes signed are the bytes sent: compact JSON, non-ASCII as UTF-8, not escaped.
    assert call.raw == json.dumps(BODY, separators=(",", ":"), ensure_ascii=False).encode()
    assert "Zoë Åberg".encode() in call.raw


async def test_wrong_secret_is_refused(
    receiver: WebhookReceiver, server: RunningServer, client: WebhookClient
) -> None:
    with pytest.raises(Rejected) as caught:
        await client.post(f"{server.url}/hooks/crm", "not-the-secret-at-all", BODY, "d-1")
    assert type(caught.value) is Rejected
    assert caught.value.status == 401
    assert caught.value.provider == "webhook"
    assert receiver.received == []
    assert [c.verified for c in receiver.calls] == [False]


async def test_old_timestamp_is_refused(
    receiver: WebhookReceiver, server: RunningServer, client: WebhookClient
) -> None:
    with pytest.raises(Rejected) as caught:
        await client.post(
            f"{server.url}/hooks/crm", SECRET, BODY, "d-1", now=lambda: time.time() - 3600
        )
    assert caught.value.status == 401
    assert receiver.received == []


async def test_timestamp_sent_is_the_clock_given(
    receiver: WebhookReceiver, server: RunningServer, client: WebhookClient
) -> None:
    # Inside the tolerance the call passes: the timestamp comes from ``now``, not a fixed one.
    await client.post(
        f"{server.url}/hooks/crm", SECRET, BODY, "d-1", now=lambda: time.time() - TOLERANCE / 2
    )
    assert [c.verified for c in receiver.received] == [True]


def test_the_fake_checks_what_the_format_says() -> None:
    """The receiver's check is independent of the signer, so it must agree with it and with
    a hand-made header, and refuse near misses."""
    raw = encode_body(BODY)
    now = 1_700_000_000
    assert verify(SECRET, signature(SECRET, raw, now), raw, now)
    digest = hmac.new(SECRET.encode(), f"{now}.".encode() + raw, hashlib.sha256).hexdigest()
    assert verify(SECRET, f"t={now},sha256={digest}", raw, now + TOLERANCE)
    assert not verify(SECRET, f"t={now},sha256={digest}", raw, now + TOLERANCE + 1)
    assert not verify(SECRET, f"t={now + 1},sha256={digest}", raw, now)
    assert not verify(SECRET, f"t={now},sha256={digest}", raw + b" ", now)
    assert not verify(SECRET, f"sha256={digest}", raw, now)
    assert not verify(SECRET, f"t={now}", raw, now)
    assert not verify(SECRET, "", raw, now)


async def test_503_is_retry_later_and_the_retry_is_taken_once(
    receiver: WebhookReceiver, server: RunningServer, client: WebhookClient
) -> None:
    receiver.fail_next(503)
    with pytest.raises(RetryLater) as caught:
        await client.post(f"{server.url}/hooks/crm", SECRET, BODY, "run-7:webhook")
    assert caught.value.status == 503
    assert receiver.received == []
    assert await client.post(f"{server.url}/hooks/crm", SECRET, BODY, "run-7:webhook") == 200
    # A retry after a lost answer repeats the delivery id: answered 200, recorded once.
    assert await client.post(f"{server.url}/hooks/crm", SECRET, BODY, "run-7:webhook") == 200
    assert [c.status for c in receiver.calls] == [503, 200, 200]
    assert {c.delivery_id for c in receiver.calls} == {"run-7:webhook"}
    assert len(receiver.received) == 1


async def test_429_carries_retry_after(
    receiver: WebhookReceiver, server: RunningServer, client: WebhookClient
) -> None:
    receiver.fail_next(429, retry_after="17")
    with pytest.raises(RetryLater) as caught:
        await client.post(f"{server.url}/hooks/crm", SECRET, BODY, "d-1")
    assert caught.value.status == 429
    assert caught.value.retry_after == 17.0


async def test_404_is_not_found(server: RunningServer, client: WebhookClient) -> None:
    with pytest.raises(NotFound) as caught:
        await client.post(f"{server.url}/nowhere", SECRET, BODY, "d-1")
    assert caught.value.status == 404


@pytest.mark.parametrize("status", [302, 307])
async def test_redirect_is_rejected_and_not_followed(
    receiver: WebhookReceiver, server: RunningServer, client: WebhookClient, status: int
) -> None:
    with pytest.raises(Rejected) as caught:
        await client.post(f"{server.url}/moved/crm?status={status}", SECRET, BODY, "d-1")
    assert type(caught.value) is Rejected
    assert caught.value.status == status
    assert "/hooks/crm" in str(caught.value)
    assert receiver.calls == []


async def test_connection_refused_is_retry_later(client: WebhookClient) -> None:
    with pytest.raises(RetryLater) as caught:
        await client.post(f"http://127.0.0.1:{free_port()}/hooks/crm", SECRET, BODY, "d-1")
    assert caught.value.status is None
    assert not caught.value.maybe_delivered
