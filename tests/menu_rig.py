"""The rig the menu conversation tests drive a customer's chat with, and its ``rig`` fixture.

Messages come in the way the webhook hands them over (recorded by ``handle_inbound``, routed
by ``MenuRouter``); replies go out through the real send path and a real channel client to a
fake provider. The ``rig`` fixture sends over the WhatsApp Cloud API to a fake Graph API,
whose received bodies the tests read; ``running_rig`` builds the same rig over any other
channel client (Twilio's WhatsApp, say). Registered for every test in ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.delivery import DeliveryActivities
from activities.menus import MenuActivities
from domain.channels import ChannelName
from integrations.channels import Channel
from settings import MenusSettings, PolicySettings, Settings, TemporalSettings, WhatsAppSettings
from starter.inbound import handle_inbound
from starter.menu_routing import MenuRouter, RoutedMessage
from store.repo import Store
from tests.fakes.graph import FakeGraph
from tests.fakes.server import serve
from tests.waiting import eventually, first_result, wait_for
from worker import whatsapp_channel
from workflows.menu_conversation import MenuConversation
from workflows.menu_payloads import MenuConversationResult, MenuMessage, MenuView, workflow_id_for
from workflows.send_message import SendMessage

PHONE = "+15551239876"
"""The customer every rig talks for."""
HINT = "Please tap one of the options."
"""What the rig's router puts before a step shown again after an answer that is no option."""
BUSY = 5.0
"""Real seconds the fake Graph API holds a send's answer to keep a workflow busy while a test
signals it: far longer than a signal takes, even on a loaded CI machine."""


@dataclass
class Rig:
    """A worker running ``MenuConversation`` and the router that starts and signals it, for
    one customer (``PHONE``) on one channel; ``graph`` is the fake Graph API replies reach."""

    env: WorkflowEnvironment
    store: Store
    graph: FakeGraph
    router: MenuRouter
    task_queue: str
    channel: ChannelName = ChannelName.whatsapp

    @property
    def contact_id(self) -> int:
        """The contact ``PHONE`` is (created on first use, as the first message would)."""
        return self.store.contact_for("whatsapp", PHONE)

    @property
    def workflow_id(self) -> str:
        return workflow_id_for(self.channel.value, self.contact_id)

    def handle(self) -> WorkflowHandle[Any, Any]:
        return self.env.client.get_workflow_handle(self.workflow_id)

    async def say(self, text: str = "", reply_id: str | None = None) -> str:
        """A customer message as the webhook hands it over; what the router did with it."""
        wamid = f"wamid.{uuid.uuid4().hex}"
        now = await self.env.get_current_time()
        inbound = await handle_inbound(
            self.store, "whatsapp", wamid, PHONE, text=text, received_at=now, reply_id=reply_id
        )
        assert inbound is not None
        routed = RoutedMessage(
            self.channel,
            inbound.address,
            inbound.contact_id,
            MenuMessage(wamid, text, reply_id, now),
            inbound.keyword,
        )
        return await self.router.route(routed)

    async def replies(self, count: int) -> list[dict[str, Any]]:
        """Wait (in real time) until the fake Graph API has received ``count`` messages."""
        await eventually(lambda: len(self.graph.sent) >= count, every=0.02)
        assert len(self.graph.sent) == count, [m.get("type") for m in self.graph.sent]
        return self.graph.sent

    async def exchange(self, text: str = "", reply_id: str | None = None) -> dict[str, Any]:
        """Say something and return the one reply it gets."""
        before = len(self.graph.sent)
        await self.say(text, reply_id)
        return (await self.replies(before + 1))[-1]

    async def view(self) -> MenuView:
        """The conversation's view once it has no message pending."""

        async def settled() -> MenuView | None:
            found: MenuView | None = await self.handle().query(MenuConversation.view)
            return found if found is not None and found.pending == 0 else None

        view = await first_result(settled, every=0.02)
        if view is None:
            raise AssertionError("the conversation did not settle")
        return view

    async def message(self, message: MenuMessage) -> None:
        """Signal a message straight to the conversation. The time-skipping test server may
        briefly answer "completed" for a run that is continuing as new: ask again."""

        async def signalled() -> bool:
            try:
                await self.handle().signal(MenuConversation.message, message)
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise
                return False
            return True

        await wait_for(signalled, failure=f"{self.workflow_id} is not running")

    async def record(self, name: str) -> None:
        """With NUDGE_RECORD_HISTORIES=1, keep this run's history for the replay test."""
        if os.environ.get("NUDGE_RECORD_HISTORIES") == "1":
            history = await self.handle().fetch_history()
            Path(__file__).with_name("histories").joinpath(f"{name}.json").write_text(
                history.to_json()
            )

    async def result(self) -> MenuConversationResult:
        handle = self.env.client.get_workflow_handle_for(MenuConversation.run, self.workflow_id)
        return await handle.result()


@asynccontextmanager
async def running_rig(
    env: WorkflowEnvironment,
    store: Store,
    task_queue: str,
    channel: Channel,
    *,
    via: ChannelName = ChannelName.whatsapp,
    graph: FakeGraph | None = None,
) -> AsyncIterator[Rig]:
    """A worker for menu conversations whose replies on channel ``via`` go out through
    ``channel`` (closed on the way out), and the rig that talks to it. ``graph`` is the fake
    Graph API the rig reads replies from; leave it out when ``channel`` sends elsewhere."""
    # Quiet hours off: menu replies are transactional anyway, and tests run at any hour.
    rules = PolicySettings(quiet_hours_start="00:00", quiet_hours_end="00:00")
    delivery = DeliveryActivities({via: channel}, store, rules)
    menus = MenuActivities(store)
    settings = Settings(
        _env_file=None,
        temporal=TemporalSettings(task_queue=task_queue),
        menus=MenusSettings(hint=HINT),
    )

    async def client() -> Any:
        return env.client

    router = MenuRouter(settings, store, client)
    try:
        async with Worker(
            env.client,
            task_queue=task_queue,
            workflows=[MenuConversation, SendMessage],
            activities=[delivery.deliver, *menus.all()],
        ):
            yield Rig(env, store, graph or FakeGraph(), router, task_queue, via)
    finally:
        await channel.aclose()


@pytest.fixture
async def rig(
    fresh_time_env: WorkflowEnvironment, store: Store, task_queue: str
) -> AsyncIterator[Rig]:
    """A menu rig on WhatsApp's Cloud API, replies going to a fake Graph API."""
    graph = FakeGraph()
    with serve(graph.app) as server:
        channel = whatsapp_channel(
            WhatsAppSettings(
                token=graph.token, phone_number_id=graph.phone_number_id, graph_url=server.url
            )
        )
        async with running_rig(fresh_time_env, store, task_queue, channel, graph=graph) as made:
            yield made


async def closing(handle: WorkflowHandle[Any, Any]) -> WorkflowExecutionStatus | None:
    """How the run of ``handle`` closed, once it has (in real time; None while it runs)."""

    async def closed() -> WorkflowExecutionStatus | None:
        status = (await handle.describe()).status
        return None if status == WorkflowExecutionStatus.RUNNING else status

    return await first_result(closed)


def interactive(sent: dict[str, Any]) -> dict[str, Any]:
    """The interactive part of a message the fake Graph API received (it must be one)."""
    assert sent["type"] == "interactive", sent
    body: dict[str, Any] = sent["interactive"]
    return body


def text(sent: dict[str, Any]) -> str:
    """The text of a message the fake Graph API received (it must be a text message)."""
    assert sent["type"] == "text", sent
    body: str = sent["text"]["body"]
    return body
