"""The Re:amaze client against the fake Re:amaze, over real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from integrations.errors import NotFound, Rejected, RetryLater
from integrations.reamaze import ReamazeClient
from tests.fakes.reamaze import FakeReamaze
from tests.fakes.server import RunningServer, free_port, serve

TAG = "Needs-Sales-Followup"
T0 = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def fake() -> FakeReamaze:
    return FakeReamaze(page_size=2)


@pytest.fixture
def server(fake: FakeReamaze) -> Iterator[RunningServer]:
    with serve(fake.app) as running:
        yield running


@pytest.fixture
async def client(fake: FakeReamaze, server: RunningServer) -> AsyncIterator[ReamazeClient]:
    async with ReamazeClient(server.url, fake.login_email, fake.api_token, timeout=5) as c:
        yield c


def page_reads(fake: FakeReamaze, path: str) -> int:
    return sum(1 for method, p in fake.requests if method == "GET" and p == path)


class AfterFirstResponse(httpx.AsyncBaseTransport):
    """Real HTTP, with a change to the fake's world between the first and second request."""

    def __init__(self, change: Callable[[], None]) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.change: Callable[[], None] | None = change

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.change is not None:
            self.change()
            self.change = None
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_lists_every_page_of_tagged_conversations(
    fake: FakeReamaze, client: ReamazeClient
) -> None:
    tagged = [f"tagged-{n}" for n in range(5)]
    for slug in tagged:
        fake.add_conversation(slug, tags=["vip", TAG])
    fake.add_conversation("untagged", tags=["other"])
    conversations = await client.list_conversations(tag=TAG)
    assert sorted(c.slug for c in conversations) == tagged
    assert page_reads(fake, "/conversations") == 3, "5 conversations at 2 a page"
    first = next(c for c in conversations if c.slug == "tagged-0")
    assert first.tag_list == ["vip", TAG]
    assert first.author is not None and first.author.email == "customer@example.com"


async def test_a_conversation_shifting_pages_is_returned_once(
    fake: FakeReamaze, server: RunningServer
) -> None:
    for n in range(4):
        fake.add_conversation(f"c{n}", tags=[TAG])

    # Newest first: a conversation created after page 1 was read pushes c2 onto page 2.
    created = AfterFirstResponse(lambda: fake.add_conversation("new", tags=[TAG]))
    async with ReamazeClient(
        server.url, fake.login_email, fake.api_token, transport=created
    ) as client:
        slugs = [c.slug for c in await client.list_conversations(tag=TAG)]
    assert sorted(slugs) == ["c0", "c1", "c2", "c3"]


async def test_works_under_the_documented_api_root(fake: FakeReamaze) -> None:
    host = FastAPI()
    host.mount("/api/v1", fake.app)
    fake.add_conversation("under-root", tags=[TAG])
    with serve(host) as running:
        async with ReamazeClient(
            f"{running.url}/api/v1", fake.login_email, fake.api_token
        ) as client:
            conversation = await client.get_conversation("under-root")
    assert conversation.slug == "under-root"
    assert fake.requests == [("GET", "/conversations/under-root")]


async def test_get_conversation_reads_the_documented_fields(
    fake: FakeReamaze, client: ReamazeClient
) -> None:
    fake.add_conversation(
        "knock-knock", tags=["joke"], subject="Knock, knock?", customer_email="bob@example.com"
    )
    conversation = await client.get_conversation("knock-knock")
    assert conversation.subject == "Knock, knock?"
    assert conversation.status == 0
    assert conversation.tag_list == ["joke"]
    assert conversation.author is not None
    assert conversation.author.email == "bob@example.com" and conversation.author.customer
    assert conversation.created_at is not None and conversation.created_at.tzinfo is not None


