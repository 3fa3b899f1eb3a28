"""Paid follow-ups over real HTTP, on SQLite and on PostgreSQL, against the Temporal dev
server: ``/v1/scheduled-followups``, ``/v1/contacts/{id}/credits``, ``/v1/followup-settings``
and ``POST /v1/sessions/{id}/complete``. Each test checks the answer (its status, the field
it names) and what was kept: the schedules listed and the ledger's entries.

Follow-ups are scheduled days ahead, so nothing is sent here (``test_scheduled_followups_e2e``
sends). Moving and cancelling are updates the running workflow answers, so the tests that do
either run a real worker; the others need none, only a server to start workflows on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from service import create_app
from settings import PolicySettings, Settings, TemporalSettings
from store.repo import Role, Store
from tests.fakes.server import serve
from tests.waiting import PATIENCE
from worker import build_activities, build_worker

FOLLOWUPS = "/v1/scheduled-followups"
SETTINGS = "/v1/followup-settings"
DEFAULTS = {
    "auto_followup_enabled": True,
    "default_credits_cost": 5,
    "max_followups_per_session": 3,
    "min_interval_hours": 24,
    "max_interval_days": 30,
    "enable_credit_charging": True,
    "enable_analytics": True,
    "refund_on_cancel": True,
    "refund_on_failure": True,
}
"""The original system's settings and defaults, and Nudge's two refund switches."""


@dataclass
class Rest:
    client: httpx.AsyncClient
    store: Store
    settings: Settings
    env: WorkflowEnvironment
    admin: dict[str, str]

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        expect: int,
        as_: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """The answer's JSON, once its status was ``expect`` (else the test fails on it)."""
        answer = await self.client.request(
            method, path, json=body, params=params, headers=self.admin if as_ is None else as_
        )
        assert answer.status_code == expect, f"{method} {path}: {answer.text}"
        return answer.json() if answer.content else None

    async def contact(self, name: str, email: str | None = None, **fields: Any) -> int:
        email = email if email is not None else f"{name.lower()}@example.com"
        body = {"name": name, **({"email": email} if email else {}), **fields}
        contact_id: int = (await self.call("POST", "/v1/contacts", body, expect=201))["id"]
        return contact_id

    async def grant(self, contact_id: int, amount: int, key: str = "bought") -> dict[str, Any]:
        found: dict[str, Any] = await self.call(
            "POST",
            f"/v1/contacts/{contact_id}/credits",
            {"kind": "grant", "amount": amount, "reason": "bought", "idempotency_key": key},
            expect=201,
        )
        return found

    async def template(self, name: str = "checkin", **fields: Any) -> dict[str, Any]:
        found: dict[str, Any] = await self.call(
            "POST", "/v1/templates", template_body(name, **fields), expect=201
        )
        return found

    async def schedule(
        self, expect: int = 201, *, as_: dict[str, str] | None = None, **fields: Any
    ) -> dict[str, Any]:
        body = {"template": "checkin", "variables": {"service_type": "tarot"}} | fields
        found: dict[str, Any] = await self.call("POST", FOLLOWUPS, body, expect=expect, as_=as_)
        return found

    async def credits(self, contact_id: int, **params: Any) -> dict[str, Any]:
        found: dict[str, Any] = await self.call(
            "GET", f"/v1/contacts/{contact_id}/credits", expect=200, params=params
        )
        return found

    async def listed(self, **params: Any) -> list[int]:
        """The ids ``GET /v1/scheduled-followups`` answers with these filters, in order."""
        found = await self.call("GET", FOLLOWUPS, expect=200, params=params)
        return [item["id"] for item in found]

    async def token_for(self, contact_id: int) -> dict[str, str]:
        made = await self.call("POST", f"/v1/contacts/{contact_id}/tokens", {}, expect=201)
        return {"Authorization": f"Bearer {made['token']}"}


