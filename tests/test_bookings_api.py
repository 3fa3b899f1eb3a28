"""``/v1/bookings``: a booking is made with its ``booking_created`` event, moved
(``booking_rescheduled``), cancelled or completed (``session_completed``) and then no longer
changes; listed by contact and start time. On SQLite and PostgreSQL, Temporal unreachable:
the booking is saved whatever its reminder could be told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.events import Trigger
from tests.api_rig import Api

NINE_IN_PARIS = "2026-03-02T09:00:00+01:00"
BOOKING = {
    "starts_at": NINE_IN_PARIS,
    "timezone": "Europe/Paris",
    "service": "Initial consultation",
    "location": "12 rue de la Paix",
    "notes": "first visit",
}


def contact(api: Api, email: str = "ana@example.com") -> int:
    response = api.client.post("/v1/contacts", json={"email": email}, headers=api.admin)
    assert response.status_code == 201, response.text
    contact_id: int = response.json()["id"]
    return contact_id


def book(api: Api, contact_id: int, **changes: Any) -> dict[str, Any]:
    body = BOOKING | {"contact_id": contact_id} | changes
    response = api.client.post("/v1/bookings", json=body, headers=api.admin)
    assert response.status_code == 201, response.text
    booking: dict[str, Any] = response.json()
    return booking


def patch(api: Api, booking_id: int, body: dict[str, Any]) -> Any:
    return api.client.patch(f"/v1/bookings/{booking_id}", json=body, headers=api.admin)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def booking_events(api: Api, contact_id: int) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) of the contact's events but ``new_lead``, oldest first."""
    return [
        (e.type, e.data)
        for e in reversed(api.store.list_events(contact_id=contact_id))
        if e.type != Trigger.new_lead
    ]


def undispatched(api: Api) -> set[int]:
    """Events whose rules were not started: the route dispatches a booking's own."""
    soon = datetime.now(UTC) + timedelta(hours=1)
    return set(api.store.undispatched_events(before=soon))


def locs(response: Any) -> list[list[Any]]:
    assert response.status_code == 422, response.text
    return [error["loc"] for error in response.json()["detail"]]


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.text
    return [booking["id"] for booking in response.json()]


def test_a_booking_is_created_with_its_fields_and_a_booking_created_event(api: Api) -> None:
    ana = contact(api)
    booking = book(api, ana)
    assert booking["contact_id"] == ana
    assert at(booking["starts_at"]) == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    assert (booking["timezone"], booking["service"], booking["location"], booking["notes"]) == (
        "Europe/Paris",
        "Initial consultation",
        "12 rue de la Paix",
        "first visit",
    )
    assert booking["status"] == "booked"
    assert booking["created_at"] == booking["updated_at"]
    [event] = [e for e in api.store.list_events(contact_id=ana) if e.type != Trigger.new_lead]
    assert event.type == Trigger.booking_created
    assert event.id not in undispatched(api)
    data = event.data
    assert data["booking_id"] == booking["id"]
    assert data["service"] == "Initial consultation"
    assert at(data["starts_at"]) == at(NINE_IN_PARIS)
    read = api.client.get(f"/v1/bookings/{booking['id']}", headers=api.user)
    assert read.status_code == 200, read.text
    assert read.json() == booking


def test_only_contact_and_start_time_are_needed(api: Api) -> None:
    ana = contact(api)
    body = {"contact_id": ana, "starts_at": NINE_IN_PARIS}
    response = api.client.post("/v1/bookings", json=body, headers=api.admin)
    assert response.status_code == 201, response.text
    found = response.json()
    assert [found[f] for f in ("timezone", "service", "location", "notes")] == [None] * 4


def test_a_start_time_without_an_offset_is_refused_naming_starts_at(api: Api) -> None:
    ana = contact(api)
    body = BOOKING | {"contact_id": ana, "starts_at": "2026-03-02T09:00:00"}
    assert locs(api.client.post("/v1/bookings", json=body, headers=api.admin)) == [
        ["body", "starts_at"]
    ]
    assert api.store.list_bookings(contact_id=ana) == []


