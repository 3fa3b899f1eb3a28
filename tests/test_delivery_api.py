"""The operators' delivery API (outbox, contacts, suppressions) over real HTTP, on SQLite and
on PostgreSQL: filters, validation, normalisation, conflicts and roles."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from domain.channels import ChannelName
from domain.policy import OptOutSource
from domain.status import OutboxStatus
from integrations.channels import OutboundMessage
from service import create_app
from settings import Settings, TemporalSettings, TwilioSettings, WhatsAppSettings
from store.repo import Store
from tests.api_rig import Api
from tests.fakes.graph import FakeGraph
from tests.fakes.server import free_port, serve
from tests.fakes.twilio import FakeTwilio
from worker import twilio_channel

APP_SECRET = "meta-app-secret-for-tests"
WHATSAPP_NUMBER = "+15005550006"


def outbox(
    store: Store,
    channel: str,
    recipient: str,
    message_class: str,
    contact_id: int | None,
    status: OutboxStatus | None = None,
) -> str:
    key = f"test:{uuid.uuid4().hex}"
    store.claim_outbox(
        key,
        workflow_id=f"wf-{key}",
        channel=channel,
        recipient=recipient,
        body=f"a {message_class} {channel} message",
        message_class=message_class,
        contact_id=contact_id,
    )
    if status is not None:
        store.mark_outbox(key, status, provider_message_id=f"SM{uuid.uuid4().hex}")
    return key


def keys(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [row["idempotency_key"] for row in response.json()]


def query_error(response: httpx.Response) -> list[Any]:
    """The ``loc`` of FastAPI's first validation error."""
    assert response.status_code == 422, response.text
    loc: list[Any] = response.json()["detail"][0]["loc"]
    return loc


# -- outbox --------------------------------------------------------------------------------


def test_outbox_filters(api: Api) -> None:
    store = api.store
    ada = store.upsert_contact("reamaze", "c-ada", name="Ada Lovelace", email="ada@example.com")
    grace = store.upsert_contact("reamaze", "c-grace", name="Grace Hopper", phone="+15550001111")
    sms = outbox(store, "sms", "+15550002222", "transactional", ada, OutboxStatus.sent)
    whatsapp = outbox(store, "whatsapp", "+15550001111", "marketing", grace, OutboxStatus.failed)
    email = outbox(store, "email", "ada@example.com", "marketing", ada)

    def get(**params: Any) -> list[str]:
        return keys(api.client.get("/v1/outbox", params=params, headers=api.user))

    assert get() == [email, whatsapp, sms], "newest first"
    assert get(contact=ada) == [email, sms]
    assert get(contact=grace) == [whatsapp]
    assert get(contact=ada + grace + 1000) == []
    assert get(channel="whatsapp") == [whatsapp]
    assert get(channel="push") == []
    assert get(status="sent") == [sms]
    assert get(status="pending") == [email]
    assert get(status="failed") == [whatsapp]
    assert get(**{"class": "marketing"}) == [email, whatsapp]
    assert get(**{"class": "transactional"}) == [sms]
    assert get(contact=ada, **{"class": "marketing"}) == [email]
    assert get(workflow_id=f"wf-{sms}") == [sms]
    assert get(limit=1, offset=1) == [whatsapp]

    [row] = api.client.get("/v1/outbox", params={"status": "sent"}, headers=api.user).json()
    assert row["channel"] == "sms" and row["recipient"] == "+15550002222"
    assert row["contact_id"] == ada and row["message_class"] == "transactional"
    assert row["provider_message_id"].startswith("SM") and row["sent_at"] is not None
    assert row["attempts"] == 0 and row["error"] is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("contact", "ada"),
        ("channel", "fax"),
        ("status", "lost"),
        ("class", "spam"),
        ("limit", "0"),
        ("offset", "-1"),
    ],
)
def test_outbox_bad_filter_is_422_naming_it(api: Api, name: str, value: str) -> None:
    response = api.client.get("/v1/outbox", params={name: value}, headers=api.user)
    assert query_error(response) == ["query", name]


# -- contacts ------------------------------------------------------------------------------