def template_body(name: str = "checkin", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "channel": "email",
        "subject": "How are you, {{user_name}}?",
        "variants": {"en": "Dear {{user_name}}, how did {{service_type}} go?"},
        "variables": ["user_name", "service_type"],
        "template_type": "check_in",
        "credits_cost": 5,
    } | fields


def days(n: float) -> str:
    """``n`` days from now, with its offset, as a caller writes it."""
    return (datetime.now(UTC) + timedelta(days=n)).isoformat()


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def kinds(credits: dict[str, Any]) -> list[str]:
    return [entry["kind"] for entry in credits["entries"]]


def balance(credits: dict[str, Any]) -> tuple[int, int, int]:
    return credits["balance"], credits["reserved"], credits["spent"]


def refusal(answer: dict[str, Any]) -> tuple[list[Any], str]:
    """(loc, msg) of a 422 with one error."""
    [error] = answer["detail"]
    return error["loc"], error["msg"]


@pytest.fixture
async def rest(
    dev_env: WorkflowEnvironment, any_store: Store, any_db_url: str, task_queue: str
) -> AsyncIterator[Rest]:
    settings = Settings(
        _env_file=None,
        database_url=any_db_url,
        temporal=TemporalSettings(
            address=dev_env.client.service_client.config.target_host, task_queue=task_queue
        ),
        policy=PolicySettings(quiet_hours_start="00:00", quiet_hours_end="00:00"),
    )
    admin = {"Authorization": f"Bearer {any_store.create_token(Role.admin)}"}
    with serve(create_app(settings, store=any_store)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=PATIENCE) as client:
            yield Rest(client, any_store, settings, dev_env, admin)


@pytest.fixture
async def worker(rest: Rest) -> AsyncIterator[None]:
    """A worker on the app's task queue, to answer moves and cancellations."""
    async with (
        build_activities(rest.settings, rest.store) as activities,
        build_worker(rest.env.client, rest.settings, activities.all()),
    ):
        yield


# --- scheduling --------------------------------------------------------------------------


async def test_scheduling_reserves_the_cost_and_the_ledger_shows_it(rest: Rest) -> None:
    meena = await rest.contact("Meena")
    await rest.grant(meena, 20)
    template = await rest.template()
    when = days(2)
    made = await rest.schedule(contact_id=meena, scheduled_at=when)
    assert made["status"] == "pending" and made["contact_id"] == meena
    assert (made["template"], made["template_id"], made["channel"]) == (
        "checkin",
        template["id"],
        "email",
    )
    assert at(made["scheduled_at"]) == at(when)
    assert made["workflow_id"] == f"scheduled:{made['id']}"
    assert (made["credits_reserved"], made["credits_charged"]) == (5, 0)
    assert made["variables"] == {"service_type": "tarot"}

    credits = await rest.credits(meena)
    assert balance(credits) == (15, 5, 0)
    assert kinds(credits) == ["reserve", "grant"], "newest first"
    assert credits["entries"][0]["scheduled_followup_id"] == made["id"]
    found = await rest.call("GET", f"{FOLLOWUPS}/{made['id']}", expect=200)
    assert found == made | {"updated_at": found["updated_at"]}, "its workflow was started since"


async def test_a_balance_short_of_the_cost_is_402_naming_both(rest: Rest) -> None:
    meena = await rest.contact("Meena")
    await rest.grant(meena, 3)
    await rest.template()
    refused = await rest.schedule(402, contact_id=meena, scheduled_at=days(2))
    assert "the balance is 3" in refused["detail"] and "costs 5" in refused["detail"]
    assert await rest.listed() == []
    assert kinds(await rest.credits(meena)) == ["grant"]


