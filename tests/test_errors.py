"""Every mistake named when it is made: the HTTP service on 127.0.0.1 (SQLite and PostgreSQL)
answering a new user's first mistakes. Each test says what the answer was before and what it
is now.

Temporal stands in as reachable (a route that starts a workflow asks for the client before its
body is checked, and an unreachable Temporal answers 503 first): nothing here gets as far as
starting one, which is the point.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dependencies import get_temporal
from service import create_app
from settings import PolicySettings, Settings
from store.repo import Role, Store
from tests.api_rig import Api
from tests.fakes.server import serve


def service(store: Store, db_url: str, **settings: Any) -> Iterator[Api]:
    app = create_app(Settings(_env_file=None, database_url=db_url, **settings), store=store)
    app.dependency_overrides[get_temporal] = lambda: None  # never reached: bodies are refused
    with serve(app) as server, httpx.Client(base_url=server.url, timeout=15) as client:
        yield Api(
            client,
            store,
            admin={"Authorization": f"Bearer {store.create_token(Role.admin)}"},
            user={"Authorization": f"Bearer {store.create_token(Role.user)}"},
        )


@pytest.fixture
def http(any_store: Store, any_db_url: str) -> Iterator[Api]:
    yield from service(any_store, any_db_url)


def detail(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    errors: list[dict[str, Any]] = response.json()["detail"]
    return errors


def messages(response: httpx.Response) -> list[tuple[list[Any], str]]:
    return [(error["loc"], error["msg"]) for error in detail(response)]


# -- 1. webhooks whose secret is not configured --------------------------------------------


def test_a_whatsapp_webhook_without_an_app_secret_names_the_setting(api: Api) -> None:
    """Before: 403 "X-Hub-Signature-256 does not match" (whatever was sent).
    After: 403 "not configured: set NUDGE_WHATSAPP__APP_SECRET (...)"."""
    response = api.client.post(
        "/webhooks/whatsapp", content=b"{}", headers={"X-Hub-Signature-256": "sha256=00"}
    )
    assert response.status_code == 403
    assert response.json()["detail"] == (
        "not configured: set NUDGE_WHATSAPP__APP_SECRET (the app secret that signs "
        "X-Hub-Signature-256)"
    )


def test_a_whatsapp_subscription_without_a_verify_token_names_the_setting(api: Api) -> None:
    """Before: 403 "hub.verify_token does not match". After: names the setting."""
    query = {"hub.mode": "subscribe", "hub.verify_token": "x", "hub.challenge": "42"}
    response = api.client.get("/webhooks/whatsapp", params=query)
    assert response.status_code == 403
    assert response.json()["detail"] == (
        "not configured: set NUDGE_WHATSAPP__VERIFY_TOKEN (the verify token you give Meta)"
    )


@pytest.mark.parametrize("path", ["/webhooks/twilio/inbound", "/webhooks/twilio/status"])
def test_a_twilio_webhook_without_an_auth_token_names_the_setting(api: Api, path: str) -> None:
    """Before: 403 "X-Twilio-Signature does not match". After: names the setting."""
    response = api.client.post(
        path,
        data={"MessageSid": "SM1", "From": "+15551234567"},
        headers={"X-Twilio-Signature": "x"},
    )
    assert response.status_code == 403
    assert response.json()["detail"] == (
        "not configured: set NUDGE_TWILIO__AUTH_TOKEN (the auth token that signs "
        "X-Twilio-Signature)"
    )


def test_a_wrong_signature_with_a_secret_configured_still_does_not_match(
    any_store: Store, any_db_url: str
) -> None:
    for http in service(
        any_store, any_db_url, whatsapp={"app_secret": "s"}, twilio={"auth_token": "t"}
    ):
        whatsapp = http.client.post(
            "/webhooks/whatsapp", content=b"{}", headers={"X-Hub-Signature-256": "sha256=00"}
        )
        assert (whatsapp.status_code, whatsapp.json()["detail"]) == (
            403,
            "X-Hub-Signature-256 does not match",
        )
        twilio = http.client.post("/webhooks/twilio/inbound", data={"MessageSid": "SM1"})
        assert (twilio.status_code, twilio.json()["detail"]) == (
            403,
            "X-Twilio-Signature does not match",
        )


# -- 2. addresses checked on the way in ----------------------------------------------------


def test_a_message_to_something_that_is_not_a_phone_number_is_a_422_not_a_sandboxed_row(
    http: Api,
) -> None:
    """Before: 202, and the worker recorded the message as ``sandboxed`` (or the provider
    refused it later). After: 422 naming ``to``; nothing is started or recorded."""
    body = {"channel": "sms", "to": "not-a-phone", "text": "hi"}
    response = http.client.post("/v1/messages", json=body, headers=http.admin)
    assert messages(response) == [
        (
            ["body", "to"],
            'to: "not-a-phone" is not a phone number (write it in international form, '
            "e.g. +15551234567)",
        )
    ]
    assert http.store.list_outbox() == []


def test_a_message_to_something_that_is_not_an_e_mail_address_is_a_422(http: Api) -> None:
    body = {"channel": "email", "to": "ann.example.com", "subject": "s", "text": "hi"}
    response = http.client.post("/v1/messages", json=body, headers=http.admin)
    assert messages(response) == [
        (
            ["body", "to"],
            'to: "ann.example.com" is not an e-mail address: an email address must have an @-sign.',
        )
    ]


def test_every_address_of_a_contact_at_fault_comes_in_one_422(http: Api) -> None:
    """Before: stored as given (``+`` and whatever digits were in it, ``not-an-email``).
    After: one 422 naming each address at fault; nothing is stored."""
    contact = http.store.upsert_contact("reamaze", "c-1", name="Ann")
    body = {
        "email": "not-an-email",
        "phone": "12",
        "channels": {"sms": "+15551234567", "whatsapp": "call me"},
    }
    response = http.client.put(f"/v1/contacts/{contact}", json=body, headers=http.admin)
    assert messages(response) == [
        (
            ["body", "channels", "whatsapp"],
            'channels.whatsapp: "call me" is not a phone number (write it in international '
            "form, e.g. +15551234567)",
        ),
        (
            ["body", "email"],
            'email: "not-an-email" is not an e-mail address: an email address must have an @-sign.',
        ),
        (
            ["body", "phone"],
            'phone: "12" is not a phone number: it is too short, read as a number of US '
            "(write it in international form, e.g. +15551234567)",
        ),
    ]
    stored = http.store.get_contact(contact)
    assert stored is not None and stored.email is None and stored.channels == []


def test_a_national_number_is_read_in_the_default_region(any_store: Store, any_db_url: str) -> None:
    """``NUDGE_POLICY__DEFAULT_REGION``: before, ``07700 900123`` was stored as
    ``+07700900123`` (a number nobody has); now as ``+447700900123`` in GB."""
    for http in service(any_store, any_db_url, policy=PolicySettings(default_region="GB")):
        contact = http.store.upsert_contact("reamaze", "c-2", name="Bea")
        body = {"phone": "07700 900123", "channels": {"whatsapp_twilio": "07700 900124"}}
        response = http.client.put(f"/v1/contacts/{contact}", json=body, headers=http.admin)
        assert response.status_code == 200, response.text
        assert response.json()["phone"] == "+447700900123"
        assert [(c["channel"], c["address"]) for c in response.json()["channels"]] == [
            ("whatsapp", "+447700900124")
        ]
        added = http.client.post(
            "/v1/suppressions", json={"channel": "sms", "address": "07700 900125"},
            headers=http.admin,
        )  # fmt: skip
        assert added.status_code == 201, added.text
        assert added.json()["address"] == "+447700900125"


def test_a_suppression_of_an_address_nothing_could_reach_is_a_422(http: Api) -> None:
    """Before: stored (``POST``) or 404 "is not suppressed" (``DELETE``). After: 422."""
    added = http.client.post(
        "/v1/suppressions", json={"channel": "whatsapp", "address": "n/a"}, headers=http.admin
    )
    assert messages(added) == [
        (
            ["body", "address"],
            'address: "n/a" is not a phone number (write it in international form, '
            "e.g. +15551234567)",
        )
    ]
    removed = http.client.delete(
        "/v1/suppressions", params={"channel": "email", "address": "bob"}, headers=http.admin
    )
    assert messages(removed) == [
        (
            ["query", "address"],
            'address: "bob" is not an e-mail address: an email address must have an @-sign.',
        )
    ]
    assert http.store.list_suppressions() == []


# -- 3. 422s a person understands ----------------------------------------------------------


def test_invalid_json_says_where(http: Api) -> None:
    """Before: ``{"loc": ["body", 18], "msg": "JSON decode error", "ctx": {"error":
    "Expecting ',' delimiter"}}``. After: the sentence below, at ``["body"]``."""
    response = http.client.post(
        "/v1/suppressions",
        content=b'{"channel": "sms" "address": "+15551234567"}',
        headers={**http.admin, "Content-Type": "application/json"},
    )
    assert messages(response) == [
        (["body"], "the body is not valid JSON: Expecting ',' delimiter at line 1, column 19")
    ]


@pytest.mark.parametrize(
    ("content_type", "said"),
    [(None, "no Content-Type"), ("text/plain", "Content-Type: text/plain")],
)
def test_a_body_sent_without_the_json_content_type_says_so(
    http: Api, content_type: str | None, said: str
) -> None:
    """Before: "Input should be a valid dictionary or object to extract fields from", with the
    whole body echoed as ``input``. After: what to send, and what was sent."""
    headers = dict(http.admin)
    if content_type:
        headers["Content-Type"] = content_type
    body = json.dumps({"channel": "sms", "address": "+15551234567"}).encode()
    response = http.client.post("/v1/suppressions", content=body, headers=headers)
    assert messages(response) == [
        (
            ["body"],
            f"send the body as JSON with Content-Type: application/json (the request had {said})",
        )
    ]
    assert "input" not in detail(response)[0]


def test_a_body_that_is_json_but_not_an_object_says_so(http: Api) -> None:
    response = http.client.post("/v1/suppressions", json=["sms"], headers=http.admin)
    assert messages(response) == [(["body"], "the body must be a JSON object ({...}), not a list")]


def test_a_422_never_echoes_more_than_200_characters(http: Api) -> None:
    """Before: a message missing its channel came back with its whole body (here a text of
    4,000 characters) as ``input``. After: at most 200 characters of it, then "…"."""
    body = {"to": "+15551234567", "text": "x" * 4000}
    response = http.client.post("/v1/messages", json=body, headers=http.admin)
    [error] = detail(response)
    assert error["loc"] == ["body", "channel"] and error["msg"] == "Field required"
    assert isinstance(error["input"], str) and len(error["input"]) == 201
    assert error["input"].endswith("…") and len(response.content) < 1000


def test_a_misspelled_required_field_is_one_error_suggesting_the_right_name(http: Api) -> None:
    """Before: "adress" silently ignored and ``address`` "Field required". After: one error,
    at the misspelled name."""
    response = http.client.post(
        "/v1/suppressions", json={"channel": "sms", "adress": "+15551234567"}, headers=http.admin
    )
    assert messages(response) == [
        (["body", "adress"], "'adress' is not a field; did you mean 'address'?")
    ]


def test_a_misspelled_optional_field_is_named_not_ignored(http: Api) -> None:
    """Before: "txt" ignored, then ``["body"]`` "Value error, text: a message needs text, a
    template, an interactive object or data". After: the misspelled field, once."""
    body = {"channel": "email", "to": "ann@example.com", "subject": "s", "txt": "hi"}
    response = http.client.post("/v1/messages", json=body, headers=http.admin)
    assert messages(response) == [(["body", "txt"], "'txt' is not a field here")]


