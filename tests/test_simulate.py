"""WhatsApp tried locally: ``POST /v1/dev/inbound`` and ``nudge simulate whatsapp`` feed a
customer's message through the webhook's own path in sandbox mode, and the menu's replies
land in the outbox (and the sandbox log) as readable text, buttons and all.

The conversation runs on the Temporal dev server with the real worker wiring and no WhatsApp
credentials (sandbox mode); the CLI runs as the real ``nudge`` process against the service.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from domain.rendering import interactive_text
from service import create_app
from settings import PolicySettings, Settings, TemporalSettings, WhatsAppSettings
from starter.simulate import CONFIGURED
from store.db import upgrade
from store.models import InboundMessage
from store.repo import OutboxRow, Role, Store
from tests.api_rig import Api
from tests.fakes.server import free_port, serve
from tests.menus import PRODUCTS, WELCOME, buttons, shop_menu
from tests.processes import BIN
from tests.waiting import PATIENCE, wait_for
from worker import build_activities, build_worker

CUSTOMER = "+15551234567"
WELCOME_TEXT = "Welcome! How can we help?\n1. New Order (id order)\n2. Support (id support)"
PRODUCTS_TEXT = (
    "Our plants\nWhich plant would you like?\n"
    "1. Monstera (id monstera)\n2. Fern (id fern)\n3. Cactus (id cactus)\n"
    "Prices include delivery"
)


@dataclass
class Sandbox:
    api: httpx.AsyncClient
    store: Store
    url: str
    token: str

    async def say(self, **body: str) -> dict[str, Any]:
        response = await self.api.post("/v1/dev/inbound", json={"from": CUSTOMER, **body})
        assert response.status_code == 202, response.text
        taken: dict[str, Any] = response.json()
        return taken

    async def replies(self, count: int) -> list[OutboxRow]:
        """The customer's sandboxed replies, oldest first, once there are ``count``."""

        def sandboxed() -> list[OutboxRow]:
            contact = self.store.contact_for("whatsapp", CUSTOMER)
            rows = self.store.list_outbox(contact_id=contact, status="sandboxed")
            return list(reversed(rows))

        await wait_for(lambda: len(sandboxed()) >= count, failure=f"{count} replies not sent")
        return sandboxed()


