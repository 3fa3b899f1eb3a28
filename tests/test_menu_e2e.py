"""A WhatsApp menu end to end on the Temporal dev server: Meta-signed Cloud API webhooks at
the real route, the real worker wiring, and the exact payloads that reach a fake Graph API.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from service import create_app
from settings import PolicySettings, Settings, TemporalSettings, TwilioSettings, WhatsAppSettings
from store.db import upgrade
from store.models import InboundMessage
from store.repo import Role, Store
from tests.fakes.graph import FakeGraph
from tests.fakes.server import serve
from tests.fakes.twilio import FakeTwilio
from tests.menus import POTS, PRODUCTS, WELCOME, shop_menu
from tests.waiting import PATIENCE, wait_for
from worker import build_activities, build_worker

APP_SECRET = "menu-e2e-app-secret"
TWILIO_NUMBER = "+15005550006"
CUSTOMER = "15551239876"
"""As Meta reports a WhatsApp sender: digits, no ``+``."""


@dataclass
class Stack:
    graph: FakeGraph
    hooks: httpx.AsyncClient
    api: httpx.AsyncClient
    store: Store
    twilio: FakeTwilio
    public_url: str

    async def twilio_inbound(self, body: str, sid: str) -> None:
        """What Twilio posts for an incoming WhatsApp message, signed over our public URL."""
        form = {
            "MessageSid": sid,
            "SmsSid": sid,
            "AccountSid": self.twilio.account_sid,
            "From": f"whatsapp:+{CUSTOMER}",
            "To": f"whatsapp:{TWILIO_NUMBER}",
            "Body": body,
            "NumMedia": "0",
            "ProfileName": "Sheena Nelson",
            "WaId": CUSTOMER,
        }
        path = "/webhooks/twilio/inbound"
        signature = self.twilio.sign(self.public_url + path, form)
        response = await self.hooks.post(path, data=form, headers={"X-Twilio-Signature": signature})
        assert response.status_code == 200, response.text

    async def deliver(self, payload: dict[str, Any]) -> None:
        raw, headers = self.graph.signed(payload, APP_SECRET)
        response = await self.hooks.post("/webhooks/whatsapp", content=raw, headers=headers)
        assert response.status_code == 200, response.text

    async def sent(self, count: int, timeout: float = PATIENCE) -> list[dict[str, Any]]:
        await wait_for(lambda: len(self.graph.sent) >= count, within=timeout)
        await asyncio.sleep(0.3)  # nothing more arrives behind them
        assert len(self.graph.sent) == count, self.graph.sent
        return self.graph.sent


def to_customer(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "+" + CUSTOMER,
        **body,
    }


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> AsyncIterator[Stack]:
    database_url = f"sqlite:///{tmp_path / 'nudge.db'}"
    upgrade(database_url)
    graph, twilio = FakeGraph(), FakeTwilio()
    store = Store.from_url(database_url)
    with serve(graph.app) as graph_server, serve(twilio.app) as twilio_server:
        settings = Settings(
            _env_file=None,
            database_url=database_url,
            temporal=TemporalSettings(
                address=dev_env.client.service_client.config.target_host, task_queue=task_queue
            ),
            whatsapp=WhatsAppSettings(
                token=graph.token,
                phone_number_id=graph.phone_number_id,
                graph_url=graph_server.url,
                app_secret=APP_SECRET,
                verify_token="verify",
            ),
            twilio=TwilioSettings(
                account_sid=twilio.account_sid,
                auth_token=twilio.auth_token,
                whatsapp_from=TWILIO_NUMBER,
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
                settings.public_url = app_server.url  # Twilio signs the URL it calls: ours
                async with (
                    httpx.AsyncClient(base_url=app_server.url, timeout=PATIENCE) as hooks,
                    httpx.AsyncClient(
                        base_url=app_server.url,
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=PATIENCE,
                    ) as api,
                ):
                    yield Stack(graph, hooks, api, store, twilio, app_server.url)
            # The dev server is shared and every test writes as the same customer: end what
            # this test left running, so the next one starts its own conversation.
            contact = store.contact_for("whatsapp", f"+{CUSTOMER}")
            for channel in ("whatsapp", "whatsapp_twilio"):
                handle = dev_env.client.get_workflow_handle(f"menu:{channel}:{contact}")
                with contextlib.suppress(RPCError):
                    await handle.terminate("test finished")
    store.close()


async def test_menu_over_the_real_webhook(stack: Stack) -> None:
    graph = stack.graph
    created = await stack.api.post(
        "/v1/menus", json=shop_menu().model_dump(mode="json", by_alias=True)
    )
    assert created.status_code == 201, created.text

    await stack.deliver(graph.inbound_text(CUSTOMER, "Hello!"))
    sent = await stack.sent(1)
    assert sent[0] == to_customer({"type": "interactive", "interactive": WELCOME})

    tap = graph.inbound_button_reply(CUSTOMER, "order", "New Order")
    await stack.deliver(tap)
    await stack.deliver(tap)  # Meta retries: the same wamid is handled once
    sent = await stack.sent(2)
    assert sent[1] == to_customer({"type": "interactive", "interactive": PRODUCTS})

    await stack.deliver(graph.inbound_list_reply(CUSTOMER, "fern", "Fern"))
    sent = await stack.sent(3)
    assert sent[2] == to_customer({"type": "interactive", "interactive": POTS})

    # Two messages from the same phone at once: each handled once, in the order they arrived.
    tap_small = graph.inbound_button_reply(CUSTOMER, "small", "Small pot")
    answer = graph.inbound_text(CUSTOMER, "3")
    await asyncio.gather(stack.deliver(tap_small), stack.deliver(answer))
    sent = await stack.sent(5)
    first = arrival_order(stack.store, [message_id(tap_small), message_id(answer)])[0]
    if first == message_id(tap_small):
        expected = [
            to_customer(
                {"type": "text", "text": {"preview_url": False, "body": "How many plants?"}}
            ),
            to_customer(
                {
                    "type": "text",
                    "text": {"preview_url": False, "body": "Order for 3 plants noted!"},
                }
            ),
        ]
    else:  # "3" reached the pot step first: the step again with the hint, then the tap
        hinted = {**POTS, "body": {"text": "Please choose one of the options.\n\nWhich pot size?"}}
        expected = [
            to_customer({"type": "interactive", "interactive": hinted}),
            to_customer(
                {"type": "text", "text": {"preview_url": False, "body": "How many plants?"}}
            ),
        ]
    assert sent[3:] == expected
    if first != message_id(tap_small):  # answer the question the tap led to
        await stack.deliver(graph.inbound_text(CUSTOMER, "3"))
        done = (await stack.sent(6))[5]
        assert done["text"]["body"] == "Order for 3 plants noted!"

    await wait_for(lambda: bool(stack.store.list_menu_sessions("main_menu", status="completed")))
    sessions = await stack.api.get("/v1/menus/main_menu/sessions")
    assert sessions.status_code == 200
    assert [(s["status"], s["context"]) for s in sessions.json()] == [("completed", {"qty": "3"})]
    stats = (await stack.api.get("/v1/menus/main_menu/stats")).json()
    assert (stats["started"], stats["completed"]) == (1, 1)


async def until_received(stack: Stack, conversation: str, count: int) -> None:
    """Until the running conversation has taken ``count`` customer messages."""

    async def received() -> bool:
        view = await stack.api.get(conversation)
        return view.status_code == 200 and view.json()["received"] >= count

    await wait_for(received, failure=f"the conversation did not get message {count}")


async def until_ended(stack: Stack, conversation: str) -> None:
    """Until the conversation's workflow has ended (its view answers 409)."""

    async def ended() -> bool:
        return (await stack.api.get(conversation)).status_code == 409

    await wait_for(ended, failure="the released conversation did not end")


