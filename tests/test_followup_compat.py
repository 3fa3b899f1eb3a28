"""The original system's ``/api/followup`` routes over real HTTP, as its frontend calls them,
against the same store and scheduler as ``/v1``: its bodies are accepted, its keys come back,
and Nudge's rules (credits, limits, addresses, who sees what) hold.

The service runs on the Temporal dev server; no worker listens except in the cancel test, so
a scheduled follow-up simply waits (``dev_env`` terminates it afterwards).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from domain.credits import EntryKind
from domain.scheduled_followups import FollowupSettings
from domain.status import OutboxStatus
from service import create_app
from settings import PolicySettings, Settings, TemporalSettings
from store.events import NewLead
from store.repo import Role, Store
from store.scheduled_followups import ScheduleFilter
from tests.fakes.server import serve
from tests.waiting import PATIENCE
from worker import build_activities, build_worker

URL = "/api/followup"
ROW_KEYS = {
    "id", "user_email", "session_id", "template_id", "channel", "scheduled_at", "status",
    "credits_charged", "sent_at", "delivered_at", "read_at", "failure_reason", "created_at",
    "updated_at", "template_name", "template_tamil_name",
}  # fmt: skip
TEMPLATE_KEYS = {
    "id", "name", "tamil_name", "description", "template_type", "channel", "subject", "content",
    "tamil_content", "variables", "credits_cost", "is_active", "created_at", "updated_at",
}  # fmt: skip
ANALYTICS_KEYS = {
    "total_sent", "total_delivered", "total_read", "total_failed", "total_credits_charged",
    "total_revenue", "delivery_rate", "read_rate", "top_templates",
}  # fmt: skip


def frontend_template(**fields: Any) -> dict[str, Any]:
    """What FollowUpManagement.jsx posts: no ``variables``, a subject on every channel."""
    return {
        "name": "Session Check-in",
        "tamil_name": "அமர்வு விசாரிப்பு",
        "description": "Asks how the session went",
        "template_type": "session_followup",
        "channel": "email",
        "subject": "How was your session, {{user_name}}?",
        "content": "Dear {{user_name}}, how did your {{service_type}} reading go?",
        "tamil_content": "அன்புள்ள {{user_name}}, உங்கள் {{service_type}} எப்படி இருந்தது?",
        "credits_cost": 5,
        "is_active": True,
    } | fields


@dataclass
class Stack:
    http: httpx.AsyncClient
    store: Store
    settings: Settings
    admin: dict[str, str]

    async def call(
        self, method: str, path: str, headers: dict[str, str], **kwargs: Any
    ) -> httpx.Response:
        return await self.http.request(method, URL + path, headers=headers, **kwargs)

    async def ok(self, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> Any:
        response = await self.call(method, path, headers, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    async def template(self, **fields: Any) -> str:
        created = await self.ok(
            "POST", "/admin/templates", self.admin, json=frontend_template(**fields)
        )
        template_id: str = created["template_id"]
        return template_id

    def user(self, email: str, credits: int = 20, **fields: Any) -> tuple[int, dict[str, str]]:
        """A contact with credits, and its contact token's header."""
        name = email.split("@")[0].title()
        contact = self.store.create_lead(NewLead(name=name, email=email, **fields))
        if credits:
            self.store.add_credits(contact.id, EntryKind.grant, credits, reason="bought", key=email)
        token = self.store.create_token(Role.contact, "app", contact_id=contact.id)
        return contact.id, {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, sqlite_url: str, store: Store
) -> AsyncIterator[Stack]:
    settings = Settings(
        _env_file=None,
        database_url=sqlite_url,
        secret_key="followup-compat-key-of-32-characters",
        temporal=TemporalSettings(
            address=dev_env.client.service_client.config.target_host,
            namespace=dev_env.client.namespace,
            task_queue=f"tq-compat-{uuid.uuid4().hex[:8]}",
        ),
        policy=PolicySettings(quiet_hours_start="00:00", quiet_hours_end="00:00"),
    )
    admin = {"Authorization": f"Bearer {store.create_token(Role.admin)}"}
    with serve(create_app(settings, store=store)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=PATIENCE) as http:
            yield Stack(http, store, settings, admin)


@pytest.fixture
async def worker(stack: Stack, dev_env: WorkflowEnvironment) -> AsyncIterator[None]:
    async with (
        build_activities(stack.settings, stack.store) as activities,
        build_worker(dev_env.client, stack.settings, activities.all()),
    ):
        yield


