"""``/v1/automations`` over real HTTP on SQLite and PostgreSQL: the original system's rules
posted unchanged and read back, refusals naming the field, the webhook secret never shown,
``PATCH`` changing only what it is given, runs and counts, and running a rule by hand.

Temporal is pointed at a closed port (``tests/api_rig.py``): what needs it answers 503, and
what only tells it (a rule saved, an event dispatched) is saved all the same.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.automations import AutomationOut
from domain.automation_runs import RunRecord, RunStatus, workflow_id_for
from domain.automations import AutomationRule
from tests.api_rig import Api

# The original's example rules, as its documentation writes them.
WELCOME = {
    "name": "Welcome new leads",
    "type": "lead_followup",
    "trigger": "new_lead",
    "delay_hours": 0,
    "delay_days": 0,
    "channel": "email",
    "message_template": "Hi {lead_name}, welcome!",
    "conditions": {"lead_status": "new"},
    "enabled": True,
}
FOLLOW_UP = {
    "name": "Follow-up after 3 days",
    "type": "lead_followup",
    "trigger": "no_contact_days",
    "delay_days": 3,
    "channel": "sms",
    "enabled": True,
}
REMINDER = {
    "name": "Booking reminder",
    "type": "booking_reminder",
    "trigger": "booking_reminder_hours",
    "delay_hours": 24,
    "channel": "SMS",
    "enabled": True,
}
PAID = {
    "name": "Thanks for the order",
    "type": "post_session",
    "trigger": "shop:order.paid",
    "channel": "email",
    "message_template": "Thank you, {lead_name}!",
}
"""A rule of a custom event, which no API call but ``/trigger`` raises in these tests."""
SECRET = "s3cret-of-the-crm-0123"
WEBHOOK = {
    "name": "Tell the CRM",
    "type": "crm_update",
    "trigger": "lead_status_changed",
    "action": "webhook",
    "webhook_url": "https://crm.example.com/nudge",
    "webhook_secret": SECRET,
}


def create(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    response = api.client.post("/v1/automations", json=body, headers=api.admin)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def read(api: Api, automation_id: int) -> dict[str, Any]:
    response = api.client.get(f"/v1/automations/{automation_id}", headers=api.user)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def contact(api: Api, email: str = "ana@example.com") -> int:
    body = {"name": "Ana", "email": email, "status": "new"}
    response = api.client.post("/v1/contacts", json=body, headers=api.admin)
    assert response.status_code == 201, response.text
    contact_id: int = response.json()["id"]
    return contact_id


def refused(response: Any) -> dict[str, str]:
    """A 422's messages by location (``body.conditions.lead_stat``)."""
    assert response.status_code == 422, response.text
    return {".".join(map(str, e["loc"])): e["msg"] for e in response.json()["detail"]}


def schedule(api: Api, rule_id: int, contact_id: int, occurrence: str = "event-1") -> str:
    workflow_id = workflow_id_for(rule_id, contact_id, occurrence)
    record = RunRecord(
        workflow_id=workflow_id,
        rule_id=rule_id,
        contact_id=contact_id,
        occurrence=occurrence,
        due_at=datetime.now(UTC) + timedelta(hours=1),
        status=RunStatus.waiting,
    )
    api.store.schedule_run(record, "a rule")  # its answer is not read: listing the runs checks
    return workflow_id


# --- rules as the original wrote them -----------------------------------------------------


def test_the_originals_example_rules_are_accepted_unchanged_and_read_back(api: Api) -> None:
    welcome, follow_up, reminder = (create(api, body) for body in (WELCOME, FOLLOW_UP, REMINDER))
    assert {k: welcome[k] for k in WELCOME} == WELCOME
    assert (welcome["action"], welcome["message_class"]) == ("send", "marketing")
    assert (follow_up["trigger"], follow_up["delay_days"], follow_up["delay_hours"]) == (
        "no_contact_days",
        3,
        0,
    )
    assert (reminder["channel"], reminder["delay_hours"]) == ("sms", 24)
    assert reminder["message_class"] == "transactional"
    for created in (welcome, follow_up, reminder):
        assert read(api, created["id"]) == created
        assert created["times_triggered"] == 0 and created["last_triggered"] is None
        assert created["counts"] == dict.fromkeys(
            ("waiting", "sent", "done", "skipped", "suppressed", "failed"), 0
        )
        assert created["webhook_secret_set"] is False and "webhook_secret" not in created
    listed = api.client.get("/v1/automations", headers=api.user).json()
    assert [rule["id"] for rule in listed] == [welcome["id"], follow_up["id"], reminder["id"]]
    quiet = api.client.get(
        "/v1/automations", params={"trigger": "no_contact_days"}, headers=api.user
    ).json()
    assert quiet == [follow_up]