def message_id(payload: dict[str, Any]) -> str:
    messages = payload["entry"][0]["changes"][0]["value"]["messages"]
    found: str = messages[0]["id"]
    return found


def arrival_order(store: Store, ids: list[str]) -> list[str]:
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(InboundMessage.provider_message_id)
            .where(InboundMessage.provider_message_id.in_(ids))
            .order_by(InboundMessage.id)
        )
        return [row[0] for row in rows]


async def test_an_agent_releases_a_handed_off_conversation(stack: Stack) -> None:
    graph = stack.graph
    await stack.api.put("/v1/menus/main_menu", json=shop_menu().model_dump(mode="json"))
    await stack.deliver(graph.inbound_text(CUSTOMER, "hi"))
    await stack.sent(1)
    await stack.deliver(graph.inbound_button_reply(CUSTOMER, "support", "Support"))
    sent = await stack.sent(2)
    assert sent[1]["text"]["body"] == "An agent will reply soon."

    contact = stack.store.contact_for("whatsapp", f"+{CUSTOMER}")
    conversation = f"/v1/menu-conversations/menu:whatsapp:{contact}"
    await wait_for(lambda: bool(stack.store.list_menu_sessions("main_menu", status="handed_off")))
    view = (await stack.api.get(conversation)).json()
    assert (view["menu"], view["step"], view["handed_off"]) == ("main_menu", "agent", True)
    assert view["received"] == 2

    # Written to the agent (with a trigger word in it): released once the conversation has it.
    await stack.deliver(graph.inbound_text(CUSTOMER, "hello, is someone there?"))
    await until_received(stack, conversation, 3)
    released = await stack.api.post(conversation + "/release")
    assert released.status_code == 202, released.text
    await until_ended(stack, conversation)
    await stack.sent(2)  # the bot said nothing while a person had the conversation, nor after
    gone = await stack.api.post(conversation + "/release")
    assert gone.status_code == 409 and "no longer running" in gone.json()["detail"]
    sessions = stack.store.list_menu_sessions("main_menu")
    assert [s.status for s in sessions] == ["handed_off"], "the message started another menu"
    assert sessions[0].transcript[-1]["text"] == "hello, is someone there?"

    assert (await stack.api.get("/v1/menu-conversations/menu:whatsapp:999999")).status_code == 404
    assert (await stack.api.get("/v1/menu-conversations/followup:x")).status_code == 422