def test_contacts_list_and_search(api: Api) -> None:
    store = api.store
    ada = store.upsert_contact("reamaze", "c-ada", name="Ada Lovelace", email="ada@example.com")
    grace = store.upsert_contact("reamaze", "c-grace", name="Grace Hopper", phone="+15550001111")
    nameless = store.contact_for("whatsapp", "+15557770000")

    def ids(**params: Any) -> list[int]:
        response = api.client.get("/v1/contacts", params=params, headers=api.user)
        assert response.status_code == 200, response.text
        return [contact["id"] for contact in response.json()]

    assert ids() == [nameless, grace, ada], "newest first"
    assert ids(q="ada") == [ada]
    assert ids(q="LOVELACE") == [ada], "names match in any case"
    assert ids(q="Example.COM") == [ada], "so do e-mail addresses"
    assert ids(q="5550001") == [grace], "phone numbers match in part"
    assert ids(q="+1555") == [nameless, grace]
    assert ids(q="nobody") == []
    assert ids(limit=1, offset=1) == [grace]
    assert query_error(api.client.get("/v1/contacts", params={"limit": 0}, headers=api.user)) == [
        "query",
        "limit",
    ]

    [found] = api.client.get("/v1/contacts", params={"q": "+1555777"}, headers=api.user).json()
    assert found["phone"] == "+15557770000" and found["name"] is None
    assert found["channels"] == [
        {"channel": "whatsapp", "address": "+15557770000", "last_inbound_at": None}
    ]
    assert found["device_tokens"] == []


def test_get_contact_and_unknown_id(api: Api) -> None:
    ada = api.store.upsert_contact("reamaze", "c-ada", name="Ada Lovelace", email="ada@x.org")
    response = api.client.get(f"/v1/contacts/{ada}", headers=api.user)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["name"], body["email"]) == (ada, "Ada Lovelace", "ada@x.org")
    assert body["timezone"] is None and body["channels"] == []

    missing = api.client.get(f"/v1/contacts/{ada + 1000}", headers=api.user)
    assert missing.status_code == 404 and "contact_id" in missing.json()["detail"]
    assert query_error(api.client.get("/v1/contacts/ada", headers=api.user)) == [
        "path",
        "contact_id",
    ]


def test_put_contact_sets_fields_and_replaces_lists(api: Api) -> None:
    store = api.store
    contact = store.contact_for("whatsapp", "+15550004444")
    url = f"/v1/contacts/{contact}"

    def put(body: dict[str, Any]) -> dict[str, Any]:
        response = api.client.put(url, json=body, headers=api.admin)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def channels(body: dict[str, Any]) -> dict[str, str]:
        return {link["channel"]: link["address"] for link in body["channels"]}

    updated = put(
        {
            "name": "Sheena Nelson",
            "timezone": "Europe/Paris",
            "locale": "fr-FR",
            "channels": {"sms": " +1 (555) 000-2222 ", "email": "Sheena@Example.COM"},
            "device_tokens": ["fcm-token-1", "fcm-token-2"],
        }
    )
    assert (updated["name"], updated["timezone"], updated["locale"]) == (
        "Sheena Nelson",
        "Europe/Paris",
        "fr-FR",
    )
    assert channels(updated) == {"sms": "+15550002222", "email": "sheena@example.com"}, (
        "the list is replaced (WhatsApp is gone) and addresses are normalised"
    )
    assert sorted(updated["device_tokens"]) == ["fcm-token-1", "fcm-token-2"]
    assert api.client.get(url, headers=api.user).json() == updated, "it was stored"
    found = store.get_contact(contact)
    assert found is not None and found.timezone == "Europe/Paris"

    tokens = put({"device_tokens": ["fcm-token-3"]})
    assert tokens["device_tokens"] == ["fcm-token-3"]
    assert channels(tokens) == channels(updated), "channels left out are left alone"
    assert tokens["name"] == "Sheena Nelson", "fields left out are left alone"

    cleared = put({"timezone": None, "channels": {"whatsapp": "whatsapp:+15550004444"}})
    assert cleared["timezone"] is None
    assert channels(cleared) == {"whatsapp": "+15550004444"}
    emptied = put({"channels": {}, "device_tokens": []})
    assert (emptied["channels"], emptied["device_tokens"]) == ([], [])
    assert api.client.get(url, headers=api.user).json() == emptied