@pytest.fixture
async def sandbox(
    dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> AsyncIterator[Sandbox]:
    """The HTTP service and the real worker, with no WhatsApp credentials: sandbox mode."""
    database_url = f"sqlite:///{tmp_path / 'nudge.db'}"
    upgrade(database_url)
    store = Store.from_url(database_url)
    settings = Settings(
        _env_file=None,
        database_url=database_url,
        temporal=TemporalSettings(
            address=dev_env.client.service_client.config.target_host, task_queue=task_queue
        ),
        whatsapp=WhatsAppSettings(),
        policy=PolicySettings(quiet_hours_start="00:00", quiet_hours_end="00:00"),
    )
    token = store.create_token(Role.admin, "simulate")
    try:
        async with (
            build_activities(settings, store) as activities,
            build_worker(dev_env.client, settings, activities.all()),
        ):
            with serve(create_app(settings, store=store)) as server:
                async with httpx.AsyncClient(
                    base_url=server.url,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=PATIENCE,
                ) as api:
                    created = await api.post(
                        "/v1/menus", json=shop_menu().model_dump(mode="json", by_alias=True)
                    )
                    assert created.status_code == 201, created.text
                    yield Sandbox(api, store, server.url, token)
    finally:
        store.close()


async def test_a_simulated_message_runs_the_menu_and_its_replies_read_as_text(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="activities.delivery")
    taken = await sandbox.say(text="hi")
    assert str(taken["message_id"]).startswith("sim.")
    [welcome] = await sandbox.replies(1)
    assert welcome.body == WELCOME_TEXT
    assert welcome.channel == "whatsapp" and welcome.recipient == CUSTOMER
    assert any(
        f"sandbox whatsapp -> {CUSTOMER}: {WELCOME_TEXT}" in record.getMessage()
        for record in caplog.records
    ), "the sandbox log shows the buttons"

    await sandbox.say(reply_id="order", reply_title="New Order")
    products = (await sandbox.replies(2))[1]
    assert products.body == PRODUCTS_TEXT

    with sandbox.store.sessions() as session:
        kept = session.scalars(select(InboundMessage).order_by(InboundMessage.id)).all()
    assert [(m.provider_message_id[:4], m.body, m.reply_id) for m in kept] == [
        ("sim.", "hi", None),
        ("sim.", "New Order", "order"),
    ], "recorded as a webhook records a message, under a synthetic id"
    outbox = await sandbox.api.get("/v1/outbox", params={"contact": taken["contact_id"]})
    assert [row["body"] for row in outbox.json()] == [PRODUCTS_TEXT, WELCOME_TEXT]


async def nudge(*args: str, cwd: Path) -> tuple[int, str, str]:
    """The real ``nudge`` command, run beside the test's event loop (the worker lives there)."""
    process = await asyncio.create_subprocess_exec(
        str(BIN / "nudge"),
        *args,
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if not k.startswith("NUDGE_")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_nudge_simulate_whatsapp_prints_the_replies_as_they_are_sent(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    (tmp_path / ".nudge").mkdir()
    (tmp_path / ".nudge" / "dev-token").write_text(sandbox.token + "\n")
    common = ("simulate", "whatsapp", "--from", CUSTOMER, "--url", sandbox.url)

    code, out, err = await nudge(*common, "hi", cwd=tmp_path)  # the token `nudge dev` keeps
    assert code == 0, err
    assert out.splitlines() == [
        f"-> {CUSTOMER}: hi",
        "<- Welcome! How can we help?",
        "   1. New Order (id order)",
        "   2. Support (id support)",
    ]

    code, out, err = await nudge(*common, "--reply-id", "order", cwd=tmp_path)
    assert code == 0, err
    assert out.splitlines() == [
        f"-> {CUSTOMER}: (taps order)",
        "<- Our plants",
        *[f"   {line}" for line in PRODUCTS_TEXT.splitlines()[1:]],
    ]

    code, out, err = await nudge(*common, "--token", "not-a-token", "hi", cwd=tmp_path)
    assert code == 1 and out == ""
    assert "the token was refused" in err and "--token" in err


async def test_nudge_simulate_whatsapp_says_when_nothing_answers(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    args = ("simulate", "whatsapp", "--from", CUSTOMER, "--url", url, "--token", "t", "hi")
    code, _, err = await nudge(*args, cwd=tmp_path)
    assert code == 1
    assert f"nothing answers at {url}: is `nudge dev` running?" in err


async def test_simulated_messages_are_refused_once_whatsapp_is_configured(
    store: Store, sqlite_url: str
) -> None:
    configured = WhatsAppSettings(token="EAAG-token", phone_number_id="1234567890")
    settings = Settings(_env_file=None, database_url=sqlite_url, whatsapp=configured)
    token = store.create_token(Role.admin)
    with serve(create_app(settings, store=store)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=PATIENCE) as client:
            response = await client.post(
                "/v1/dev/inbound",
                json={"channel": "whatsapp", "from": CUSTOMER, "text": "hi"},
                headers={"Authorization": f"Bearer {token}"},
            )
    assert response.status_code == 409
    assert response.json()["detail"] == CONFIGURED
    with store.sessions() as session:
        assert session.scalars(select(InboundMessage)).all() == []


def test_simulated_messages_need_an_admin_token(api: Api) -> None:
    body = {"channel": "whatsapp", "from": CUSTOMER, "text": "hi"}
    assert api.client.post("/v1/dev/inbound", json=body).status_code == 401
    response = api.client.post("/v1/dev/inbound", json=body, headers=api.user)
    assert response.status_code == 403, response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"from": "not a number", "text": "hi"}, "from"),
        ({"from": "12", "text": "hi"}, "from"),
        ({"text": "hi"}, "from"),
        ({"from": CUSTOMER}, "text"),
        ({"from": CUSTOMER, "text": "hi", "channel": "sms"}, "channel"),
    ],
)
def test_a_simulated_message_names_what_is_wrong_with_it(
    api: Api, body: dict[str, str], field: str
) -> None:
    response = api.client.post("/v1/dev/inbound", json=body, headers=api.admin)
    assert response.status_code == 422, response.text
    assert field in str(response.json()["detail"])


def test_buttons_render_with_their_numbers_and_ids() -> None:
    assert interactive_text(WELCOME) == "Welcome! How can we help?\n1. New Order\n2. Support"
    assert interactive_text(WELCOME, with_ids=True) == WELCOME_TEXT


def test_a_list_renders_header_rows_across_sections_and_footer() -> None:
    assert interactive_text(PRODUCTS, with_ids=True) == PRODUCTS_TEXT
    assert interactive_text(PRODUCTS).splitlines()[2:5] == ["1. Monstera", "2. Fern", "3. Cactus"]


def test_a_malformed_menu_still_renders_what_it_has() -> None:
    assert interactive_text({"body": {"text": "Pick"}, "action": "oops"}) == "Pick"
    assert interactive_text({}) == ""
    assert interactive_text(buttons("", ("a", "A")), with_ids=True) == "1. A (id a)"