async def test_what_cannot_be_sent_is_422_naming_the_field(rest: Rest) -> None:
    meena = await rest.contact("Meena")  # e-mail only
    await rest.grant(meena, 20)
    await rest.template()
    await rest.template("retired", is_active=False)
    await rest.template("sms-checkin", channel="sms", subject=None)
    await rest.template(
        "advice",
        variants={"en": "Dear {{user_name}}, {{advisor}} wrote to you."},
        variables=["user_name", "advisor"],
        subject="News",
    )
    cases: list[tuple[dict[str, Any], list[Any], str]] = [
        ({"template": "nonesuch"}, ["body", "template"], "no template 'nonesuch'"),
        ({"template": "retired"}, ["body", "template"], "not active"),
        ({"template": "sms-checkin"}, ["body", "channel"], "no sms address"),
        ({"channel": "sms"}, ["body", "channel"], "no sms address"),
        ({"template": "advice", "variables": {}}, ["body", "variables", "advisor"], "advisor"),
        ({"variables": {}}, ["body", "variables", "service_type"], "service_type"),
        ({"scheduled_at": "2030-01-01T10:00:00"}, ["body", "scheduled_at"], "timezone"),
        ({"scheduled_at": days(-1)}, ["body", "scheduled_at"], "in the past"),
        ({"user_email": "meena@example.com"}, ["body"], "contact_id or user_email"),
        ({"contact_id": None}, ["body"], "contact_id or user_email"),
    ]
    for fields, loc, words in cases:
        body: dict[str, Any] = {"contact_id": meena, "scheduled_at": days(2)} | fields
        answer = await rest.schedule(422, **body)
        where, msg = refusal(answer)
        assert (where, words in msg) == (loc, True), (fields, answer)
    assert await rest.listed() == [], "nothing refused was kept"
    assert balance(await rest.credits(meena)) == (20, 0, 0)


async def test_each_limit_is_409_naming_its_setting(rest: Rest) -> None:
    meena = await rest.contact("Meena")
    await rest.grant(meena, 50)
    await rest.template()
    too_far = await rest.schedule(409, contact_id=meena, scheduled_at=days(31))
    assert too_far["detail"].startswith("max_interval_days:")

    first = await rest.schedule(contact_id=meena, scheduled_at=days(2), session_id="s-1")
    too_close = await rest.schedule(409, contact_id=meena, scheduled_at=days(2.04))
    assert too_close["detail"].startswith("min_interval_hours:")

    await rest.call("PUT", SETTINGS, {"max_followups_per_session": 1}, expect=200)
    too_many = await rest.schedule(409, contact_id=meena, scheduled_at=days(5), session_id="s-1")
    assert too_many["detail"].startswith("max_followups_per_session:")
    assert await rest.listed() == [first["id"]]
    assert balance(await rest.credits(meena)) == (45, 5, 0)


async def test_a_repeated_idempotency_key_answers_the_first_follow_up(rest: Rest) -> None:
    meena = await rest.contact("Meena")
    await rest.grant(meena, 20)
    await rest.template()
    body: dict[str, Any] = {
        "contact_id": meena,
        "scheduled_at": days(2),
        "idempotency_key": "order-7",
    }
    first = await rest.schedule(**body)
    again = await rest.schedule(200, **body | {"scheduled_at": days(3)})
    assert again["id"] == first["id"] and again["scheduled_at"] == first["scheduled_at"]
    assert kinds(await rest.credits(meena)) == ["reserve", "grant"], "reserved once"
    assert await rest.listed() == [first["id"]]


async def test_user_email_finds_the_contact_and_an_unknown_one_is_404(rest: Rest) -> None:
    meena = await rest.contact("Meena")
    await rest.grant(meena, 20)
    await rest.template()
    made = await rest.schedule(user_email="meena@example.com", scheduled_at=days(2))
    assert made["contact_id"] == meena
    spelled = await rest.schedule(user_email=" Meena@Example.COM", scheduled_at=days(4))
    assert spelled["contact_id"] == meena, "an address is found however it is spelled"
    unknown = await rest.schedule(404, user_email="nobody@example.com", scheduled_at=days(6))
    assert unknown["detail"].startswith("user_email:")
    unknown = await rest.schedule(404, contact_id=424242, scheduled_at=days(6))
    assert "424242" in unknown["detail"]


