"""Leads are contacts: ``POST /v1/contacts`` makes one with its ``new_lead`` event, ``PATCH``
changes only what it is given and a new status is a ``lead_status_changed`` event; on SQLite
and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from domain import limits
from domain.events import Trigger
from tests.api_rig import Api

LEAD = {
    "name": "Ana Lima",
    "email": "Ana@Example.com",
    "phone": "+1 (555) 123-0001",
    "status": "new",
    "source": "facebook_ad",
    "tags": ["vip", "spring"],
    "fields": {"budget": 1200, "plan": {"size": "m"}},
    "timezone": "Europe/Paris",
    "locale": "pt-BR",
}


def create(api: Api, **changes: Any) -> dict[str, Any]:
    response = api.client.post("/v1/contacts", json=LEAD | changes, headers=api.admin)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def events(api: Api, contact_id: int) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) of the contact's events, oldest first."""
    return [(e.type, e.data) for e in reversed(api.store.list_events(contact_id=contact_id))]


def test_a_lead_is_created_with_its_fields_and_a_new_lead_event(api: Api) -> None:
    lead = create(api)
    assert lead["name"] == "Ana Lima"
    assert (lead["email"], lead["phone"]) == ("ana@example.com", "+15551230001")
    assert (lead["status"], lead["source"]) == ("new", "facebook_ad")
    assert lead["tags"] == ["vip", "spring"]
    assert lead["fields"] == {"budget": 1200, "plan": {"size": "m"}}
    assert (lead["timezone"], lead["locale"], lead["last_contacted_at"]) == (
        "Europe/Paris",
        "pt-BR",
        None,
    )
    channels = {(c["channel"], c["address"]) for c in lead["channels"]}
    assert channels == {
        ("email", "ana@example.com"),
        ("sms", "+15551230001"),
        ("whatsapp", "+15551230001"),
    }
    assert events(api, lead["id"]) == [
        (Trigger.new_lead, {"status": "new", "source": "facebook_ad", "tags": ["vip", "spring"]})
    ]
    read = api.client.get(f"/v1/contacts/{lead['id']}", headers=api.user).json()
    assert read == lead
    listed = api.client.get("/v1/contacts", params={"q": "ana"}, headers=api.user).json()
    assert [c["id"] for c in listed] == [lead["id"]]


def test_a_lead_needs_an_address_and_a_phone_number_alone_will_do(api: Api) -> None:
    response = api.client.post("/v1/contacts", json={"name": "Nobody"}, headers=api.admin)
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "email"]]
    lead = api.client.post("/v1/contacts", json={"phone": "+15551230002"}, headers=api.admin)
    assert lead.status_code == 201, lead.text
    assert (lead.json()["email"], lead.json()["tags"], lead.json()["fields"]) == (None, [], {})


@pytest.mark.parametrize(
    "duplicate",
    [{"email": "ANA@example.com", "phone": None}, {"email": None, "phone": "+15551230001"}],
)
def test_an_address_that_is_taken_is_a_409_naming_its_contact(
    api: Api, duplicate: dict[str, Any]
) -> None:
    first = create(api)
    given = {k: v for k, v in duplicate.items() if v}
    response = api.client.post("/v1/contacts", json={"name": "Again", **given}, headers=api.admin)
    assert response.status_code == 409, response.text
    field = next(iter(given))
    assert response.json()["detail"] == f"{field}: already the address of contact {first['id']}"
    assert response.headers["location"] == f"/v1/contacts/{first['id']}"
    assert len(api.store.list_contacts()) == 1


def test_an_address_a_customer_wrote_from_is_taken_too(api: Api) -> None:
    contact_id = api.store.contact_for("whatsapp", "+15551230009")
    response = api.client.post("/v1/contacts", json={"phone": "+15551230009"}, headers=api.admin)
    assert response.status_code == 409
    assert str(contact_id) in response.json()["detail"]