def test_the_originals_read_only_fields_in_a_body_are_ignored(api: Api) -> None:
    exported = {
        **WELCOME,
        "id": 999,
        "user": 3,
        "times_triggered": 12,
        "last_triggered": "2025-01-01T00:00:00Z",
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-06-01T00:00:00Z",
    }
    created = create(api, exported)
    assert created["id"] != 999
    assert (created["times_triggered"], created["last_triggered"]) == (0, None)
    assert not created["created_at"].startswith("2024")
    assert {k: created[k] for k in WELCOME} == WELCOME


def test_every_field_of_a_rule_is_shown_but_the_secret(api: Api) -> None:
    shown = set(AutomationOut.model_fields)
    assert set(AutomationRule.model_fields) - shown == {"webhook_secret"}
    assert "webhook_secret_set" in shown


# --- refusals -----------------------------------------------------------------------------


def test_a_bad_condition_key_is_a_422_naming_it(api: Api) -> None:
    response = api.client.post(
        "/v1/automations",
        json={**WELCOME, "conditions": {"lead_stat": "new"}},
        headers=api.admin,
    )
    errors = refused(response)
    assert list(errors) == ["body.conditions.lead_stat"]
    assert errors["body.conditions.lead_stat"].startswith("conditions.lead_stat: ")
    assert "did you mean lead_status?" in errors["body.conditions.lead_stat"]
    assert api.client.get("/v1/automations", headers=api.user).json() == []


def test_fields_that_do_not_fit_are_refused_at_the_field(api: Api) -> None:
    timer = api.client.post(
        "/v1/automations", json={**FOLLOW_UP, "delay_days": 0}, headers=api.admin
    )
    assert list(refused(timer)) == ["body.delay_days"]
    typo = api.client.post("/v1/automations", json={**WELCOME, "chanel": "sms"}, headers=api.admin)
    assert "body.chanel" in refused(typo)


def test_a_template_must_exist_and_be_written_for_the_rules_channel(api: Api) -> None:
    body = {**PAID, "message_template": "", "template": "thanks"}
    unknown = refused(api.client.post("/v1/automations", json=body, headers=api.admin))
    assert list(unknown) == ["body.template"]
    assert "no template 'thanks'" in unknown["body.template"]
    template = {"name": "thanks", "channel": "sms", "variants": {"en": "Thank you!"}}
    made = api.client.post("/v1/templates", json=template, headers=api.admin)
    assert made.status_code == 201, made.text
    other = refused(api.client.post("/v1/automations", json=body, headers=api.admin))
    assert "written for sms, this rule sends on email" in other["body.template"]
    created = create(api, {**body, "channel": "sms"})
    assert created["template"] == "thanks"
    moved = api.client.patch(
        f"/v1/automations/{created['id']}", json={"channel": "email"}, headers=api.admin
    )
    assert "written for sms" in refused(moved)["body.template"]
    assert read(api, created["id"])["channel"] == "sms"