async def test_the_list_filters_by_status_contact_template_channel_and_time(
    rest: Rest, worker: None
) -> None:
    meena = await rest.contact("Meena", phone="+15551230001")
    bo = await rest.contact("Bo")
    for contact in (meena, bo):
        await rest.grant(contact, 50)
    await rest.template()
    await rest.template("sms-checkin", channel="sms", subject=None)
    one = await rest.schedule(contact_id=meena, scheduled_at=days(2))
    two = await rest.schedule(contact_id=meena, scheduled_at=days(4), template="sms-checkin")
    three = await rest.schedule(contact_id=meena, scheduled_at=days(6))
    four = await rest.schedule(contact_id=bo, scheduled_at=days(3))
    await rest.call("POST", f"{FOLLOWUPS}/{three['id']}/cancel", expect=200)

    ids = [one["id"], two["id"], three["id"], four["id"]]
    assert await rest.listed() == [ids[2], ids[1], ids[3], ids[0]], "latest time first"
    assert await rest.listed(contact_id=meena) == [ids[2], ids[1], ids[0]]
    assert await rest.listed(status="pending", contact_id=meena) == [ids[1], ids[0]]
    assert await rest.listed(status="cancelled") == [ids[2]]
    assert await rest.listed(status="sent") == []
    assert await rest.listed(template="sms-checkin") == [ids[1]]
    assert await rest.listed(channel="sms") == [ids[1]]
    assert await rest.listed(channel="email", contact_id=bo) == [ids[3]]
    assert await rest.listed(**{"from": two["scheduled_at"], "to": days(5)}) == [ids[1]]
    assert await rest.listed(**{"from": days(2.5)}) == [ids[2], ids[1], ids[3]]
    assert await rest.listed(to=two["scheduled_at"]) == [ids[3], ids[0]], "to is exclusive"
    assert await rest.listed(limit=2, offset=1) == [ids[1], ids[3]]
    bad = await rest.call("GET", FOLLOWUPS, expect=422, params={"to": "2030-01-01T00:00:00"})
    assert refusal(bad)[0] == ["query", "to"]


# --- settings ----------------------------------------------------------------------------


async def test_settings_start_at_the_originals_defaults_and_change_one_at_a_time(
    rest: Rest,
) -> None:
    found = await rest.call("GET", SETTINGS, expect=200)
    assert {key: found[key] for key in DEFAULTS} == DEFAULTS

    changed = await rest.call("PUT", SETTINGS, {"min_interval_hours": 2}, expect=200)
    assert changed == found | {"min_interval_hours": 2}, "the rest kept"
    assert await rest.call("GET", SETTINGS, expect=200) == changed

    for body, field in [
        ({"max_interval_days": -1}, "max_interval_days"),
        ({"default_credits_cost": "five"}, "default_credits_cost"),
        ({"currency": "euro"}, "currency"),
        ({"auto_followups": False}, "auto_followups"),
    ]:
        refused = await rest.call("PUT", SETTINGS, body, expect=422)
        assert refusal(refused)[0] == ["body", field], refused
    assert await rest.call("GET", SETTINGS, expect=200) == changed, "nothing refused was kept"
    user = {"Authorization": f"Bearer {rest.store.create_token(Role.user)}"}
    await rest.call("PUT", SETTINGS, {"min_interval_hours": 3}, expect=403, as_=user)


async def test_without_credit_charging_a_follow_up_reserves_nothing(rest: Rest) -> None:
    meena = await rest.contact("Meena")  # no credits at all
    await rest.template()
    await rest.call("PUT", SETTINGS, {"enable_credit_charging": False}, expect=200)
    made = await rest.schedule(contact_id=meena, scheduled_at=days(2))
    assert made["credits_reserved"] == 0
    credits = await rest.credits(meena)
    assert balance(credits) == (0, 0, 0) and kinds(credits) == []


# --- credits -----------------------------------------------------------------------------