async def test_the_frontends_template_body_saves_and_lists_with_the_originals_keys(
    stack: Stack,
) -> None:
    created = await stack.ok("POST", "/admin/templates", stack.admin, json=frontend_template())
    assert created == {
        "success": True,
        "message": "Template created successfully",
        "template_id": created["template_id"],
    }
    again = await stack.template()
    sms = await stack.template(name="SMS nudge!", channel="sms", tamil_content="", tamil_name="")

    listed = await stack.ok("GET", "/admin/templates", stack.admin)
    assert listed["success"] is True and listed["count"] == 3
    rows = {row["id"]: row for row in listed["data"]}
    assert [row["id"] for row in listed["data"]] == [sms, again, created["template_id"]]
    first = rows[created["template_id"]]
    assert set(first) == TEMPLATE_KEYS
    assert {k: v for k, v in first.items() if k not in ("id", "created_at", "updated_at")} == {
        **frontend_template(),
        "variables": ["user_name", "service_type"],
    }
    assert rows[sms]["subject"] == "" and rows[sms]["tamil_content"] is None, "dropped, not kept"

    # Nudge's own view: a slug for a name, the texts as locale variants, the titles.
    stored = stack.store.get_template("session-check-in")
    assert stored is not None and str(stored.id) == created["template_id"]
    assert stored.template.variants["ta"].startswith("அன்புள்ள")
    assert stored.template.titles == {"en": "Session Check-in", "ta": "அமர்வு விசாரிப்பு"}
    assert [t.template.name for t in stack.store.list_templates()] == [
        "session-check-in",
        "session-check-in-2",
        "sms-nudge",
    ]


async def test_a_template_nudge_refuses_is_a_422_naming_the_originals_field(stack: Stack) -> None:
    bad = frontend_template(tamil_content="வணக்கம் {{1}}", subject=" ")
    response = await stack.call("POST", "/admin/templates", stack.admin, json=bad)
    assert response.status_code == 422
    assert {tuple(error["loc"]) for error in response.json()["detail"]} == {
        ("body", "tamil_content"),
        ("body", "subject"),
    }
    assert stack.store.list_templates() == []


async def test_a_template_is_replaced_and_deleted_by_its_id(stack: Stack) -> None:
    template_id = await stack.template()
    changed = frontend_template(content="Hello {{user_name}}", tamil_content=None, credits_cost=7)
    assert await stack.ok("PUT", f"/admin/templates/{template_id}", stack.admin, json=changed) == {
        "success": True,
        "message": "Template updated successfully",
    }
    [row] = (await stack.ok("GET", "/admin/templates", stack.admin))["data"]
    assert (row["content"], row["tamil_content"], row["credits_cost"]) == (
        "Hello {{user_name}}",
        None,
        7,
    )
    assert row["variables"] == ["user_name"], "service_type is no longer used"
    deleted = await stack.ok("DELETE", f"/admin/templates/{template_id}", stack.admin)
    assert deleted == {"success": True, "message": "Template deleted successfully"}
    for method in ("PUT", "DELETE"):
        gone = await stack.call(
            method, f"/admin/templates/{template_id}", stack.admin, json=changed
        )
        assert gone.status_code == 404 and gone.json()["detail"]


async def test_a_contact_schedules_for_itself_with_the_original_body(stack: Stack) -> None:
    template_id = await stack.template()
    contact_id, meena = stack.user("meena@example.com")
    stack.user("ravi@example.com")
    before = datetime.now(UTC)

    answer = await stack.ok(
        "POST",
        "/schedule",
        meena,
        json={
            "user_email": "meena@example.com",
            "session_id": "s-881",
            "template_id": template_id,
            "channel": "email",
            "custom_variables": {"service_type": "Astrology", "unused": 3},
        },
    )
    assert set(answer) == {"success", "message", "followup_id", "credits_charged", "scheduled_at"}
    assert answer["success"] is True and answer["credits_charged"] == 5
    at = datetime.fromisoformat(answer["scheduled_at"])
    assert before + timedelta(days=1) <= at <= datetime.now(UTC) + timedelta(days=1)
    view = stack.store.get_schedule(int(answer["followup_id"]))
    assert view is not None and view.contact_id == contact_id and view.session_id == "s-881"
    assert view.variables == {"service_type": "Astrology", "unused": "3"}
    balance = stack.store.credit_balance(contact_id)
    assert (balance.balance, balance.reserved) == (15, 5), "reserved, as on /v1"

    by_name = {
        "user_email": "meena@example.com",
        "template_id": "session-check-in",
        "channel": "email",
        "scheduled_at": (datetime.now(UTC) + timedelta(days=3)).isoformat(),
        "custom_variables": {"service_type": "Tarot"},
    }
    assert (await stack.ok("POST", "/schedule", meena, json=by_name))["success"] is True

    cheaper = await stack.call("POST", "/schedule", meena, json=by_name | {"credits_to_charge": 1})
    assert cheaper.status_code == 422
    [error] = cheaper.json()["detail"]
    assert error["loc"] == ["body", "credits_to_charge"] and "costs 5" in error["msg"]

    someone_else = await stack.call(
        "POST", "/schedule", meena, json=by_name | {"user_email": "ravi@example.com"}
    )
    assert someone_else.status_code == 404