async def test_menu_over_twilio_whatsapp(stack: Stack) -> None:
    """The same menu through Twilio's WhatsApp: signed form posts at the real inbound route,
    numbered text menus at the fake Twilio API, a typed number choosing, a retry once."""
    await stack.api.put("/v1/menus/main_menu", json=shop_menu().model_dump(mode="json"))

    async def bodies(count: int) -> list[tuple[str, str, str]]:
        await wait_for(lambda: len(stack.twilio.messages) >= count)
        await asyncio.sleep(0.3)
        assert len(stack.twilio.messages) == count, stack.twilio.messages
        return [(m["From"], m["To"], m["Body"]) for m in stack.twilio.messages]

    await stack.twilio_inbound("Hello", "SM" + "1" * 32)
    assert (await bodies(1))[0] == (
        f"whatsapp:{TWILIO_NUMBER}",
        f"whatsapp:+{CUSTOMER}",
        "Welcome! How can we help?\n1. New Order\n2. Support",
    )
    await stack.twilio_inbound("1", "SM" + "2" * 32)
    await stack.twilio_inbound("1", "SM" + "2" * 32)  # Twilio retried: handled once
    sent = await bodies(2)
    assert sent[1][2].startswith("Our plants\nWhich plant would you like?\n1. Monstera")
    assert stack.graph.sent == [], "Cloud API untouched: the reply goes back the way it came"