def test_put_contact_keeps_the_window_of_an_unchanged_address(api: Api) -> None:
    store = api.store
    received = datetime.now(UTC).replace(microsecond=0)
    store.record_inbound("whatsapp", "wamid.1", "+15550005555", body="hi", received_at=received)
    contact = store.contact_for("whatsapp", "+15550005555")
    body = {"channels": {"whatsapp": "15550005555", "sms": "+15550005555"}}
    response = api.client.put(f"/v1/contacts/{contact}", json=body, headers=api.admin)
    assert response.status_code == 200, response.text
    assert store.last_inbound("whatsapp", "+15550005555") == received
    assert store.last_inbound("sms", "+15550005555") is None


def test_put_contact_new_address_does_not_inherit_the_old_window(api: Api) -> None:
    """BUG (store/delivery.py, ContactStore.update_contact): a channel whose address changes is
    updated in place (``existing[channel].address = address``), so the new number keeps the
    old number's ``last_inbound_at`` and the WhatsApp 24-hour window looks open for a number
    that never wrote to us. Expected: the new address has no inbound time."""
    store = api.store
    received = datetime.now(UTC).replace(microsecond=0)
    store.record_inbound("whatsapp", "wamid.2", "+15550006666", body="hi", received_at=received)
    contact = store.contact_for("whatsapp", "+15550006666")
    body = {"channels": {"whatsapp": "+15550007777"}}
    response = api.client.put(f"/v1/contacts/{contact}", json=body, headers=api.admin)
    assert response.status_code == 200, response.text
    assert [link["address"] for link in response.json()["channels"]] == ["+15550007777"]
    assert store.last_inbound("whatsapp", "+15550007777") is None, (
        "+15550007777 never wrote to us, yet it inherited the 24-hour window of +15550006666"
    )


def test_put_contact_timezone_is_validated(api: Api) -> None:
    contact = api.store.upsert_contact("reamaze", "c-1", name="Ada")
    for zone in ("Mars/Base", "../../etc/passwd", ""):
        response = api.client.put(
            f"/v1/contacts/{contact}", json={"timezone": zone, "name": "Changed"}, headers=api.admin
        )
        assert query_error(response) == ["body", "timezone"], zone
        assert "IANA" in response.json()["detail"][0]["msg"]
    found = api.store.get_contact(contact)
    assert found is not None and found.name == "Ada" and found.timezone is None


def test_put_contact_validates_channels(api: Api) -> None:
    contact = api.store.upsert_contact("reamaze", "c-1", name="Ada")
    response = api.client.put(
        f"/v1/contacts/{contact}", json={"channels": {"fax": "+15550001234"}}, headers=api.admin
    )
    assert response.status_code == 422 and "channels" in response.json()["detail"][0]["loc"]


def test_put_contact_address_of_another_contact_is_409(api: Api) -> None:
    store = api.store
    owner = store.contact_for("sms", "+15550008888")
    store.update_contact(owner, fields={}, device_tokens=["owned-token"])
    other = store.upsert_contact("reamaze", "c-other", name="Other")
    store.update_contact(other, fields={}, channels={"email": "other@example.com"})
    before = store.get_contact(other)

    for body in (
        {"name": "Renamed", "channels": {"sms": "+1 555 000 8888"}},
        {"name": "Renamed", "device_tokens": ["mine", "owned-token"]},
    ):
        response = api.client.put(f"/v1/contacts/{other}", json=body, headers=api.admin)
        assert response.status_code == 409, response.text
        assert "another contact" in response.json()["detail"]
        assert store.get_contact(other) == before, "nothing of the refused update was kept"
    owned = store.get_contact(owner)
    assert owned is not None and owned.device_tokens == ["owned-token"]
    assert [link["address"] for link in owned.channels] == ["+15550008888"]


def test_put_unknown_contact_is_404(api: Api) -> None:
    response = api.client.put("/v1/contacts/999999", json={"name": "x"}, headers=api.admin)
    assert response.status_code == 404 and "contact_id" in response.json()["detail"]


# -- suppressions --------------------------------------------------------------------------