def test_a_booking_for_no_contact_is_a_404(api: Api) -> None:
    body = BOOKING | {"contact_id": 999_999}
    response = api.client.post("/v1/bookings", json=body, headers=api.admin)
    assert response.status_code == 404, response.text
    assert response.json()["detail"] == "contact_id: no contact 999999"


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"servce": "Massage"}, ["body", "servce"]),
        ({"timezone": "Paris"}, ["body", "timezone"]),
        ({"service": "x" * 256}, ["body", "service"]),
        ({"contact_id": 0}, ["body", "contact_id"]),
    ],
)
def test_a_wrong_field_is_named(api: Api, change: dict[str, Any], loc: list[str]) -> None:
    ana = contact(api)
    body = BOOKING | {"contact_id": ana} | change
    assert locs(api.client.post("/v1/bookings", json=body, headers=api.admin)) == [loc]
    assert api.store.list_bookings(contact_id=ana) == []


def test_a_new_start_time_is_a_booking_rescheduled_event_from_and_to(api: Api) -> None:
    ana = contact(api)
    booking = book(api, ana)
    moved = patch(api, booking["id"], {"starts_at": "2026-03-03T10:30:00+01:00"})
    assert moved.status_code == 200, moved.text
    assert at(moved.json()["starts_at"]) == datetime(2026, 3, 3, 9, 30, tzinfo=UTC)
    assert moved.json()["service"] == "Initial consultation"
    assert moved.json()["status"] == "booked"
    kind, data = booking_events(api, ana)[-1]
    assert kind == "booking_rescheduled"
    assert (at(data["from"]), at(data["to"])) == (
        at(NINE_IN_PARIS),
        at("2026-03-03T10:30:00+01:00"),
    )
    read = api.client.get(f"/v1/bookings/{booking['id']}", headers=api.user).json()
    assert at(read["starts_at"]) == at("2026-03-03T10:30:00+01:00")


def test_other_changes_are_saved_without_an_event(api: Api) -> None:
    ana = contact(api)
    booking = book(api, ana)
    changed = patch(api, booking["id"], {"location": "https://meet.example.com/x", "notes": None})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["location"], changed.json()["notes"]) == (
        "https://meet.example.com/x",
        None,
    )
    assert changed.json()["service"] == "Initial consultation"
    assert [kind for kind, _ in booking_events(api, ana)] == [Trigger.booking_created]


def test_a_cancelled_booking_cannot_change_any_more(api: Api) -> None:
    ana = contact(api)
    booking = book(api, ana)
    cancelled = patch(api, booking["id"], {"status": "cancelled"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert booking_events(api, ana)[-1][0] == "booking_cancelled"
    for body in ({"starts_at": "2026-03-04T09:00:00+01:00"}, {"status": "completed"}):
        again = patch(api, booking["id"], body)
        assert again.status_code == 409, again.text
        assert again.json()["detail"] == (
            f"booking {booking['id']} is cancelled; it cannot change any more"
        )
    stored = api.store.get_booking(booking["id"])
    assert stored is not None and stored.status == "cancelled"
    assert len(booking_events(api, ana)) == 2


def test_a_completed_booking_is_a_session_completed_event(api: Api) -> None:
    ana = contact(api)
    booking = book(api, ana)
    done = patch(api, booking["id"], {"status": "completed"})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed"
    event = api.store.list_events(contact_id=ana, type_=Trigger.session_completed)[0]
    assert event.id not in undispatched(api)  # Temporal unreachable: its reminder was not told
    data = event.data
    assert (data["booking_id"], data["service"]) == (booking["id"], "Initial consultation")
    assert patch(api, booking["id"], {"notes": "late"}).status_code == 409


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"status": "booked"}, ["body", "status"]),
        ({"status": "done"}, ["body", "status"]),
        ({"status": None}, ["body", "status"]),
        ({"starts_at": None}, ["body", "starts_at"]),
        ({"starts_at": "2026-03-04T09:00:00"}, ["body", "starts_at"]),
        ({"contact_id": 2}, ["body", "contact_id"]),
    ],
)
def test_a_change_a_booking_cannot_take_is_a_422(
    api: Api, body: dict[str, Any], loc: list[str]
) -> None:
    ana = contact(api)
    booking = book(api, ana)
    assert locs(patch(api, booking["id"], body)) == [loc]
    assert api.client.get(f"/v1/bookings/{booking['id']}", headers=api.user).json() == booking