def test_a_misspelled_channel_is_one_error(http: Api) -> None:
    body = {"channel": "smss", "to": "+15551234567", "text": "hi"}
    response = http.client.post("/v1/messages", json=body, headers=http.admin)
    assert [error["loc"] for error in detail(response)] == [["body", "channel"]]
    contact = http.store.upsert_contact("reamaze", "c-3", name="Cy")
    response = http.client.put(
        f"/v1/contacts/{contact}", json={"channels": {"smss": "+15551234567"}}, headers=http.admin
    )
    assert [error["loc"] for error in detail(response)] == [["body", "channels", "smss", "[key]"]]


def test_a_rule_across_fields_reads_without_pydantics_prefix(http: Api) -> None:
    """Before: "Value error, subject: an e-mail needs a subject". After: without "Value error, "."""
    body = {"channel": "email", "to": "ann@example.com", "text": "hi"}
    response = http.client.post("/v1/messages", json=body, headers=http.admin)
    assert messages(response) == [(["body"], "subject: an e-mail needs a subject")]


# -- menus: one error per mistake, all of them in one response ------------------------------


def test_a_menu_step_field_of_the_wrong_kind_is_one_error_each(http: Api) -> None:
    """Before: seven errors for three mistakes, at locs such as ``[..., "message", "str"]``
    and ``[..., "message", "dict[str,any]"]`` ("Input should be a valid string" / "... a valid
    dictionary"). After: one per field, saying what goes there."""
    step = {"message": 5, "next": 7, "validate": 3}
    menu = {"name": "m", "start": "a", "steps": {"a": step}}
    response = http.client.post("/v1/menus", json=menu, headers=http.admin)
    assert messages(response) == [
        (
            ["body", "steps", "a", "message"],
            'write the message as text, or as a WhatsApp interactive object ({"type": '
            '"button", "body": ..., "action": ...})',
        ),
        (
            ["body", "steps", "a", "next"],
            "write next as a step's name, or as {reply id: step} for a menu",
        ),
        (
            ["body", "steps", "a", "validate"],
            "write validate as a built-in check (number, email, phone, date), a list of "
            "accepted answers or {regex: <pattern>}",
        ),
    ]


