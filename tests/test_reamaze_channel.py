"""Re:amaze as a channel of the one send path: a helpdesk reply is a message like any other.

``deliver`` on the ``reamaze`` channel against the fake Re:amaze over HTTP and a real
database: one post per idempotency key (its ``origin_id``), the contact's e-mail opt-outs
apply, a deleted conversation is a failure that says the recipient is gone, and a send whose
answer was lost is settled by asking Re:amaze for the ``origin_id`` instead of posting blind.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.delivery import DeliveryActivities
from domain.channels import ChannelName, MessageClass
from domain.delivery import DeliverRequest
from domain.policy import OptOutSource
from domain.status import OutboxStatus, SendStatus
from integrations.reamaze import ReamazeClient
from settings import PolicySettings, ReamazeSettings
from store.repo import Store
from tests.fakes.reamaze import FakeReamaze
from tests.fakes.server import RunningServer, serve
from worker import reamaze_client

NO_QUIET_HOURS = PolicySettings(quiet_hours_start="00:00", quiet_hours_end="00:00")


@dataclass
class Rig:
    fake: FakeReamaze
    client: ReamazeClient
    store: Store

    def conversation(self, email: str = "customer@example.com") -> str:
        slug = f"conv-{uuid.uuid4().hex[:8]}"
        self.fake.add_conversation(slug, tags=[], customer_email=email)
        return slug

    def activities(self, grace: timedelta = timedelta(minutes=2)) -> DeliveryActivities:
        return DeliveryActivities(
            {ChannelName.reamaze: self.client}, self.store, NO_QUIET_HOURS, in_flight_grace=grace
        )

    def reply(self, slug: str, **fields: object) -> DeliverRequest:
        key = f"nudge:followup:reamaze:{slug}:step-1"
        return DeliverRequest(
            idempotency_key=key,
            workflow_id=f"followup:reamaze:{slug}",
            channel=ChannelName.reamaze,
            to=slug,
            text="Still thinking about the monstera?",
            message_class=MessageClass.marketing,
            **fields,  # type: ignore[arg-type]
        )


@pytest.fixture
def fake() -> FakeReamaze:
    return FakeReamaze()


@pytest.fixture
def server(fake: FakeReamaze) -> Iterator[RunningServer]:
    with serve(fake.app) as running:
        yield running


@pytest.fixture
async def rig(fake: FakeReamaze, server: RunningServer, any_store: Store) -> AsyncIterator[Rig]:
    settings = ReamazeSettings(
        base_url=server.url,
        login_email=fake.login_email,
        api_token=fake.api_token,
        timeout=timedelta(seconds=5),
    )
    client = reamaze_client(settings)
    yield Rig(fake, client, any_store)
    await client.aclose()


async def test_a_reply_is_posted_once_with_its_key_as_origin_id(rig: Rig) -> None:
    slug = rig.conversation()
    request = rig.reply(slug)
    activities = rig.activities()

    first = await ActivityEnvironment().run(activities.deliver, request)
    again = await ActivityEnvironment().run(activities.deliver, request)

    assert first.status == SendStatus.sent and again.status == SendStatus.sent
    posts = [post["message"] for post in rig.fake.posts_for(slug)]
    assert len(posts) == 1, "a retried send finds the outbox row sent"
    assert posts[0]["origin_id"] == request.idempotency_key
    assert posts[0]["body"] == request.text
    assert posts[0]["suppress_autoresolve"] is True
    row = rig.store.get_outbox(request.idempotency_key)
    assert row is not None and row.status == OutboxStatus.sent
    assert row.channel == "reamaze" and row.recipient == slug and row.sent_at is not None


async def test_a_customer_unsubscribed_by_email_gets_no_helpdesk_marketing(rig: Rig) -> None:
    """A helpdesk reply reaches the customer by e-mail: their e-mail opt-out applies to it."""
    slug = rig.conversation()
    contact_id = rig.store.upsert_contact(
        "reamaze", "customer@example.com", email="customer@example.com"
    )
    rig.store.suppress(
        "email", "customer@example.com", scope="marketing", reason="unsubscribe link",
        source=OptOutSource.unsubscribe_link,
    )  # fmt: skip

    outcome = await ActivityEnvironment().run(
        rig.activities().deliver, rig.reply(slug, contact_id=contact_id)
    )

    assert outcome.status == SendStatus.suppressed and "unsubscribe link" in outcome.reason
    assert rig.fake.posts_for(slug) == []


async def test_a_deleted_conversation_fails_and_says_the_recipient_is_gone(rig: Rig) -> None:
    slug = rig.conversation()
    rig.fake.delete_conversation(slug)
    request = rig.reply(slug)

    outcome = await ActivityEnvironment().run(rig.activities().deliver, request)

    assert outcome.status == SendStatus.failed and outcome.gone
    row = rig.store.get_outbox(request.idempotency_key)
    assert row is not None and row.status == OutboxStatus.failed


def left_sending(rig: Rig, request: DeliverRequest) -> None:
    """What a worker that died during the provider call leaves: the row taken, no answer."""
    rig.store.claim_outbox(
        request.idempotency_key,
        workflow_id=request.workflow_id,
        channel=request.channel.value,
        recipient=request.to,
        body=request.text,
        message_class=request.message_class.value,
    )
    assert rig.store.take_outbox(request.idempotency_key, OutboxStatus.sending) is not None


async def test_a_lost_answer_is_settled_by_the_origin_id_without_a_second_post(rig: Rig) -> None:
    slug = rig.conversation()
    request = rig.reply(slug)
    left_sending(rig, request)
    # The request had reached Re:amaze before the worker died.
    rig.fake.add_message(
        slug,
        request.text,
        email=rig.fake.login_email,
        staff=True,
        origin_id=request.idempotency_key,
    )

    outcome = await ActivityEnvironment().run(rig.activities().deliver, request)

    assert outcome.status == SendStatus.sent
    assert rig.fake.posts_for(slug) == [], "nothing is posted again"
    row = rig.store.get_outbox(request.idempotency_key)
    assert row is not None and row.status == OutboxStatus.sent
    assert row.provider_message_id == request.idempotency_key


async def test_a_send_not_at_reamaze_is_posted_again_once_its_sender_is_gone(rig: Rig) -> None:
    """Within the grace the other attempt may still be posting: step back. Past it, Re:amaze
    does not have the message, so it is posted, once."""
    slug = rig.conversation()
    request = rig.reply(slug)
    left_sending(rig, request)

    with pytest.raises(ApplicationError) as waiting:
        await ActivityEnvironment().run(rig.activities().deliver, request)
    assert waiting.value.type == "RetryLater" and rig.fake.posts_for(slug) == []

    impatient = rig.activities(grace=timedelta(0))
    with pytest.raises(ApplicationError) as released:
        await ActivityEnvironment().run(impatient.deliver, request)
    assert released.value.type == "RetryLater", "the row is released for the next attempt"
    outcome = await ActivityEnvironment().run(impatient.deliver, request)
    again = await ActivityEnvironment().run(impatient.deliver, request)

    assert outcome.status == SendStatus.sent and again.status == SendStatus.sent
    assert len(rig.fake.posts_for(slug)) == 1
