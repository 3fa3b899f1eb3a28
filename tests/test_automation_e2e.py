"""Automation rules end to end on the Temporal dev server, through the HTTP API, with a real
SMTP server, the fake Twilio and a webhook receiver that checks signatures: the original
system's three example scenarios, each message arriving once.

Real time passes here, so the rules are made due within seconds by the data, not by a fake
clock: the contact was last contacted three days ago less a few seconds; the booking starts
in a day and a few seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from service import create_app
from settings import PolicySettings, Settings, SmtpSettings, TemporalSettings, TwilioSettings
from store.db import upgrade
from store.repo import Role, Store
from tests.fakes.server import serve
from tests.fakes.smtp import FakeSmtp
from tests.fakes.twilio import FakeTwilio
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.waiting import PATIENCE, wait_for
from worker import build_activities, build_worker

SMS_FROM = "+15005550006"
HOOK_SECRET = "a-webhook-secret-of-some-length"
SETTLE = 3.0
"""Real seconds to wait after a message arrived, to see that no second one follows."""


@dataclass
class Stack:
    api: httpx.AsyncClient
    smtp: FakeSmtp
    twilio: FakeTwilio
    hooks: WebhookReceiver
    hooks_url: str
    store: Store

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.api.post(path, json=body)
        assert response.status_code in (200, 201, 202), response.text
        found: dict[str, Any] = response.json()
        return found

    def sms_to(self, number: str) -> list[str]:
        return [m["Body"] for m in self.twilio.messages if m["To"] == number]

    def mail_to(self, address: str) -> list[str]:
        return [
            str(m.get_body(("plain",)).get_content()).strip()  # type: ignore[union-attr]
            for m in self.smtp.messages
            if m["To"] == address
        ]


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> AsyncIterator[Stack]:
    database_url = f"sqlite:///{tmp_path / 'nudge.db'}"
    upgrade(database_url)
    store = Store.from_url(database_url)
    twilio, hooks = FakeTwilio(), WebhookReceiver(HOOK_SECRET)
    with (
        FakeSmtp() as smtp,
        serve(twilio.app) as twilio_server,
        serve(hooks.app) as hooks_server,
    ):
        settings = Settings(
            _env_file=None,
            database_url=database_url,
            secret_key="automation-e2e-key-of-32-characters",
            temporal=TemporalSettings(
                address=dev_env.client.service_client.config.target_host, task_queue=task_queue
            ),
            smtp=SmtpSettings(
                host=smtp.host, port=smtp.port, security="none", **{"from": "shop@example.com"}
            ),
            twilio=TwilioSettings(
                account_sid=twilio.account_sid,
                auth_token=twilio.auth_token,
                sms_from=SMS_FROM,
                base_url=twilio_server.url,
            ),
            policy=PolicySettings(quiet_hours_start="00:00", quiet_hours_end="00:00"),
        )
        token = store.create_token(Role.admin, "e2e")
        async with (
            build_activities(settings, store) as activities,
            build_worker(dev_env.client, settings, activities.all()),
        ):
            with serve(create_app(settings, store=store)) as app_server:
                async with httpx.AsyncClient(
                    base_url=app_server.url,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=PATIENCE,
                ) as api:
                    yield Stack(api, smtp, twilio, hooks, hooks_server.url, store)
    store.close()


async def test_the_three_example_scenarios_each_message_once(stack: Stack) -> None:
    # The original's examples, posted as its users wrote them.
    await stack.post(
        "/v1/automations",
        {
            "name": "Welcome new leads",
            "type": "lead_followup",
            "trigger": "new_lead",
            "delay_hours": 0,
            "delay_days": 0,
            "channel": "email",
            "message_template": "Hi {lead_name}, welcome! Reply any time.",
            "conditions": {"lead_status": "new"},
            "enabled": True,
        },
    )
    await stack.post(
        "/v1/automations",
        {
            "name": "Follow up after 3 days",
            "type": "lead_followup",
            "trigger": "no_contact_days",
            "delay_days": 3,
            "channel": "SMS",
            "message_template": "Hi {lead_name}, still thinking about it?",
        },
    )
    await stack.post(
        "/v1/automations",
        {
            "name": "SMS 24h before a booking",
            "type": "booking_reminder",
            "trigger": "booking_reminder_hours",
            "delay_hours": 24,
            "channel": "SMS",
            "message_template": "See you tomorrow for {{service}}!",
        },
    )

    # 1. A new lead is welcomed by e-mail at once.
    ana = await stack.post(
        "/v1/contacts",
        {"name": "Ana Lima", "email": "ana@example.com", "phone": "+15551230001", "status": "new"},
    )
    await wait_for(lambda: stack.mail_to("ana@example.com") != [], failure="no welcome e-mail")

    # 2. Three days without contact: the lead was last contacted three days ago, less 3 s.
    quiet_since = datetime.now(UTC) - timedelta(days=3) + timedelta(seconds=3)
    response = await stack.api.patch(
        f"/v1/contacts/{ana['id']}", json={"last_contacted_at": quiet_since.isoformat()}
    )
    assert response.status_code == 200, response.text
    await wait_for(lambda: stack.sms_to("+15551230001") != [], failure="no follow-up after 3 days")

    # 3. An SMS 24 hours before a booking that starts in a day and 3 s.
    bo = await stack.post("/v1/contacts", {"name": "Bo", "phone": "+15551230002"})
    starts = datetime.now(UTC) + timedelta(days=1, seconds=3)
    await stack.post(
        "/v1/bookings",
        {"contact_id": bo["id"], "starts_at": starts.isoformat(), "service": "a massage"},
    )
    await wait_for(lambda: stack.sms_to("+15551230002") != [], failure="no booking reminder")

    await asyncio.sleep(SETTLE)
    [welcome] = stack.mail_to("ana@example.com")
    text, footer = welcome.split("\n\n--\n")
    assert text == "Hi Ana Lima, welcome! Reply any time."
    assert footer.startswith("Unsubscribe from these e-mails: "), "a lead follow-up is marketing"
    assert stack.sms_to("+15551230001") == ["Hi Ana Lima, still thinking about it?"]
    assert stack.sms_to("+15551230002") == ["See you tomorrow for a massage!"]
    assert stack.mail_to("bo@example.com") == [], "Bo has no e-mail and no status new"

    runs = (await stack.api.get(f"/v1/contacts/{ana['id']}/activity")).json()["items"]
    kinds = [(item["kind"], item["status"]) for item in runs if item["kind"] == "automation_run"]
    assert sorted(kinds) == [("automation_run", "sent"), ("automation_run", "sent")]


async def test_a_webhook_rule_posts_the_event_signed(stack: Stack) -> None:
    rule = await stack.post(
        "/v1/automations",
        {
            "name": "Tell the CRM",
            "type": "crm_update",
            "trigger": "shop:order.paid",
            "action": "webhook",
            "webhook_url": f"{stack.hooks_url}/hooks/orders",
            "webhook_secret": HOOK_SECRET,
        },
    )
    assert rule["webhook_secret_set"] is True and "webhook_secret" not in rule
    stack.hooks.fail_next(503)  # the receiver is briefly down: the call is retried
    await stack.post(
        "/v1/events",
        {
            "type": "shop:order.paid",
            "email": "cy@example.com",
            "data": {"order": 42},
            "idempotency_key": "order-42",
        },
    )
    await wait_for(lambda: stack.hooks.received != [], within=60, failure="no webhook call")
    await asyncio.sleep(SETTLE)
    [call] = stack.hooks.received
    assert call.verified, "the receiver checked the X-Nudge-Signature header"
    assert call.body["event"] == {"type": "shop:order.paid", "data": {"order": 42}}
    assert call.body["contact"]["email"] == "cy@example.com"
    assert [c.status for c in stack.hooks.calls] == [503, 200]

    # The same event again (the shop's retry) runs nothing twice.
    again = await stack.api.post(
        "/v1/events",
        json={"type": "shop:order.paid", "email": "cy@example.com", "idempotency_key": "order-42"},
    )
    assert again.status_code == 200
    await asyncio.sleep(SETTLE)
    assert len(stack.hooks.received) == 1
    runs = (await stack.api.get(f"/v1/automations/{rule['id']}/runs")).json()
    assert [(r["status"], r["message"]) for r in runs] == [("done", "webhook answered HTTP 200")]


async def test_a_rule_is_tried_on_a_contact_before_it_is_switched_on(stack: Stack) -> None:
    rule = await stack.post(
        "/v1/automations",
        {
            "name": "Thanks after a session",
            "type": "post_session",
            "trigger": "session_completed",
            "channel": "email",
            "message_template": "Thank you {lead_name}!",
            "enabled": False,
        },
    )
    dee = await stack.post("/v1/contacts", {"name": "Dee", "email": "dee@example.com"})
    tried = await stack.post(
        f"/v1/automations/{rule['id']}/test", {"lead_id": dee["id"], "dry_run": True}
    )
    assert (tried["status"], tried["channel"], tried["text"]) == (
        "dry_run",
        "email",
        "Thank you Dee!",
    )
    assert tried["verdict"].startswith("send")
    await asyncio.sleep(1)
    assert stack.mail_to("dee@example.com") == [], "a dry run sends nothing"