def test_an_unknown_built_in_check_is_one_error(http: Api) -> None:
    """Before: three errors (``literal[...]``, ``list[str]``, ``dict[str,str]``)."""
    step = {"message": "Your e-mail?", "save_as": "email", "validate": "mail", "next": "b"}
    menu = {"name": "m", "start": "a", "steps": {"a": step, "b": {"message": "ok", "end": True}}}
    response = http.client.post("/v1/menus", json=menu, headers=http.admin)
    assert messages(response) == [
        (
            ["body", "steps", "a", "validate"],
            "'mail' is not a built-in check; use number, email, phone, date",
        )
    ]


def buttons_menu(**extra: Any) -> dict[str, Any]:
    reply = {"type": "reply", "reply": {"id": "order", "title": "Place a new order now!"}}
    message = {"type": "button", "body": {"text": "Hi"}, "action": {"buttons": [reply]}}
    step = {"message": message, "next": {"order": "nowhere"}}
    return {"name": "shop", "start": "a", "steps": {"a": step}, **extra}


def test_all_of_a_menus_problems_come_in_one_response(http: Api) -> None:
    """Before: only ``["body", "colour"]`` "Extra inputs are not permitted"; the unknown
    ``next`` target and the button title over 20 characters came one fix later. After: all
    three at once."""
    response = http.client.post("/v1/menus", json=buttons_menu(colour="red"), headers=http.admin)
    assert messages(response) == [
        (["body", "colour"], "'colour' is not a field here"),
        (
            ["body", "steps", "a", "message", "action", "buttons", 0, "reply", "title"],
            "button title is 22 characters; WhatsApp allows at most 20",
        ),
        (
            ["body", "steps", "a", "next", "order"],
            "'nowhere' is neither a step of this menu nor another menu",
        ),
    ]
    assert http.store.get_menu("shop") is None