def test_suppressions_add_list_remove(api: Api) -> None:
    store = api.store
    added = api.client.post(
        "/v1/suppressions",
        json={"channel": "sms", "address": "+1 (555) 000-3333", "reason": "asked by phone"},
        headers=api.admin,
    )
    assert added.status_code == 201, added.text
    row = added.json()
    assert (row["channel"], row["address"], row["scope"]) == ("sms", "+15550003333", "all")
    assert (row["reason"], row["source"]) == ("asked by phone", "operator")
    assert store.suppression_for("sms", "+15550003333", "transactional") is not None

    marketing = api.client.post(
        "/v1/suppressions",
        json={"channel": "email", "address": " Bob@Example.COM ", "scope": "marketing"},
        headers=api.admin,
    )
    assert marketing.status_code == 201, marketing.text
    assert (marketing.json()["address"], marketing.json()["scope"]) == (
        "bob@example.com",
        "marketing",
    )
    assert store.suppression_for("email", "bob@example.com", "marketing") is not None
    assert store.suppression_for("email", "bob@example.com", "transactional") is None

    again = api.client.post(
        "/v1/suppressions", json={"channel": "sms", "address": "15550003333"}, headers=api.admin
    )
    assert again.status_code == 201 and again.json()["reason"] == "asked by phone", (
        "an existing suppression is left as it was"
    )

    def listed(**params: Any) -> list[tuple[str, str, str]]:
        response = api.client.get("/v1/suppressions", params=params, headers=api.user)
        assert response.status_code == 200, response.text
        return [(r["channel"], r["address"], r["scope"]) for r in response.json()]

    assert listed() == [
        ("email", "bob@example.com", "marketing"),
        ("sms", "+15550003333", "all"),
    ]
    assert listed(channel="sms") == [("sms", "+15550003333", "all")]
    assert listed(channel="sms", address="(555) 000-3333") == [("sms", "+15550003333", "all")], (
        "no country code: read in NUDGE_POLICY__DEFAULT_REGION (US)"
    )
    assert listed(channel="sms", address="+1 555 000 3333") == [("sms", "+15550003333", "all")]
    assert listed(limit=1) == [("email", "bob@example.com", "marketing")]
    bad_channel = api.client.get("/v1/suppressions", params={"channel": "fax"}, headers=api.user)
    assert query_error(bad_channel) == ["query", "channel"]

    removed = api.client.delete(
        "/v1/suppressions",
        params={"channel": "sms", "address": "+1 555-000-3333"},
        headers=api.admin,
    )
    assert removed.status_code == 204, removed.text
    assert store.suppression_for("sms", "+15550003333", "transactional") is None
    gone = api.client.delete(
        "/v1/suppressions", params={"channel": "sms", "address": "+15550003333"}, headers=api.admin
    )
    assert gone.status_code == 404 and "address" in gone.json()["detail"]

    wrong_scope = api.client.delete(
        "/v1/suppressions",
        params={"channel": "email", "address": "bob@example.com", "scope": "all"},
        headers=api.admin,
    )
    assert wrong_scope.status_code == 404
    assert store.suppression_for("email", "bob@example.com", "marketing") is not None
    right_scope = api.client.delete(
        "/v1/suppressions",
        params={"channel": "email", "address": "BOB@example.com", "scope": "marketing"},
        headers=api.admin,
    )
    assert right_scope.status_code == 204
    assert listed() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "fax", "address": "+15550001234"}, "channel"),
        ({"channel": "sms", "address": ""}, "address"),
        ({"channel": "sms", "address": "+15550001234", "scope": "some"}, "scope"),
        ({"address": "+15550001234"}, "channel"),
    ],
)
def test_suppression_validation_names_the_field(api: Api, body: dict[str, str], field: str) -> None:
    response = api.client.post("/v1/suppressions", json=body, headers=api.admin)
    assert query_error(response) == ["body", field]