async def test_my_followups_lists_only_the_callers_own(stack: Stack) -> None:
    template_id = await stack.template()
    _, meena = stack.user("meena@example.com")
    stack.user("ravi@example.com")
    for email, headers in (("meena@example.com", meena), ("ravi@example.com", stack.admin)):
        body = {
            "user_email": email,
            "template_id": template_id,
            "channel": "email",
            "custom_variables": {"service_type": "Astrology"},
        }
        await stack.ok("POST", "/schedule", headers, json=body)

    mine = await stack.ok("GET", "/my-followups", meena)
    assert mine["success"] is True and mine["count"] == 1
    [row] = mine["data"]
    assert set(row) == ROW_KEYS
    assert row["user_email"] == "meena@example.com" and row["status"] == "pending"
    assert (row["template_id"], row["template_name"], row["template_tamil_name"]) == (
        template_id,
        "Session Check-in",
        "அமர்வு விசாரிப்பு",
    )
    assert row["credits_charged"] == 5, "held for it while it waits"

    everyone = await stack.ok("GET", "/admin/schedules?status=pending", stack.admin)
    assert everyone["count"] == 2
    assert {(r["user_email"], r["user_name"]) for r in everyone["data"]} == {
        ("meena@example.com", "Meena"),
        ("ravi@example.com", "Ravi"),
    }
    operator = await stack.call("GET", "/my-followups", stack.admin)
    assert operator.status_code == 403 and "contact token" in operator.json()["detail"]


async def test_cancelling_is_for_the_owner_and_gives_the_credits_back(
    stack: Stack, worker: None
) -> None:
    template_id = await stack.template()
    meena_id, meena = stack.user("meena@example.com")
    _, ravi = stack.user("ravi@example.com")
    body = {
        "user_email": "meena@example.com",
        "template_id": template_id,
        "channel": "email",
        "custom_variables": {"service_type": "Astrology"},
    }
    followup_id = (await stack.ok("POST", "/schedule", meena, json=body))["followup_id"]

    for path in (f"/cancel/{followup_id}", "/cancel/9999", f"/cancel/{uuid.uuid4()}"):
        refused = await stack.call("POST", path, ravi)
        assert refused.status_code == 404, refused.text
    assert stack.store.credit_balance(meena_id).balance == 15

    cancelled = await stack.ok("POST", f"/cancel/{followup_id}", meena)
    assert cancelled == {"success": True, "message": "Follow-up cancelled successfully"}
    assert stack.store.credit_balance(meena_id).balance == 20
    again = await stack.call("POST", f"/cancel/{followup_id}", meena)
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]


async def test_the_balance_and_the_address_are_checked_as_on_v1(stack: Stack) -> None:
    template_id = await stack.template()
    sms_id = await stack.template(name="SMS check-in", channel="sms")
    _, poor = stack.user("poor@example.com", credits=2)
    _, meena = stack.user("meena@example.com")

    short = await stack.call(
        "POST",
        "/schedule",
        poor,
        json={
            "user_email": "poor@example.com",
            "template_id": template_id,
            "channel": "email",
            "custom_variables": {"service_type": "Astrology"},
        },
    )
    assert short.status_code == 402 and short.json()["detail"]

    no_phone = await stack.call(
        "POST",
        "/schedule",
        meena,
        json={
            "user_email": "meena@example.com",
            "template_id": sms_id,
            "channel": "sms",
            "custom_variables": {"service_type": "Astrology"},
        },
    )
    assert no_phone.status_code == 422
    [error] = no_phone.json()["detail"]
    assert error["loc"] == ["body", "channel"] and "no sms address" in error["msg"]
    assert stack.store.list_schedules(ScheduleFilter()) == []