async def test_credits_are_granted_once_per_key_and_never_adjusted_below_zero(rest: Rest) -> None:
    meena = await rest.contact("Meena")
    path = f"/v1/contacts/{meena}/credits"
    grant = {"kind": "grant", "amount": 10, "reason": "bought", "idempotency_key": "inv-1"}
    first = await rest.call("POST", path, grant, expect=201)
    assert (first["balance"], first["reserved"]) == (10, 0)
    assert first["entry"]["idempotency_key"] == "inv-1" and first["entry"]["amount"] == 10
    again = await rest.call("POST", path, grant | {"amount": 99}, expect=200)
    assert again["entry"] == first["entry"] and again["balance"] == 10
    bo = await rest.contact("Bo")
    theirs = await rest.call("POST", f"/v1/contacts/{bo}/credits", grant, expect=201)
    assert theirs["balance"] == 10, "a key is one contact's: the same key for another grants"
    assert theirs["entry"]["idempotency_key"] == "inv-1"

    below = {"kind": "adjust", "amount": -11, "reason": "oops", "idempotency_key": "adj-1"}
    refused = await rest.call("POST", path, below, expect=409)
    assert refused["detail"].startswith("amount: the balance is 10")
    down = await rest.call("POST", path, below | {"amount": -10}, expect=201)
    assert down["balance"] == 0

    for amount in (0, -5):
        wrong = await rest.call("POST", path, grant | {"amount": amount}, expect=422)
        assert "amount" in refusal(wrong)[1]
    await rest.call("POST", "/v1/contacts/424242/credits", grant, expect=404)
    await rest.call("GET", "/v1/contacts/424242/credits", expect=404)
    assert kinds(await rest.credits(meena)) == ["adjust", "grant"]


async def test_the_ledger_pages_back_with_next_before(rest: Rest) -> None:
    meena = await rest.contact("Meena")
    for n in range(1, 6):
        await rest.grant(meena, n, key=f"g{n}")
    pages: list[list[int]] = []
    before: int | None = None
    while True:
        params = {"limit": 2} | ({} if before is None else {"before": before})
        page = await rest.credits(meena, **params)
        assert page["balance"] == 15, "each page has the whole balance"
        pages.append([entry["amount"] for entry in page["entries"]])
        before = page["next_before"]
        if before is None:
            break
        assert before == page["entries"][-1]["id"]
    assert pages == [[5, 4], [3, 2], [1]]


# --- contact tokens ----------------------------------------------------------------------