def test_suppressing_whatsapp_through_twilio_suppresses_the_whatsapp_number(api: Api) -> None:
    """BUG (api/suppressions.py, add_suppression): the API accepts ``whatsapp_twilio`` and stores the
    suppression under that channel name, but the send path looks suppressions up under
    ``whatsapp`` for WhatsApp-through-Twilio (activities/delivery.py INBOUND_CHANNEL), so this
    suppression never stops a message. Expected: refused (422) or stored as ``whatsapp``."""
    response = api.client.post(
        "/v1/suppressions",
        json={"channel": "whatsapp_twilio", "address": "whatsapp:+15550009999"},
        headers=api.admin,
    )
    effective = api.store.suppression_for("whatsapp", "+15550009999", "transactional")
    assert response.status_code == 422 or effective is not None, (
        f"answered {response.status_code} {response.text}, yet a whatsapp_twilio send to "
        "+15550009999 is not suppressed"
    )


# -- tokens and roles ----------------------------------------------------------------------


def test_user_token_reads_but_cannot_write(api: Api) -> None:
    contact = api.store.upsert_contact("reamaze", "c-1", name="Ada")
    api.store.suppress("sms", "+15550001212", scope="all", reason="r", source=OptOutSource.keyword)
    for path in ("/v1/outbox", "/v1/contacts", f"/v1/contacts/{contact}", "/v1/suppressions"):
        assert api.client.get(path, headers=api.user).status_code == 200, path

    writes = [
        api.client.put(f"/v1/contacts/{contact}", json={"name": "x"}, headers=api.user),
        api.client.post(
            "/v1/suppressions",
            json={"channel": "sms", "address": "+15550001313"},
            headers=api.user,
        ),
        api.client.delete(
            "/v1/suppressions",
            params={"channel": "sms", "address": "+15550001212"},
            headers=api.user,
        ),
    ]
    assert [response.status_code for response in writes] == [403, 403, 403]
    assert "admin" in writes[0].json()["detail"]
    found = api.store.get_contact(contact)
    assert found is not None and found.name == "Ada"
    assert api.store.suppression_for("sms", "+15550001313", "transactional") is None
    assert api.store.suppression_for("sms", "+15550001212", "transactional") is not None


