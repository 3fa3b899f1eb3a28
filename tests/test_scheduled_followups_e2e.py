"""Paid follow-ups end to end on the Temporal dev server, through the HTTP API: a Tamil-speaking
user's session is reported, credits granted, two follow-ups scheduled seconds ahead (one by
e-mail to a real SMTP server, one over WhatsApp to a fake Graph API), Meta's signed delivered
and read statuses posted back; then the follow-ups, the ledger and the analytics all say the
same thing, and another user's token sees none of it.

Real time passes here, so the follow-ups are due two seconds after they are scheduled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from service import create_app
from settings import PolicySettings, Settings, SmtpSettings, TemporalSettings, WhatsAppSettings
from store.db import upgrade
from store.repo import Role, Store
from tests.fakes.graph import FakeGraph
from tests.fakes.server import serve
from tests.fakes.smtp import FakeSmtp
from tests.waiting import PATIENCE, wait_for
from worker import build_activities, build_worker

APP_SECRET = "followups-e2e-app-secret"
PHONE = "+15551239876"
WA_SENDER = PHONE.lstrip("+")
"""As Meta reports a WhatsApp sender: digits, no ``+``."""
EMAIL = "meena@example.com"
ZONE = "Asia/Kolkata"
GRANT = 30
COST = 4
FOLLOWUPS = "/v1/scheduled-followups"
TAMIL = "அன்புள்ள {{user_name}}, {{session_date}} அன்று {{service_type}} எப்படி இருந்தது? — {{advisor}}"


@dataclass
class Stack:
    api: httpx.AsyncClient
    """With an admin token."""
    hooks: httpx.AsyncClient
    """Without one: what Meta calls."""
    smtp: FakeSmtp
    graph: FakeGraph

    async def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        answer = await self.api.request(method, path, json=body, params=params or None)
        assert answer.status_code in (200, 201), f"{method} {path}: {answer.text}"
        return answer.json()

    async def followup(self, schedule_id: int) -> dict[str, Any]:
        found: dict[str, Any] = await self.call("GET", f"{FOLLOWUPS}/{schedule_id}")
        return found

    async def from_meta(self, payload: dict[str, Any]) -> None:
        """A webhook delivery signed as Meta signs it, over the raw bytes."""
        raw, headers = self.graph.signed(payload, APP_SECRET)
        answer = await self.hooks.post("/webhooks/whatsapp", content=raw, headers=headers)
        assert answer.status_code == 200, answer.text

    def mail_to(self, address: str) -> list[str]:
        return [
            str(m.get_body(("plain",)).get_content()).strip()  # type: ignore[union-attr]
            for m in self.smtp.messages
            if m["To"] == address
        ]

    def whatsapp_to(self, number: str) -> list[str]:
        return [
            body["text"]["body"]
            for body in self.graph.sent
            if body["to"].lstrip("+") == number.lstrip("+") and body.get("type") == "text"
        ]


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> AsyncIterator[Stack]:
    database_url = f"sqlite:///{tmp_path / 'nudge.db'}"
    upgrade(database_url)
    store = Store.from_url(database_url)
    graph = FakeGraph()
    with FakeSmtp() as smtp, serve(graph.app) as graph_server:
        settings = Settings(
            _env_file=None,
            database_url=database_url,
            secret_key="followups-e2e-key-of-32-characters",
            temporal=TemporalSettings(
                address=dev_env.client.service_client.config.target_host, task_queue=task_queue
            ),
            smtp=SmtpSettings(
                host=smtp.host, port=smtp.port, security="none", **{"from": "shop@example.com"}
            ),
            whatsapp=WhatsAppSettings(
                token=graph.token,
                phone_number_id=graph.phone_number_id,
                graph_url=graph_server.url,
                app_secret=APP_SECRET,
            ),
            policy=PolicySettings(quiet_hours_start="00:00", quiet_hours_end="00:00"),
        )
        token = store.create_token(Role.admin, "e2e")
        async with (
            build_activities(settings, store) as activities,
            build_worker(dev_env.client, settings, activities.all()),
        ):
            with serve(create_app(settings, store=store)) as app_server:
                async with (
                    httpx.AsyncClient(
                        base_url=app_server.url,
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=PATIENCE,
                    ) as api,
                    httpx.AsyncClient(base_url=app_server.url, timeout=PATIENCE) as hooks,
                ):
                    yield Stack(api, hooks, smtp, graph)
    store.close()


async def test_a_paid_follow_up_by_email_and_whatsapp_is_sent_read_and_charged(
    stack: Stack,
) -> None:
    # Two follow-ups for one user within seconds: the 24 h between two is the default.
    await stack.call("PUT", "/v1/followup-settings", {"min_interval_hours": 0})
    meena = await stack.call(
        "POST",
        "/v1/contacts",
        {"name": "மீனா", "email": EMAIL, "phone": PHONE, "locale": "ta", "timezone": ZONE},
    )
    granted = await stack.call(
        "POST",
        f"/v1/contacts/{meena['id']}/credits",
        {"kind": "grant", "amount": GRANT, "reason": "bought", "idempotency_key": "order-1"},
    )
    assert granted["balance"] == GRANT
    await stack.call(
        "POST",
        "/v1/templates",
        {
            "name": "session-checkin",
            "channel": "email",
            "subject": "{{service_type}}: {{user_name}}",
            "variants": {
                "en": "Dear {{user_name}}, how was {{service_type}} on {{session_date}}? "
                "- {{advisor}}",
                "ta": TAMIL,
            },
            "variables": ["user_name", "service_type", "session_date", "advisor"],
            "template_type": "check_in",
            "credits_cost": COST,
        },
    )
    # Late in the evening in UTC, already the next day in India: the date the user reads.
    completed = (datetime.now(UTC) - timedelta(days=1)).replace(hour=22, minute=0)
    session = await stack.call(
        "POST",
        "/v1/sessions/s-42/complete",
        {
            "contact_id": meena["id"],
            "service_type": "ஜோதிடம்",
            "completed_at": completed.isoformat(),
        },
    )
    assert session["scheduled"] == [], "the template is not a session_followup one"
    # The user wrote on WhatsApp a moment ago: a free-form message may answer.
    await stack.from_meta(stack.graph.inbound_text(WA_SENDER, "வணக்கம்"))

    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    common = {
        "contact_id": meena["id"],
        "template": "session-checkin",
        "session_id": "s-42",
        "scheduled_at": soon,
        "variables": {"advisor": "லட்சுமி"},
    }
    by_mail = await stack.call("POST", FOLLOWUPS, common)
    by_whatsapp = await stack.call("POST", FOLLOWUPS, common | {"channel": "whatsapp"})
    assert (by_mail["credits_reserved"], by_whatsapp["credits_reserved"]) == (COST, COST)

    day = completed.astimezone(ZoneInfo(ZONE)).date().isoformat()
    assert day != completed.date().isoformat()
    expected = f"அன்புள்ள மீனா, {day} அன்று ஜோதிடம் எப்படி இருந்தது? — லட்சுமி"
    await wait_for(lambda: stack.mail_to(EMAIL) != [], failure="no e-mail arrived")
    await wait_for(lambda: stack.whatsapp_to(PHONE) != [], failure="no WhatsApp message sent")
    assert stack.mail_to(EMAIL) == [expected]
    [mail] = stack.smtp.messages
    assert mail["Subject"] == "ஜோதிடம்: மீனா"
    assert stack.whatsapp_to(PHONE) == [expected]

    async def status_of(schedule_id: int, wanted: str) -> bool:
        return bool((await stack.followup(schedule_id))["status"] == wanted)

    await wait_for(lambda: status_of(by_mail["id"], "sent"), failure="e-mail not settled")
    await wait_for(lambda: status_of(by_whatsapp["id"], "sent"), failure="WhatsApp not settled")
    [row] = await stack.call("GET", "/v1/outbox", workflow_id=by_whatsapp["workflow_id"])
    wamid = row["provider_message_id"]
    assert wamid.startswith("wamid.")

    delivered_at = datetime.now(UTC).replace(microsecond=0)
    read_at = delivered_at + timedelta(seconds=1)
    await stack.from_meta(stack.graph.status(wamid, "delivered", PHONE, timestamp=delivered_at))
    await stack.from_meta(stack.graph.status(wamid, "read", PHONE, timestamp=read_at))
    await wait_for(lambda: status_of(by_whatsapp["id"], "read"), failure="never read")

    read = await stack.followup(by_whatsapp["id"])
    assert datetime.fromisoformat(read["delivered_at"]) == delivered_at
    assert datetime.fromisoformat(read["read_at"]) == read_at
    assert read["credits_charged"] == COST and read["sent_at"] is not None
    mailed = await stack.followup(by_mail["id"])
    assert (mailed["status"], mailed["credits_charged"]) == ("sent", COST)
    assert mailed["delivered_at"] is None, "e-mail reports no delivery"
    credits = await stack.call("GET", f"/v1/contacts/{meena['id']}/credits")
    assert (credits["balance"], credits["reserved"], credits["spent"]) == (
        GRANT - 2 * COST,
        0,
        2 * COST,
    )
    assert sorted(entry["kind"] for entry in credits["entries"]) == [
        "capture",
        "capture",
        "grant",
        "reserve",
        "reserve",
    ]

    analytics = await stack.call("GET", "/v1/analytics/messages", group_by="channel")
    totals = analytics["totals"]
    assert (totals["sent"], totals["delivered"], totals["read"]) == (2, 1, 1)
    assert totals["credits_charged"] == 2 * COST
    groups = {group["key"]: group for group in analytics["groups"]}
    assert set(groups) == {"email", "whatsapp"}
    whatsapp = groups["whatsapp"]
    assert (whatsapp["sent"], whatsapp["delivered"], whatsapp["read"]) == (1, 1, 1)
    assert whatsapp["credits_charged"] == COST
    assert (groups["email"]["sent"], groups["email"]["delivered"]) == (1, 0)
    [top] = analytics["top_templates"]
    assert (top["template"], top["sent"], top["read"]) == ("session-checkin", 2, 1)

    # Another user's app sees none of it, as if it did not exist.
    bo = await stack.call("POST", "/v1/contacts", {"name": "Bo", "email": "bo@example.com"})
    made = await stack.call("POST", f"/v1/contacts/{bo['id']}/tokens", {})
    app = {"Authorization": f"Bearer {made['token']}"}
    for followup in (by_mail, by_whatsapp):
        answer = await stack.hooks.get(f"{FOLLOWUPS}/{followup['id']}", headers=app)
        assert answer.status_code == 404, answer.text
    assert (await stack.hooks.get(FOLLOWUPS, headers=app)).json() == []