async def test_analytics_answer_the_originals_keys_in_percentages(stack: Stack) -> None:
    await stack.template()
    contact_id, _ = stack.user("meena@example.com", phone="+15550001234")
    for number, status in enumerate((OutboxStatus.delivered, OutboxStatus.sent)):
        key = f"test:{number}"
        stack.store.claim_outbox(
            key,
            workflow_id=f"wf-{number}",
            channel="sms",
            recipient="+15550001234",
            body="hello",
            message_class="transactional",
            contact_id=contact_id,
            template_name="session-check-in",
        )
        stack.store.mark_outbox(key, OutboxStatus.sent, provider_message_id=f"SM{number}")
        if status == OutboxStatus.delivered:
            stack.store.record_status(
                "twilio", f"SM{number}", "delivered", occurred_at=datetime.now(UTC)
            )

    today = datetime.now(UTC).date().isoformat()
    answer = await stack.ok(
        "GET", f"/admin/analytics?start_date={today}&end_date={today}", stack.admin
    )
    assert answer["success"] is True and set(answer["data"]) == ANALYTICS_KEYS
    assert answer["data"] == {
        "total_sent": 2,
        "total_delivered": 1,
        "total_read": 0,
        "total_failed": 0,
        "total_credits_charged": 0,
        "total_revenue": 0.0,
        "delivery_rate": 50.0,
        "read_rate": 0.0,
        "top_templates": [
            {"name": "Session Check-in", "tamil_name": "அமர்வு விசாரிப்பு", "total_sent": 2}
        ],
    }
    by_default = await stack.ok("GET", "/admin/analytics", stack.admin)
    assert by_default["data"]["total_sent"] == 2, "the last 30 days"


async def test_settings_are_one_flat_dict_and_a_put_changes_only_what_it_names(
    stack: Stack,
) -> None:
    answer = await stack.ok("GET", "/admin/settings", stack.admin)
    assert answer["success"] is True
    assert set(answer["data"]) == set(FollowupSettings.model_fields)
    assert answer["data"]["default_credits_cost"] == 5
    assert answer["data"]["auto_followup_enabled"] is True

    await stack.ok("PUT", "/admin/settings", stack.admin, json={"default_credits_cost": 7})
    changed = await stack.ok(
        "PUT",
        "/admin/settings",
        stack.admin,
        json={
            "auto_followup_enabled": False,
            "auto_cancel_after_days": 9,
            "enable_smart_scheduling": False,
        },
    )
    assert changed == {"success": True, "message": "Settings updated successfully"}
    now = stack.store.followup_settings()
    assert (now.auto_followup_enabled, now.default_credits_cost) == (False, 7)
    form = (await stack.ok("GET", "/admin/settings", stack.admin))["data"]
    assert await stack.ok("PUT", "/admin/settings", stack.admin, json=form), "read, then saved"


async def test_a_completed_session_schedules_its_follow_up_once(stack: Stack) -> None:
    await stack.template()
    stack.user("meena@example.com")
    body = {"session_id": "s-77", "user_email": "meena@example.com", "service_type": "tarot"}

    first = await stack.ok("POST", "/auto/session-complete", stack.admin, json=body)
    assert first["success"] is True and first["credits_charged"] == 5
    again = await stack.ok("POST", "/auto/session-complete", stack.admin, json=body)
    assert again["followup_id"] == first["followup_id"]

    await stack.ok("PUT", "/admin/settings", stack.admin, json={"auto_followup_enabled": False})
    off = await stack.ok(
        "POST", "/auto/session-complete", stack.admin, json=body | {"session_id": "s-78"}
    )
    assert off["success"] is False and "auto_followup_enabled" in off["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/schedule"),
        ("GET", "/my-followups"),
        ("POST", "/cancel/1"),
        ("GET", "/admin/templates"),
        ("GET", "/admin/settings"),
        ("POST", "/auto/session-complete"),
    ],
)
async def test_nothing_is_open_without_a_token(stack: Stack, method: str, path: str) -> None:
    response = await stack.call(method, path, {}, json={})
    assert response.status_code == 401