def test_bookings_are_listed_by_contact_and_start_time_earliest_first(api: Api) -> None:
    ana, bo = contact(api), contact(api, "bo@example.com")
    late = book(api, ana, starts_at="2026-03-05T09:00:00+00:00")
    early = book(api, ana, starts_at="2026-03-01T09:00:00+00:00")
    middle = book(api, ana, starts_at="2026-03-03T09:00:00+00:00")
    other = book(api, bo, starts_at="2026-03-02T09:00:00+00:00")

    def listed(**params: Any) -> list[int]:
        return ids(api.client.get("/v1/bookings", params=params, headers=api.user))

    assert listed() == [early["id"], other["id"], middle["id"], late["id"]]
    assert listed(contact_id=ana) == [early["id"], middle["id"], late["id"]]
    assert listed(contact_id=bo) == [other["id"]]
    # ``from`` inclusive, ``to`` exclusive, in any offset
    window = {"from": "2026-03-03T10:00:00+01:00", "to": "2026-03-05T09:00:00Z"}
    assert listed(**window) == [middle["id"]]
    assert listed(contact_id=ana, **{"from": "2026-03-03T09:00:01+00:00"}) == [late["id"]]
    assert listed(contact_id=ana, limit=2, offset=1) == [middle["id"], late["id"]]
    assert patch(api, middle["id"], {"status": "cancelled"}).status_code == 200
    assert listed(status="cancelled") == [middle["id"]]
    assert listed(contact_id=ana, status="booked") == [early["id"], late["id"]]
    assert listed(contact_id=999_999) == []


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"from": "2026-03-03T09:00:00"}, ["query", "from"]),
        ({"to": "tomorrow"}, ["query", "to"]),
        ({"status": "lost"}, ["query", "status"]),
        ({"limit": 501}, ["query", "limit"]),
        ({"limit": 0}, ["query", "limit"]),
        ({"offset": -1}, ["query", "offset"]),
    ],
)
def test_a_wrong_filter_is_named(api: Api, params: dict[str, Any], loc: list[str]) -> None:
    assert locs(api.client.get("/v1/bookings", params=params, headers=api.user)) == [loc]


def test_no_booking_is_a_404(api: Api) -> None:
    read = api.client.get("/v1/bookings/999999", headers=api.user)
    assert (read.status_code, read.json()["detail"]) == (404, "no booking 999999")
    changed = patch(api, 999_999, {"status": "cancelled"})
    assert (changed.status_code, changed.json()["detail"]) == (404, "no booking 999999")
    assert locs(api.client.get("/v1/bookings/0", headers=api.user)) == [["path", "booking_id"]]
    assert locs(api.client.get(f"/v1/bookings/{2**31}", headers=api.user)) == [
        ["path", "booking_id"]
    ]


def test_a_user_token_reads_bookings_but_cannot_write_them(api: Api) -> None:
    ana = contact(api)
    booking = book(api, ana)
    body = BOOKING | {"contact_id": ana}
    made = api.client.post("/v1/bookings", json=body, headers=api.user)
    assert made.status_code == 403, made.text
    changed = api.client.patch(
        f"/v1/bookings/{booking['id']}", json={"status": "cancelled"}, headers=api.user
    )
    assert changed.status_code == 403, changed.text
    assert api.client.get(f"/v1/bookings/{booking['id']}", headers=api.user).json() == booking
    assert ids(api.client.get("/v1/bookings", headers=api.user)) == [booking["id"]]
    assert api.client.get("/v1/bookings").status_code == 401
    assert api.client.post("/v1/bookings", json=body).status_code == 401


def test_a_time_whose_utc_is_before_year_one_is_refused_naming_its_field(api: Api) -> None:
    """Found by schemathesis: a valid time with an offset that Python cannot hold in UTC
    was a 500."""
    ana = contact(api)
    early = "0001-01-01T01:00:00+01:01"
    response = api.client.post(
        "/v1/bookings", json={"contact_id": ana, "starts_at": early}, headers=api.admin
    )
    assert response.status_code == 422, response.text
    assert locs(response) == [["body", "starts_at"]]
    response = api.client.patch(
        f"/v1/contacts/{ana}", json={"last_contacted_at": early}, headers=api.admin
    )
    assert response.status_code == 422, response.text
    assert locs(response) == [["body", "last_contacted_at"]]
    response = api.client.get("/v1/bookings", params={"from": early}, headers=api.user)
    assert response.status_code == 422, response.text