async def test_a_contact_token_sees_its_own_follow_ups_and_credits_only(rest: Rest) -> None:
    meena, bo = await rest.contact("Meena"), await rest.contact("Bo")
    for contact in (meena, bo):
        await rest.grant(contact, 20)
    await rest.template()
    mine = await rest.schedule(contact_id=meena, scheduled_at=days(2))
    theirs = await rest.schedule(contact_id=bo, scheduled_at=days(2))
    app = await rest.token_for(meena)

    seen = await rest.call("GET", f"{FOLLOWUPS}/{mine['id']}", expect=200, as_=app)
    assert (seen["id"], seen["contact_id"]) == (mine["id"], meena)
    assert [item["id"] for item in await rest.call("GET", FOLLOWUPS, expect=200, as_=app)] == [
        mine["id"]
    ]
    own_credits = await rest.call("GET", f"/v1/contacts/{meena}/credits", expect=200, as_=app)
    assert balance(own_credits) == (15, 5, 0)
    own = await rest.schedule(as_=app, contact_id=meena, scheduled_at=days(4))
    assert own["contact_id"] == meena, "a contact schedules its own follow-ups"

    # Another contact's follow-up answers as one that does not exist: 404, never 403.
    for method, path, body in [
        ("GET", f"{FOLLOWUPS}/{theirs['id']}", None),
        ("PATCH", f"{FOLLOWUPS}/{theirs['id']}", {"scheduled_at": days(3)}),
        ("POST", f"{FOLLOWUPS}/{theirs['id']}/cancel", None),
    ]:
        answer = await rest.call(method, path, body, expect=404, as_=app)
        assert answer == {"detail": f"no follow-up {theirs['id']}"}, (method, path)
    for path in (f"/v1/contacts/{bo}/credits", f"/v1/contacts/{bo}/credits?limit=1"):
        answer = await rest.call("GET", path, expect=404, as_=app)
        assert answer == {"detail": f"contact_id: no contact {bo}"}
    answer = await rest.call("GET", FOLLOWUPS, expect=404, as_=app, params={"contact_id": bo})
    assert answer == {"detail": f"contact_id: no contact {bo}"}
    await rest.schedule(404, as_=app, contact_id=bo, scheduled_at=days(5))
    # Nor through Bo's session: its summary would be written into Meena's message, and her
    # follow-ups would count against Bo's session.
    completed = {"contact_id": bo, "service_type": "tarot", "guidance_summary": "Bo's notes"}
    await rest.call("POST", "/v1/sessions/s-bo/complete", completed, expect=201)
    borrowed = await rest.schedule(
        409, as_=app, contact_id=meena, scheduled_at=days(6), session_id="s-bo"
    )
    assert borrowed["detail"].startswith("session_id:")
    await rest.schedule(404, as_=app, user_email="bo@example.com", scheduled_at=days(5))

    # The operator's routes do not exist for it.
    nowhere = await rest.call("GET", "/v1/no-such-route", expect=404, as_=app)
    grant = {"kind": "grant", "amount": 5, "reason": "free", "idempotency_key": "x"}
    operators: list[tuple[str, str, Any]] = [
        ("GET", SETTINGS, None),
        ("PUT", SETTINGS, {"min_interval_hours": 0}),
        ("POST", "/v1/sessions/s-1/complete", {"contact_id": meena}),
        ("POST", f"/v1/contacts/{meena}/credits", grant),
        ("GET", "/v1/analytics/messages", None),
    ]
    for method, path, body in operators:
        assert await rest.call(method, path, body, expect=404, as_=app) == nowhere, path
    assert balance(await rest.credits(bo)) == (15, 5, 0), "nothing of Bo's changed"


# --- sessions ----------------------------------------------------------------------------


async def test_a_completed_session_schedules_its_follow_ups_once(rest: Rest) -> None:
    meena = await rest.contact("Meena")
    await rest.grant(meena, 50)
    session = {
        "template_type": "session_followup",
        "variants": {"en": "Dear {{user_name}}, how was {{service_type}} on {{session_date}}?"},
        "variables": ["user_name", "service_type", "session_date"],
    }
    await rest.template("after-tarot", **session, service_types=["tarot"], send_after="2d")
    await rest.template("after-any", **session, send_after="4d")
    await rest.template("after-yoga", **session, service_types=["yoga"])
    await rest.template("after-retired", **session, is_active=False, send_after="6d")
    await rest.template("not-a-session-one", send_after="8d")
    completed = datetime.now(UTC) - timedelta(hours=1)
    body = {
        "contact_id": meena,
        "service_type": "tarot",
        "completed_at": completed.isoformat(),
        "guidance_summary": "Rest more.",
    }
    first = await rest.call("POST", "/v1/sessions/s-1/complete", body, expect=201)
    assert (first["session_id"], first["contact_id"], first["service_type"]) == (
        "s-1",
        meena,
        "tarot",
    )
    scheduled = {item["template"]: at(item["scheduled_at"]) for item in first["scheduled"]}
    assert scheduled == {
        "after-tarot": completed + timedelta(days=2),
        "after-any": completed + timedelta(days=4),
    }
    assert first["skipped"] == []
    assert {item["session_id"] for item in first["scheduled"]} == {"s-1"}
    assert balance(await rest.credits(meena)) == (40, 10, 0)

    activity = await rest.call("GET", f"/v1/contacts/{meena}/activity", expect=200)
    [event] = [item for item in activity["items"] if item["type"] == "session_completed"]
    assert event["kind"] == "event" and event["data"]["session_id"] == "s-1"
    assert at(event["at"]) == completed

    again = await rest.call("POST", "/v1/sessions/s-1/complete", body, expect=200)
    assert sorted(item["id"] for item in again["scheduled"]) == sorted(
        item["id"] for item in first["scheduled"]
    )
    assert len(await rest.listed(session_id="s-1")) == 2, "nothing more scheduled"
    assert kinds(await rest.credits(meena)).count("reserve") == 2
    activity = await rest.call("GET", f"/v1/contacts/{meena}/activity", expect=200)
    assert [item["type"] for item in activity["items"]].count("session_completed") == 1

    await rest.call("PUT", SETTINGS, {"auto_followup_enabled": False}, expect=200)
    off = await rest.call(
        "POST",
        "/v1/sessions/s-2/complete",
        {"user_email": "meena@example.com", "service_type": "tarot"},
        expect=201,
    )
    assert off["scheduled"] == [] and off["contact_id"] == meena
    assert [item["reason"] for item in off["skipped"]] == ["auto_followup_enabled is off"]
    assert await rest.listed(session_id="s-2") == []
    activity = await rest.call("GET", f"/v1/contacts/{meena}/activity", expect=200)
    assert [item["type"] for item in activity["items"]].count("session_completed") == 2