def test_patch_changes_only_the_fields_given_and_merges_custom_fields(api: Api) -> None:
    lead = create(api)
    response = api.client.patch(
        f"/v1/contacts/{lead['id']}",
        json={
            "tags": ["vip"],
            "fields": {"budget": None, "plan": {"color": "red"}, "city": "Lisbon"},
            "source": "referral",
            "last_contacted_at": "2026-03-01T12:00:00+01:00",
        },
        headers=api.admin,
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["fields"] == {"plan": {"size": "m", "color": "red"}, "city": "Lisbon"}
    assert (patched["tags"], patched["source"]) == (["vip"], "referral")
    assert patched["last_contacted_at"].startswith("2026-03-01T11:00:00")
    unchanged = ("name", "email", "phone", "status", "timezone", "locale", "channels")
    assert {k: patched[k] for k in unchanged} == {k: lead[k] for k in unchanged}
    assert [t for t, _ in events(api, lead["id"])] == [Trigger.new_lead], "no status change"

    cleared = api.client.patch(
        f"/v1/contacts/{lead['id']}", json={"fields": None, "name": None}, headers=api.admin
    ).json()
    assert (cleared["fields"], cleared["name"], cleared["tags"]) == ({}, None, ["vip"])


def test_a_status_change_is_an_event_with_from_and_to(api: Api) -> None:
    lead = create(api)
    for status in ("contacted", "contacted", "won"):
        response = api.client.patch(
            f"/v1/contacts/{lead['id']}", json={"status": status}, headers=api.admin
        )
        assert response.status_code == 200 and response.json()["status"] == status
    assert events(api, lead["id"])[1:] == [
        (Trigger.lead_status_changed, {"from": "new", "to": "contacted"}),
        (Trigger.lead_status_changed, {"from": "contacted", "to": "won"}),
    ]


def test_patch_to_another_contacts_address_is_a_409(api: Api) -> None:
    first = create(api)
    second = create(api, email="bo@example.com", phone="+15551230003")
    response = api.client.patch(
        f"/v1/contacts/{second['id']}", json={"phone": "+15551230001"}, headers=api.admin
    )
    assert response.status_code == 409
    assert response.json()["detail"] == f"phone: already the address of contact {first['id']}"
    own = api.client.patch(
        f"/v1/contacts/{first['id']}", json={"phone": "+15551230001"}, headers=api.admin
    )
    assert own.status_code == 200, "its own address is no conflict"


def test_patch_of_no_contact_is_a_404(api: Api) -> None:
    response = api.client.patch("/v1/contacts/999", json={"status": "x"}, headers=api.admin)
    assert response.status_code == 404
    assert response.json()["detail"] == "contact_id: no contact 999"


@pytest.mark.parametrize(
    ("method", "body", "loc"),
    [
        ("post", {"email": "not an address"}, ["body", "email"]),
        ("post", {"phone": "call me"}, ["body", "phone"]),
        ("post", LEAD | {"status": "s" * (limits.LEAD_STATUS + 1)}, ["body", "status"]),
        ("post", LEAD | {"source": "s" * (limits.LEAD_SOURCE + 1)}, ["body", "source"]),
        ("post", LEAD | {"tags": ["t"] * (limits.MAX_TAGS + 1)}, ["body", "tags"]),
        ("post", LEAD | {"tags": ["t" * (limits.TAG + 1)]}, ["body", "tags", 0]),
        ("post", LEAD | {"tags": [""]}, ["body", "tags", 0]),
        ("post", LEAD | {"fields": {"k": "v" * limits.CUSTOM_FIELDS}}, ["body", "fields"]),
        ("post", LEAD | {"fields": ["a list"]}, ["body", "fields"]),
        ("post", LEAD | {"timezone": "Mars/Olympus"}, ["body", "timezone"]),
        ("post", LEAD | {"colour": "red"}, ["body", "colour"]),
        ("patch", {"last_contacted_at": "2026-03-01T12:00:00"}, ["body", "last_contacted_at"]),
        ("patch", {"email": "@"}, ["body", "email"]),
        ("patch", {"status": 3}, ["body", "status"]),
    ],
)
def test_bad_input_is_a_422_naming_the_field(
    api: Api, method: str, body: dict[str, Any], loc: list[str | int]
) -> None:
    lead = create(api, email="c@example.com", phone="+15551230004")
    path = "/v1/contacts" if method == "post" else f"/v1/contacts/{lead['id']}"
    response = api.client.request(method, path, json=body, headers=api.admin)
    assert response.status_code == 422, response.text
    assert loc in [e["loc"][: len(loc)] for e in response.json()["detail"]], response.text


def test_merged_custom_fields_over_the_limit_are_a_422(api: Api) -> None:
    lead = create(api, fields={"a": "x" * (limits.CUSTOM_FIELDS // 2)})
    response = api.client.patch(
        f"/v1/contacts/{lead['id']}",
        json={"fields": {"b": "y" * (limits.CUSTOM_FIELDS // 2)}},
        headers=api.admin,
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "fields"]


def test_creating_and_changing_a_lead_needs_an_admin_token(api: Api) -> None:
    assert api.client.post("/v1/contacts", json=LEAD, headers=api.user).status_code == 403
    lead = create(api)
    patch = api.client.patch(f"/v1/contacts/{lead['id']}", json={}, headers=api.user)
    assert patch.status_code == 403


def test_a_lead_imported_with_its_last_contact_keeps_it(api: Api) -> None:
    """A lead moved from another system says when it was last contacted (no_contact_days
    rules count from it); a time without a zone is refused."""
    lead = create(api, last_contacted_at="2026-11-30T09:00:00+01:00")
    assert lead["last_contacted_at"] == "2026-11-30T08:00:00Z"
    response = api.client.post(
        "/v1/contacts",
        json={"email": "zone@example.com", "last_contacted_at": "2026-11-30T09:00:00"},
        headers=api.admin,
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "last_contacted_at"]