async def test_only_reamazes_slug_alphabet_goes_into_the_path(
    fake: FakeReamaze, client: ReamazeClient
) -> None:
    """A slug is put in the URL path: ``..``, ``/``, ``%2e%2e``, ``?`` or ``#`` could address
    another path of the API, so anything outside letters, digits, ``-`` and ``_`` is refused
    (as a rejection: a retry would not change it) before a request is made."""
    for slug in ("order 12?x#y", "..", "a/../b", "%2e%2e", ""):
        with pytest.raises(Rejected, match="not a Re:amaze conversation slug"):
            await client.get_conversation(slug)
        with pytest.raises(Rejected):
            await client.post_message(slug, "Hi", origin_id="nudge:escape")
    assert fake.requests == []
    slug = "where-is-my-order_12"
    fake.add_conversation(slug, tags=[TAG])
    assert (await client.get_conversation(slug)).slug == slug


async def test_messages_from_every_page_oldest_first(
    fake: FakeReamaze, client: ReamazeClient
) -> None:
    fake.add_conversation("chat", tags=[TAG])
    minutes = [3, 0, 4, 1, 2]  # added out of order; the fake serves them newest first
    for minute in minutes:
        fake.add_message(
            "chat",
            f"message {minute}",
            email="customer@example.com",
            created_at=T0 + timedelta(minutes=minute),
        )
    messages = await client.list_messages("chat")
    assert [m.body for m in messages] == [f"message {m}" for m in range(5)]
    assert [m.created_at for m in messages] == [T0 + timedelta(minutes=m) for m in range(5)]
    assert page_reads(fake, "/conversations/chat/messages") == 3


async def test_post_sends_origin_id_and_keeps_the_conversation_open(
    fake: FakeReamaze, client: ReamazeClient
) -> None:
    fake.add_conversation("chat", tags=[TAG])
    fake.add_message("chat", "Is this plant pet safe?", email="customer@example.com")
    posted = await client.post_message("chat", "Yes, it is!", origin_id="nudge:wf-1:step-1")
    assert fake.posts_for("chat") == [
        {
            "message": {
                "body": "Yes, it is!",
                "origin_id": "nudge:wf-1:step-1",
                "suppress_autoresolve": True,
            }
        }
    ]
    assert fake.status("chat") == 0, "a staff post without suppress_autoresolve resolves"
    assert posted.origin_id == "nudge:wf-1:step-1"
    assert posted.user is not None and posted.user.staff
    assert posted.user.email == fake.login_email
    messages = await client.list_messages("chat")
    assert [m.body for m in messages] == ["Is this plant pet safe?", "Yes, it is!"]


async def test_find_message_by_origin_id(fake: FakeReamaze, client: ReamazeClient) -> None:
    fake.add_conversation("chat", tags=[TAG])
    for n in range(3):
        fake.add_message("chat", f"customer {n}", email="customer@example.com")
    await client.post_message("chat", "Following up", origin_id="nudge:abc")
    fake.add_message("chat", "a later reply", email="customer@example.com")
    found = await client.find_message_by_origin_id("chat", "nudge:abc")
    assert found is not None and found.body == "Following up"
    assert await client.find_message_by_origin_id("chat", "nudge:other") is None


async def test_update_tags_replaces_the_list(fake: FakeReamaze, client: ReamazeClient) -> None:
    fake.add_conversation("chat", tags=["vip", TAG])
    updated = await client.update_tags("chat", ["vip"])
    assert updated.tag_list == ["vip"]
    assert fake.tags("chat") == ["vip"]
    assert fake.requests[-1] == ("PUT", "/conversations/chat")


async def test_wrong_token_is_rejected(fake: FakeReamaze, server: RunningServer) -> None:
    fake.add_conversation("chat", tags=[TAG])
    async with ReamazeClient(server.url, fake.login_email, "wrong") as client:
        with pytest.raises(Rejected) as error:
            await client.get_conversation("chat")
    assert error.value.status == 401
    assert not isinstance(error.value, NotFound)