# --- moving and cancelling, answered by the workflow -------------------------------------


async def test_a_follow_up_moves_then_cancels_and_its_credits_come_back(
    rest: Rest, worker: None
) -> None:
    meena = await rest.contact("Meena")
    await rest.grant(meena, 20)
    await rest.template()
    made = await rest.schedule(contact_id=meena, scheduled_at=days(2))
    path = f"{FOLLOWUPS}/{made['id']}"
    refused = await rest.call("DELETE", "/v1/templates/checkin", expect=409)
    assert "still to be sent" in refused["detail"]

    later = days(3)
    moved = await rest.call("PATCH", path, {"scheduled_at": later}, expect=200)
    assert at(moved["scheduled_at"]) == at(later) and moved["status"] == "pending"
    assert at((await rest.call("GET", path, expect=200))["scheduled_at"]) == at(later)
    too_far = await rest.call("PATCH", path, {"scheduled_at": days(45)}, expect=409)
    assert too_far["detail"].startswith("max_interval_days:")
    naive = await rest.call("PATCH", path, {"scheduled_at": "2030-01-01T10:00:00"}, expect=422)
    assert refusal(naive)[0] == ["body", "scheduled_at"]

    cancelled = await rest.call("POST", f"{path}/cancel", {"reason": "changed my mind"}, expect=200)
    assert (cancelled["status"], cancelled["credits_charged"]) == ("cancelled", 0)
    credits = await rest.credits(meena)
    assert balance(credits) == (20, 0, 0)
    assert kinds(credits) == ["release", "reserve", "grant"]
    again = await rest.call("POST", f"{path}/cancel", expect=409)
    assert "cancelled" in again["detail"]
    await rest.call("PATCH", path, {"scheduled_at": days(4)}, expect=409)
    assert kinds(await rest.credits(meena)).count("release") == 1, "released once"
    await rest.call("DELETE", "/v1/templates/checkin", expect=204)


async def test_a_contact_token_cancels_its_own_follow_up(rest: Rest, worker: None) -> None:
    meena = await rest.contact("Meena")
    await rest.grant(meena, 20)
    await rest.template()
    made = await rest.schedule(contact_id=meena, scheduled_at=days(2))
    app = await rest.token_for(meena)
    cancelled = await rest.call("POST", f"{FOLLOWUPS}/{made['id']}/cancel", expect=200, as_=app)
    assert cancelled["status"] == "cancelled"
    own = await rest.call("GET", f"/v1/contacts/{meena}/credits", expect=200, as_=app)
    assert balance(own) == (20, 0, 0)


async def test_a_session_for_a_contact_nobody_has_is_404_not_a_500(rest: Rest) -> None:
    # Found by schemathesis: the session's row named a contact that does not exist.
    answer = await rest.call(
        "POST", "/v1/sessions/s-x/complete", {"contact_id": 987654, "service_type": "x"}, expect=404
    )
    assert "contact_id" in answer["detail"]