def test_a_step_whose_message_is_at_fault_hides_no_other_steps_problems(http: Api) -> None:
    menu = buttons_menu()
    menu["steps"]["b"] = {"message": ["not", "text"], "next": "a", "oops": 1}
    menu["steps"]["a"]["next"]["order"] = "b"
    menu["steps"]["a"]["message"]["action"]["buttons"][0]["reply"]["title"] = "Order"
    menu["steps"]["c"] = {"message": "bye {nobody}", "end": True}
    response = http.client.put("/v1/menus/shop", json=menu, headers=http.admin)
    assert messages(response) == [
        (
            ["body", "steps", "b", "message"],
            'write the message as text, or as a WhatsApp interactive object ({"type": '
            '"button", "body": ..., "action": ...})',
        ),
        (["body", "steps", "b", "oops"], "'oops' is not a field here"),
        (
            ["body", "steps", "c"],
            "no path from start 'a' reaches this step; link it from another step's next or "
            "remove it",
        ),
    ]


def test_a_put_whose_body_names_another_menu_reports_the_rest_too(http: Api) -> None:
    """Before: only "must be 'shop', the name in the path, or be left out"."""
    response = http.client.put(
        "/v1/menus/shop", json=buttons_menu(name="shops"), headers=http.admin
    )
    assert [error["loc"] for error in detail(response)] == [
        ["body", "name"],
        ["body", "steps", "a", "message", "action", "buttons", 0, "reply", "title"],
        ["body", "steps", "a", "next", "order"],
    ]