async def test_unknown_conversation_is_not_found(client: ReamazeClient) -> None:
    with pytest.raises(NotFound):
        await client.get_conversation("missing")
    with pytest.raises(NotFound):
        await client.list_messages("missing")
    with pytest.raises(NotFound):
        await client.post_message("missing", "Hi", origin_id="nudge:x")
    with pytest.raises(NotFound):
        await client.update_tags("missing", [])


async def test_empty_post_is_rejected_with_the_reason(
    fake: FakeReamaze, client: ReamazeClient
) -> None:
    fake.add_conversation("chat", tags=[TAG])
    with pytest.raises(Rejected) as error:
        await client.post_message("chat", "", origin_id="nudge:empty")
    assert error.value.status == 422
    assert "can't be blank" in str(error.value)
    assert fake.posts_for("chat") == []


async def test_server_error_is_retry_later_then_recovers(
    fake: FakeReamaze, client: ReamazeClient
) -> None:
    fake.add_conversation("chat", tags=[TAG])
    fake.fail_next("GET", "/conversations/chat", 500)
    with pytest.raises(RetryLater) as error:
        await client.get_conversation("chat")
    assert error.value.status == 500
    assert (await client.get_conversation("chat")).slug == "chat"


async def test_failure_on_a_later_page_fails_the_whole_list(
    fake: FakeReamaze, server: RunningServer
) -> None:
    """Half a list would look like "no more tagged conversations"; better to fail it all."""
    for n in range(3):
        fake.add_conversation(f"c{n}", tags=[TAG])
    page_two_fails = AfterFirstResponse(lambda: fake.fail_next("GET", "/conversations", 503))
    async with ReamazeClient(
        server.url, fake.login_email, fake.api_token, transport=page_two_fails
    ) as client:
        with pytest.raises(RetryLater) as error:
            await client.list_conversations(tag=TAG)
    assert error.value.status == 503
    assert page_reads(fake, "/conversations") == 2


async def test_rate_limit_carries_retry_after(fake: FakeReamaze, client: ReamazeClient) -> None:
    fake.add_conversation("chat", tags=[TAG])
    fake.fail_next("POST", "/conversations/chat/messages", 429, retry_after="7")
    with pytest.raises(RetryLater) as error:
        await client.post_message("chat", "Hi", origin_id="nudge:rl")
    assert error.value.status == 429
    assert error.value.retry_after == 7
    assert fake.posts_for("chat") == [], "a refused post is not recorded"


async def test_unexpected_json_is_rejected(fake: FakeReamaze, client: ReamazeClient) -> None:
    fake.fail_next("GET", "/conversations", 200, body={"items": []})
    with pytest.raises(Rejected) as error:
        await client.list_conversations(tag=TAG)
    assert "unexpected JSON" in str(error.value) and "page_count" in str(error.value)


async def test_connection_refused_is_retry_later(fake: FakeReamaze) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    async with ReamazeClient(closed, fake.login_email, fake.api_token, timeout=2) as client:
        with pytest.raises(RetryLater) as error:
            await client.get_conversation("chat")
    assert "connection failed" in str(error.value)


async def test_timeout_is_retry_later_and_the_message_can_be_found(
    fake: FakeReamaze, server: RunningServer, client: ReamazeClient
) -> None:
    fake.add_conversation("chat", tags=[TAG])
    fake.hold_post_response(30)
    async with ReamazeClient(
        server.url, fake.login_email, fake.api_token, timeout=0.5
    ) as impatient:
        with pytest.raises(RetryLater) as error:
            await impatient.post_message("chat", "Hi", origin_id="nudge:lost")
    assert "timed out" in str(error.value)
    assert fake.post_accepted.is_set()
    assert len(fake.posts_for("chat")) == 1, "the provider has it although we never heard"
    found = await client.find_message_by_origin_id("chat", "nudge:lost")
    assert found is not None and found.body == "Hi"