def test_a_webhook_secret_is_never_shown(api: Api) -> None:
    created = create(api, WEBHOOK)
    rule_id = created["id"]
    answers = [
        api.client.post("/v1/automations", json=WEBHOOK, headers=api.admin),
        api.client.get(f"/v1/automations/{rule_id}", headers=api.user),
        api.client.get("/v1/automations", headers=api.user),
        api.client.patch(f"/v1/automations/{rule_id}", json={"name": "CRM"}, headers=api.admin),
        api.client.patch(  # refused: the 422 does not echo the stored secret either
            f"/v1/automations/{rule_id}", json={"action": "send"}, headers=api.admin
        ),
    ]
    assert [a.status_code for a in answers] == [201, 200, 200, 200, 422]
    for answer in answers:
        assert SECRET not in answer.text
        assert 'webhook_secret":' not in answer.text
    assert answers[3].json()["webhook_secret_set"] is True
    assert answers[3].json()["name"] == "CRM"
    stored = api.store.get_automation(rule_id)
    assert stored is not None and stored.rule.webhook_secret == SECRET  # kept by the PATCH
    new = "another-secret-0123456"
    changed = api.client.patch(
        f"/v1/automations/{rule_id}", json={"webhook_secret": new}, headers=api.admin
    )
    assert changed.status_code == 200 and new not in changed.text
    stored = api.store.get_automation(rule_id)
    assert stored is not None and stored.rule.webhook_secret == new


# --- PATCH and DELETE ---------------------------------------------------------------------


