"""Business events: ``POST /v1/events`` from outside systems (once per idempotency key, for a
contact by id or by address), ``message_received`` for every inbound message, a menu's end
event, and a contact's activity (events, messages both ways) newest first; on SQLite and
PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from domain import limits
from domain.events import Trigger, merge_fields, type_problem
from service import create_app
from settings import Settings, TemporalSettings, TwilioSettings
from store.events import NewLead
from store.models import OutboxMessage
from store.repo import Role, Store
from tests.api_rig import Api
from tests.fakes.server import free_port, serve
from tests.fakes.twilio import FakeTwilio

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
PHONE = "+15551230001"


def lead(store: Store, **given: Any) -> int:
    return store.create_lead(NewLead(**({"phone": PHONE} | given)), now=T0).id


def post_event(api: Api, body: dict[str, Any]) -> httpx.Response:
    return api.client.post("/v1/events", json=body, headers=api.admin)


def activity(api: Api, contact_id: int, **params: Any) -> dict[str, Any]:
    response = api.client.get(
        f"/v1/contacts/{contact_id}/activity", params=params, headers=api.user
    )
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


# -- the pure rules -------------------------------------------------------------------------


def test_event_types_are_slugs_and_the_built_in_triggers_are_among_them() -> None:
    assert all(type_problem(trigger) is None for trigger in Trigger)
    assert type_problem("shop:order.paid-2") is None
    assert type_problem("") is not None
    assert type_problem("Booking") is not None and type_problem("a b") is not None
    assert type_problem("e" * (limits.EVENT_NAME + 1)) is not None


def test_custom_fields_merge_like_a_json_merge_patch() -> None:
    current = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1]}
    patch = {"a": None, "b": {"c": None, "x": {"y": None, "z": 1}}, "e": [2]}
    assert merge_fields(current, patch) == {"b": {"d": 3, "x": {"z": 1}}, "e": [2]}


# -- POST /v1/events ------------------------------------------------------------------------


def test_an_event_is_stored_once_per_idempotency_key(api: Api) -> None:
    contact_id = lead(api.store)
    body = {
        "type": "booking_created",
        "contact_id": contact_id,
        "data": {"starts_at": "2026-03-02T10:00:00Z", "service": "massage"},
        "idempotency_key": "booking-77",
    }
    first = post_event(api, body)
    assert first.status_code == 201, first.text
    event = first.json()
    assert (event["type"], event["contact_id"], event["source"]) == (
        "booking_created",
        contact_id,
        "api",
    )
    assert event["data"] == body["data"] and event["idempotency_key"] == "booking-77"

    again = post_event(api, body | {"data": {"changed": True}})
    assert again.status_code == 200, again.text
    assert again.json() == event, "the stored event, whatever the retry says"
    stored = api.store.list_events(contact_id=contact_id, type_="booking_created")
    assert [e.id for e in stored] == [event["id"]]

    unkeyed = [post_event(api, {"type": "ping", "contact_id": contact_id}) for _ in range(2)]
    assert [r.status_code for r in unkeyed] == [201, 201], "no key: every call is an event"
    assert unkeyed[0].json()["idempotency_key"] is None


def test_an_event_by_address_creates_the_contact_once(api: Api) -> None:
    def raise_for(n: int) -> httpx.Response:
        return post_event(
            api,
            {"type": "session_completed", "email": "New@Example.com", "idempotency_key": f"s{n}"},
        )

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(raise_for, range(6)))
    assert [r.status_code for r in responses] == [201] * 6, [r.text for r in responses]
    (contact,) = api.store.list_contacts()
    assert contact.email == "new@example.com"
    assert {r.json()["contact_id"] for r in responses} == {contact.id}
    assert [e.type for e in api.store.list_events(contact_id=contact.id)] == [
        "session_completed"
    ] * 6, "no new_lead: only POST /v1/contacts makes leads"

    known = post_event(api, {"type": "booking_created", "phone": "(555) 123-0001"})
    assert known.status_code == 201
    by_phone = lead(api.store, phone="+15551230002")
    found = post_event(api, {"type": "booking_created", "phone": "+1 555 123 0002"}).json()
    assert found["contact_id"] == by_phone
    assert len(api.store.list_contacts()) == 3


def test_an_event_for_no_contact_is_a_404(api: Api) -> None:
    response = post_event(api, {"type": "x", "contact_id": 4242})
    assert response.status_code == 404
    assert response.json()["detail"] == "contact_id: no contact 4242"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"type": "Booking Created", "contact_id": 1}, ["body", "type"]),
        ({"type": "t" * (limits.EVENT_NAME + 1), "contact_id": 1}, ["body", "type"]),
        ({"type": "", "contact_id": 1}, ["body", "type"]),
        # Timed by Nudge, never raised: posted, one would run a quiet rule out of turn.
        ({"type": "no_contact_days", "contact_id": 1}, ["body", "type"]),
        ({"type": "booking_reminder_hours", "contact_id": 1}, ["body", "type"]),
        ({"contact_id": 1}, ["body", "type"]),
        ({"type": "x"}, ["body", "contact_id"]),
        ({"type": "x", "contact_id": 1, "email": "a@example.com"}, ["body", "contact_id"]),
        ({"type": "x", "contact_id": 0}, ["body", "contact_id"]),
        ({"type": "x", "email": "not an address"}, ["body", "email"]),
        ({"type": "x", "phone": "12"}, ["body", "phone"]),
        ({"type": "x", "contact_id": 1, "data": [1]}, ["body", "data"]),
        ({"type": "x", "contact_id": 1, "data": {"k": "v" * limits.EVENT_DATA}}, ["body", "data"]),
        ({"type": "x", "contact_id": 1, "data": {"k" * (limits.KEY_NAME + 1): 1}}, ["body", "data"]),
        ({"type": "x", "contact_id": 1, "idempotency_key": "k" * (limits.EVENT_KEY + 1)},
         ["body", "idempotency_key"]),
        ({"type": "x", "contact_id": 1, "idempotency_key": ""}, ["body", "idempotency_key"]),
        ({"type": "x", "contact_id": 1, "kind": "y"}, ["body", "kind"]),
    ],
)  # fmt: skip
def test_bad_events_are_a_422_naming_the_field(
    api: Api, body: dict[str, Any], loc: list[str]
) -> None:
    response = post_event(api, body)
    assert response.status_code == 422, response.text
    assert loc in [e["loc"][: len(loc)] for e in response.json()["detail"]], response.text


def test_raising_an_event_needs_an_admin_token(api: Api) -> None:
    contact_id = lead(api.store)
    body = {"type": "x", "contact_id": contact_id}
    assert api.client.post("/v1/events", json=body, headers=api.user).status_code == 403
    assert api.client.post("/v1/events", json=body).status_code == 401


# -- events Nudge raises itself -------------------------------------------------------------


def test_a_menu_end_event_belongs_to_the_contact_and_is_listed(api: Api) -> None:
    contact_id = lead(api.store)
    assert api.store.record_event(
        f"menu:whatsapp_twilio:{contact_id}:run-1:ordered",
        name="Order.Placed",  # menus' own rule allows capitals
        source="menu:main",
        channel="whatsapp_twilio",
        address=PHONE,
        payload={"menu": "main", "context": {"size": "3"}},
        created_at=T0 + timedelta(minutes=5),
    )
    (item, _) = activity(api, contact_id)["items"]
    assert (item["kind"], item["type"], item["channel"]) == (
        "event",
        "Order.Placed",
        "whatsapp_twilio",
    )
    assert item["data"]["context"] == {"size": "3"}


@pytest.fixture
def twilio_api(any_store: Store, any_db_url: str) -> Iterator[tuple[Api, FakeTwilio, str]]:
    """The API with Twilio's webhooks verified by a fake Twilio's token."""
    fake = FakeTwilio()
    settings = Settings(
        _env_file=None,
        database_url=any_db_url,
        twilio=TwilioSettings(account_sid=fake.account_sid, auth_token=fake.auth_token),
        temporal=TemporalSettings(address=f"127.0.0.1:{free_port()}"),
    )
    with (
        serve(create_app(settings, store=any_store)) as server,
        httpx.Client(base_url=server.url, timeout=15) as client,
    ):
        settings.public_url = server.url
        admin = {"Authorization": f"Bearer {any_store.create_token(Role.admin)}"}
        yield Api(client, any_store, admin=admin, user=admin), fake, server.url


def test_an_inbound_sms_is_a_message_received_event_in_the_activity(
    twilio_api: tuple[Api, FakeTwilio, str],
) -> None:
    api, twilio, url = twilio_api
    created = api.client.post(
        "/v1/contacts", json={"name": "Ana", "phone": PHONE}, headers=api.admin
    )
    contact_id = created.json()["id"]
    sid = "SM" + uuid.uuid4().hex
    form = {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": twilio.account_sid,
        "From": PHONE,
        "To": "+15005550006",
        "Body": "Do you have a slot on Friday?",
        "NumMedia": "0",
    }
    for _ in range(2):  # Twilio retries: one message, one event
        signature = twilio.sign(url + "/webhooks/twilio/inbound", form)
        response = api.client.post(
            "/webhooks/twilio/inbound", data=form, headers={"X-Twilio-Signature": signature}
        )
        assert response.status_code == 200, response.text
    assert len(api.store.list_contacts()) == 1, "the lead's number found the lead"
    items = activity(api, contact_id)["items"]
    assert [(i["kind"], i["type"]) for i in items] == [
        ("message_in", None),
        ("event", Trigger.message_received),
        ("event", Trigger.new_lead),
    ]
    message, received = items[0], items[1]
    assert message["body"] == "Do you have a slot on Friday?" and message["channel"] == "sms"
    assert received["data"]["text"] == "Do you have a slot on Friday?"
    assert received["data"]["inbound_id"] == message["id"]
    assert received["at"] == message["at"]


# -- the activity -----------------------------------------------------------------------------


def test_the_activity_is_newest_first_across_kinds_and_pages_through_all(api: Api) -> None:
    store = api.store
    contact_id = lead(store)  # new_lead at T0
    store.record_inbound("sms", "SM1", PHONE, body="hi", received_at=T0 + timedelta(hours=1))
    row = store.claim_outbox(
        "k1",
        workflow_id="message:k1",
        channel="sms",
        recipient=PHONE,
        body="Hello Ana",
        message_class="marketing",
        contact_id=contact_id,
    )
    with store.sessions.begin() as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.idempotency_key == row.idempotency_key)
            .values(created_at=T0 + timedelta(hours=2))
        )
    store.raise_event(
        "booking_created", data={}, contact_id=contact_id, now=T0 + timedelta(hours=3)
    )
    other = lead(store, phone="+15551230002")
    store.raise_event("booking_created", data={}, contact_id=other, now=T0 + timedelta(hours=4))

    whole = activity(api, contact_id)
    assert whole["next_before"] is None
    assert [(i["kind"], i["type"] or i["body"]) for i in whole["items"]] == [
        ("event", "booking_created"),
        ("message_out", "Hello Ana"),
        ("message_in", "hi"),  # at the same moment as its event: the message first
        ("event", Trigger.message_received),
        ("event", Trigger.new_lead),
    ]
    assert whole["items"][1]["status"] == "pending"

    paged: list[dict[str, Any]] = []
    page = activity(api, contact_id, limit=2)
    while True:
        paged += page["items"]
        if page["next_before"] is None:
            break
        page = activity(api, contact_id, limit=2, before=page["next_before"])
    assert paged == whole["items"]


def test_the_activity_of_no_contact_is_a_404_and_a_bad_cursor_a_422(api: Api) -> None:
    response = api.client.get("/v1/contacts/999/activity", headers=api.user)
    assert response.status_code == 404
    contact_id = lead(api.store)
    for before in ("yesterday", "2026-03-01T12:00:00~event~x", "2026-03-01T12:00:00~event~1"):
        bad = api.client.get(
            f"/v1/contacts/{contact_id}/activity", params={"before": before}, headers=api.user
        )
        assert bad.status_code == 422, before
        assert bad.json()["detail"][0]["loc"] == ["query", "before"]