def test_no_token_is_401(api: Api) -> None:
    contact = api.store.upsert_contact("reamaze", "c-1", name="Ada")
    bad = {"Authorization": "Bearer ndg_not-a-token"}
    requests = [
        ("GET", "/v1/outbox", None, None),
        ("GET", "/v1/contacts", None, None),
        ("GET", f"/v1/contacts/{contact}", None, None),
        ("PUT", f"/v1/contacts/{contact}", {"name": "x"}, None),
        ("GET", "/v1/suppressions", None, None),
        ("POST", "/v1/suppressions", {"channel": "sms", "address": "+15550001313"}, None),
        ("DELETE", "/v1/suppressions", None, {"channel": "sms", "address": "+15550001313"}),
    ]
    for method, path, body, params in requests:
        for headers in ({}, bad):
            response = api.client.request(method, path, json=body, params=params, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["www-authenticate"] == "Bearer"
    assert api.store.list_suppressions() == []


# -- delivery statuses at the webhooks -------------------------------------------------------


@pytest.fixture
def hooks(any_store: Store, any_db_url: str) -> Iterator[tuple[httpx.Client, FakeTwilio, str]]:
    """The served app with Twilio and WhatsApp webhooks switched on, and a fake Twilio API
    (its URL third) to send through, so status callbacks name real message sids."""
    twilio = FakeTwilio()
    settings = Settings(
        _env_file=None,
        database_url=any_db_url,
        twilio=TwilioSettings(account_sid=twilio.account_sid, auth_token=twilio.auth_token),
        whatsapp=WhatsAppSettings(app_secret=APP_SECRET),
        temporal=TemporalSettings(address=f"127.0.0.1:{free_port()}"),
    )
    with serve(create_app(settings, store=any_store)) as app, serve(twilio.app) as api:
        settings.public_url = app.url  # Twilio signs the URL it calls
        with httpx.Client(base_url=app.url, timeout=15) as client:
            yield client, twilio, api.url


async def _send_whatsapp_via_twilio(twilio: FakeTwilio, api_url: str, to: str) -> str:
    settings = TwilioSettings(
        account_sid=twilio.account_sid,
        auth_token=twilio.auth_token,
        whatsapp_from=WHATSAPP_NUMBER,
        base_url=api_url,
    )
    async with twilio_channel(settings, channel=ChannelName.whatsapp_twilio) as channel:
        message = OutboundMessage(ChannelName.whatsapp_twilio, to, "k", text="Your order")
        return (await channel.send(message)).provider_message_id


def _twilio_status(
    client: httpx.Client, twilio: FakeTwilio, sid: str, status: str, code: int
) -> None:
    params = twilio.status_callback_params(sid, status, error_code=code)
    signature = twilio.sign(f"{client.base_url}/webhooks/twilio/status", params)
    response = client.post(
        "/webhooks/twilio/status", data=params, headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 204, response.text


def _whatsapp_status(client: httpx.Client, wamid: str, status: str, code: int) -> None:
    graph = FakeGraph()
    payload = graph.status(
        wamid, status, "15551230002", error_code=code, error_title="Re-engagement message"
    )
    raw, headers = graph.signed(payload, APP_SECRET)
    response = client.post("/webhooks/whatsapp", content=raw, headers=headers)
    assert response.status_code == 200, response.text


async def test_outside_the_whatsapp_window_is_named_on_failed_statuses(
    any_store: Store, hooks: tuple[httpx.Client, FakeTwilio, str]
) -> None:
    """Twilio's 63016 and Meta's 131047 arrive on a ``failed`` status: the outbox says why
    as the send path does (``outside_whatsapp_window``), and any other code stays as it was."""
    client, twilio, api_url = hooks
    sid = await _send_whatsapp_via_twilio(twilio, api_url, "+15551230002")
    via_twilio = outbox(any_store, "whatsapp_twilio", "+15551230002", "marketing", None)
    any_store.mark_outbox(via_twilio, OutboxStatus.sent, provider_message_id=sid)
    _twilio_status(client, twilio, sid, "failed", 63016)

    wamid = FakeGraph.new_wamid()
    via_meta = outbox(any_store, "whatsapp", "+15551230002", "marketing", None)
    any_store.mark_outbox(via_meta, OutboxStatus.sent, provider_message_id=wamid)
    _whatsapp_status(client, wamid, "failed", 131047)

    other = FakeGraph.new_wamid()
    unrelated = outbox(any_store, "whatsapp", "+15551230002", "marketing", None)
    any_store.mark_outbox(unrelated, OutboxStatus.sent, provider_message_id=other)
    _whatsapp_status(client, other, "failed", 131026)

    rows = {key: any_store.get_outbox(key) for key in (via_twilio, via_meta, unrelated)}
    assert {key: (row.status, row.error) for key, row in rows.items() if row} == {
        via_twilio: (OutboxStatus.failed, "outside_whatsapp_window: provider error 63016"),
        via_meta: (OutboxStatus.failed, "outside_whatsapp_window: provider error 131047"),
        unrelated: (OutboxStatus.failed, "provider error 131026"),
    }


def test_a_status_faster_than_the_send_is_applied_when_the_row_is_marked_sent(
    any_store: Store, hooks: tuple[httpx.Client, FakeTwilio, str]
) -> None:
    """Meta can post ``failed`` before the activity has written the wamid to the outbox:
    the event is kept, applied when the row is marked sent, and its retry is a duplicate."""
    client, _, _ = hooks
    wamid = FakeGraph.new_wamid()
    key = outbox(any_store, "whatsapp", "+15551230002", "marketing", None)
    any_store.mark_outbox(key, OutboxStatus.sending)
    _whatsapp_status(client, wamid, "failed", 131047)
    assert outbox_status(any_store, key) == OutboxStatus.sending, "no row had that wamid yet"

    marked = any_store.mark_outbox(key, OutboxStatus.sent, provider_message_id=wamid)
    assert (marked.status, marked.error) == (
        OutboxStatus.failed,
        "outside_whatsapp_window: provider error 131047",
    )
    assert marked.status_at is not None
    _whatsapp_status(client, wamid, "failed", 131047)  # Meta retries the webhook
    assert any_store.get_outbox(key) == marked


def outbox_status(store: Store, key: str) -> OutboxStatus:
    found = store.get_outbox(key)
    assert found is not None
    return found.status