def test_patch_enabled_false_switches_the_rule_off_and_changes_nothing_else(api: Api) -> None:
    created = create(api, WELCOME)
    response = api.client.patch(
        f"/v1/automations/{created['id']}", json={"enabled": False}, headers=api.admin
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["enabled"] is False
    same = {k: v for k, v in created.items() if k not in ("enabled", "updated_at")}
    assert {k: changed[k] for k in same} == same
    assert read(api, created["id"]) == changed
    on = api.client.patch(
        f"/v1/automations/{created['id']}", json={"enabled": True}, headers=api.admin
    )
    assert on.json()["enabled"] is True


def test_an_invalid_patch_is_a_422_naming_the_field_and_the_rule_is_unchanged(
    api: Api,
) -> None:
    created = create(api, WELCOME)
    url = f"/v1/automations/{created['id']}"
    for patch, where in [
        ({"delay_days": -1}, "body.delay_days"),
        ({"channel": "fax"}, "body.channel"),
        ({"conditions": {"lead_stat": "new"}}, "body.conditions.lead_stat"),
        ({"colour": "red"}, "body.colour"),
        ({"trigger": "no_contact_days"}, "body.delay_days"),
    ]:
        assert where in refused(api.client.patch(url, json=patch, headers=api.admin)), patch
    assert read(api, created["id"]) == created
    assert api.client.patch(url, json=[1], headers=api.admin).status_code == 422


def test_a_new_type_brings_its_own_defaults_unless_the_patch_says_otherwise(api: Api) -> None:
    created = create(api, PAID)
    url = f"/v1/automations/{created['id']}"
    reminder = api.client.patch(url, json={"type": "confirmation"}, headers=api.admin).json()
    assert reminder["message_class"] == "transactional"
    kept = api.client.patch(
        url, json={"type": "post_session", "message_class": "transactional"}, headers=api.admin
    ).json()
    assert kept["message_class"] == "transactional"


def test_delete_is_204_then_the_rule_is_gone(api: Api) -> None:
    created = create(api, WELCOME)
    url = f"/v1/automations/{created['id']}"
    assert api.client.delete(url, headers=api.admin).status_code == 204
    gone = api.client.get(url, headers=api.user)
    assert gone.status_code == 404
    assert gone.json()["detail"] == f"automation_id: no rule {created['id']}"
    assert api.client.delete(url, headers=api.admin).status_code == 404
    assert api.client.patch(url, json={"enabled": False}, headers=api.admin).status_code == 404
    assert api.client.get(f"{url}/runs", headers=api.user).status_code == 404
    assert api.client.get("/v1/automations", headers=api.user).json() == []


def test_ids_out_of_range_are_a_422(api: Api) -> None:
    for bad in ("0", str(2**31), "x"):
        assert api.client.get(f"/v1/automations/{bad}", headers=api.user).status_code == 422


# --- runs ---------------------------------------------------------------------------------


def test_runs_are_listed_and_counted(api: Api) -> None:
    created = create(api, PAID)
    rule_id = created["id"]
    runs_url = f"/v1/automations/{rule_id}/runs"
    assert api.client.get(runs_url, headers=api.user).json() == []
    ana = contact(api)
    workflow_id = schedule(api, rule_id, ana)
    runs = api.client.get(runs_url, headers=api.user).json()
    assert [(r["workflow_id"], r["contact_id"], r["status"]) for r in runs] == [
        (workflow_id, ana, "waiting")
    ]
    assert set(runs[0]) == {
        "id", "workflow_id", "contact_id", "occurrence", "event_id", "due_at", "status",
        "channel", "message", "reason", "created_at", "finished_at",
    }  # fmt: skip
    assert runs[0]["occurrence"] == "event-1"
    rule = read(api, rule_id)
    assert (rule["times_triggered"], rule["counts"]["waiting"], rule["counts"]["sent"]) == (1, 1, 0)
    assert rule["last_triggered"] is not None
    assert api.client.get("/v1/automations", headers=api.user).json() == [rule]
    sent = api.client.get(runs_url, params={"status": "sent"}, headers=api.user).json()
    assert sent == []
    waiting = api.client.get(runs_url, params={"status": "waiting"}, headers=api.user)
    assert len(waiting.json()) == 1
    assert api.client.get(runs_url, params={"offset": 1}, headers=api.user).json() == []
    for params in ({"limit": 0}, {"limit": 501}, {"status": "lost"}, {"offset": -1}):
        assert api.client.get(runs_url, params=params, headers=api.user).status_code == 422


# --- running a rule by hand ---------------------------------------------------------------


def test_testing_a_rule_needs_the_rule_and_the_contact(api: Api) -> None:
    created = create(api, PAID)
    ana = contact(api)
    test = f"/v1/automations/{created['id']}/test"
    missing_rule = api.client.post(
        "/v1/automations/999/test", json={"contact_id": ana}, headers=api.admin
    )
    assert missing_rule.status_code == 404
    assert missing_rule.json()["detail"] == "automation_id: no rule 999"
    nobody = api.client.post(test, json={"lead_id": 999}, headers=api.admin)
    assert nobody.status_code == 404
    assert nobody.json()["detail"] == "lead_id: no contact 999"
    bodies: list[dict[str, Any]] = [{}, {"contact_id": ana, "lead_id": ana}, {"data": {}}]
    for body in bodies:
        assert "body.contact_id" in refused(api.client.post(test, json=body, headers=api.admin))
    assert "body.dry_run" in refused(
        api.client.post(test, json={"contact_id": ana, "dry_run": "maybe"}, headers=api.admin)
    )


@pytest.mark.parametrize("dry_run", [True, False])
def test_testing_a_rule_without_temporal_is_a_503_and_runs_nothing(api: Api, dry_run: bool) -> None:
    created = create(api, PAID)
    ana = contact(api)
    response = api.client.post(
        f"/v1/automations/{created['id']}/test",
        json={"lead_id": ana, "dry_run": dry_run, "data": {"order": "A-17"}},
        headers=api.admin,
    )
    assert response.status_code == 503, response.text
    assert response.json()["detail"] == "Temporal is not reachable; nothing was sent."
    assert response.headers["Retry-After"] == "5"
    assert api.store.list_runs(automation_id=created["id"]) == []


def test_a_trigger_names_one_contact_and_one_rule_or_event_type(api: Api) -> None:
    ana = contact(api)
    created = create(api, PAID)
    url = "/v1/automations/trigger"
    both = {"contact_id": ana, "automation_id": created["id"], "trigger": "shop:order.paid"}
    assert list(refused(api.client.post(url, json=both, headers=api.admin))) == [
        "body.automation_id"
    ]
    neither = refused(api.client.post(url, json={"contact_id": ana}, headers=api.admin))
    assert "one of them" in neither["body.automation_id"]
    no_contact = refused(
        api.client.post(url, json={"automation_id": created["id"]}, headers=api.admin)
    )
    assert list(no_contact) == ["body.contact_id"]
    for timer in ("no_contact_days", "booking_reminder_hours"):
        body = {"contact_id": ana, "trigger": timer}
        message = refused(api.client.post(url, json=body, headers=api.admin))["body.trigger"]
        assert "pass the automation_id" in message
    bad = {"contact_id": ana, "trigger": "Order Paid"}
    assert (
        "not a slug" in refused(api.client.post(url, json=bad, headers=api.admin))["body.trigger"]
    )
    assert api.store.list_events(contact_id=ana)[0].type == "new_lead"  # nothing raised


def test_triggering_a_rule_by_hand_needs_it_switched_on_and_temporal(api: Api) -> None:
    ana = contact(api)
    created = create(api, {**PAID, "enabled": False})
    url = "/v1/automations/trigger"
    body = {"contact_id": ana, "automation_id": created["id"]}
    off = api.client.post(url, json=body, headers=api.admin)
    assert off.status_code == 409
    assert f"rule {created['id']} is switched off" in off.json()["detail"]
    missing = api.client.post(url, json={**body, "automation_id": 999}, headers=api.admin)
    assert (missing.status_code, missing.json()["detail"]) == (404, "automation_id: no rule 999")
    api.client.patch(f"/v1/automations/{created['id']}", json={"enabled": True}, headers=api.admin)
    nobody = api.client.post(url, json={**body, "contact_id": 999}, headers=api.admin)
    assert (nobody.status_code, nobody.json()["detail"]) == (404, "contact_id: no contact 999")
    down = api.client.post(url, json=body, headers=api.admin)
    assert down.status_code == 503 and down.headers["Retry-After"] == "5"
    assert api.store.list_runs(automation_id=created["id"]) == []  # nothing left half done


def test_raising_a_trigger_stores_the_event_and_lists_the_runs_it_scheduled(api: Api) -> None:
    ana, bob = contact(api), contact(api, "bob@example.com")
    paid = create(api, PAID)
    other = create(api, {**PAID, "name": "Other event", "trigger": "shop:order.refunded"})
    schedule(api, other["id"], ana)  # a run of the contact for some other event: not listed
    create(api, {**PAID, "name": "Only VIPs", "conditions": {"tags": "vip"}})
    response = api.client.post(
        "/v1/automations/trigger",
        json={"lead_id": ana, "trigger": "shop:order.paid", "data": {"order": "A-17"}},
        headers=api.admin,
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    event = api.store.get_event(answer["event_id"])
    assert event is not None
    assert (event.type, event.contact_id, event.data) == (
        "shop:order.paid",
        ana,
        {"order": "A-17"},
    )
    # Temporal is down: the run is scheduled (its row) and the sweep starts its workflow later.
    assert answer["workflow_ids"] == [
        workflow_id_for(paid["id"], ana, f"event-{answer['event_id']}")
    ]
    assert [run.contact_id for run in api.store.list_runs(automation_id=paid["id"])] == [ana]
    assert read(api, paid["id"])["times_triggered"] == 1
    nobody = api.client.post(
        "/v1/automations/trigger",
        json={"contact_id": 999, "trigger": "shop:order.paid"},
        headers=api.admin,
    )
    assert (nobody.status_code, nobody.json()["detail"]) == (404, "contact_id: no contact 999")
    assert api.store.list_events(contact_id=bob)[0].type == "new_lead"


# --- tokens -------------------------------------------------------------------------------


def test_a_user_token_reads_rules_but_cannot_change_or_run_them(api: Api) -> None:
    created = create(api, PAID)
    url = f"/v1/automations/{created['id']}"
    ana = contact(api)
    writes = [
        api.client.post("/v1/automations", json=WELCOME, headers=api.user),
        api.client.patch(url, json={"enabled": False}, headers=api.user),
        api.client.delete(url, headers=api.user),
        api.client.post(f"{url}/test", json={"contact_id": ana}, headers=api.user),
        api.client.post(
            "/v1/automations/trigger",
            json={"contact_id": ana, "automation_id": created["id"]},
            headers=api.user,
        ),
    ]
    assert [w.status_code for w in writes] == [403] * len(writes)
    assert read(api, created["id"]) == created
    assert api.client.get(f"{url}/runs", headers=api.user).status_code == 200
    assert api.client.get("/v1/automations").status_code == 401
