"""MenuRouter when Temporal falters: a scripted client for a blip inside one routing, the
real dev server and the real webhook route for a message whose routing failed outright."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from domain.channels import ChannelName
from service import create_app
from settings import MenusSettings, PolicySettings, Settings, TemporalSettings, WhatsAppSettings
from starter.inbound import handle_inbound
from starter.menu_routing import MenuRouter, RoutedMessage
from store.db import upgrade
from store.models import InboundMessage
from store.repo import Store
from tests.fakes.graph import FakeGraph
from tests.fakes.server import free_port, serve
from tests.menus import WELCOME, shop_menu
from tests.routing_lease import age_lease
from tests.waiting import wait_for
from worker import build_activities, build_worker
from workflows.menu_conversation import MenuConversation
from workflows.menu_payloads import MenuMessage

PHONE = "+15551230001"


class _NoConversation:
    async def signal(self, name: str, *args: Any) -> None:
        raise RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b"")


class FlakyTemporal:
    """No conversation is running; the first ``start_workflow`` finds Temporal unavailable
    (a restart), the next ones work."""

    def __init__(self, failures: int = 1) -> None:
        self.failures = failures
        self.started: list[str] = []

    def get_workflow_handle(self, workflow_id: str) -> _NoConversation:
        return _NoConversation()

    async def start_workflow(self, *args: Any, **kwargs: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")
        self.started.append(kwargs["id"])


async def test_fallback_reply_survives_a_temporal_blip(store: Store) -> None:
    """A routing that meets Temporal unavailable is tried again, and the retry still sends
    the fallback auto-reply: the once-per-period slot is claimed by the workflow that sends
    it, not by the router, so a failed attempt cannot use it up."""
    temporal = FlakyTemporal(failures=1)

    async def client() -> Any:
        return temporal

    settings = Settings(
        _env_file=None,
        temporal=TemporalSettings(task_queue="tq-review"),
        menus=MenusSettings(fallback_text="Thanks! Say hi for our menu.", fallback_period="1h"),
    )
    router = MenuRouter(settings, store, client)
    now = datetime.now(UTC)
    inbound = await handle_inbound(
        store, "whatsapp", "wamid.blip", PHONE, text="opening hours?", received_at=now
    )
    assert inbound is not None
    routed = RoutedMessage(
        ChannelName.whatsapp,
        inbound.address,
        inbound.contact_id,
        MenuMessage("wamid.blip", "opening hours?", None, now),
        inbound.keyword,
    )
    outcome = await router.submit(routed)
    assert outcome == "fallback", f"routing answered {outcome!r} after one retry"
    assert len(temporal.started) == 1


CUSTOMER = "15551230077"
APP_SECRET = "router-app-secret"


def webhook_settings(
    database_url: str, temporal_address: str, task_queue: str, graph: FakeGraph, graph_url: str
) -> Settings:
    return Settings(
        _env_file=None,
        database_url=database_url,
        temporal=TemporalSettings(address=temporal_address, task_queue=task_queue),
        whatsapp=WhatsAppSettings(
            token=graph.token,
            phone_number_id=graph.phone_number_id,
            graph_url=graph_url,
            app_secret=APP_SECRET,
        ),
        policy=PolicySettings(quiet_hours_start="00:00", quiet_hours_end="00:00"),
    )


@pytest.mark.parametrize("recovery", ["provider retry", "sweep"])
async def test_a_message_whose_routing_failed_is_answered_once_temporal_is_back(
    dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str, recovery: str
) -> None:
    """The HTTP service accepts a WhatsApp "hi" while Temporal is unreachable: it answers
    Meta 200 and the message stays stored, unrouted. A retry within the lease changes
    nothing; once the lease has run out, Meta's retry of the webhook (or the sweep of a
    restarted service) routes it, and the customer gets the welcome menu, once."""
    database_url = f"sqlite:///{tmp_path / 'nudge.db'}"
    upgrade(database_url)
    store = Store.from_url(database_url)
    graph = FakeGraph()
    store.save_menu(shop_menu())
    wamid = graph.new_wamid()
    raw, headers = graph.signed(graph.inbound_text(CUSTOMER, "hi", wamid=wamid), APP_SECRET)
    with serve(graph.app) as graph_server:
        down = create_app(
            webhook_settings(
                database_url, f"127.0.0.1:{free_port()}", task_queue, graph, graph_server.url
            ),
            store=store,
        )
        router: MenuRouter = down.state.menu_router
        router.retry_delays = ()  # give up at once, as after the retries of a long outage
        with serve(down) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as hooks:
                for _ in range(2):  # the second is a retry while the first routing runs
                    response = await hooks.post("/webhooks/whatsapp", content=raw, headers=headers)
                    assert response.status_code == 200
                await router.drain()
        with store.engine.connect() as connection:
            rows = connection.execute(
                select(InboundMessage.routed_at, InboundMessage.route_attempts)
            ).all()
        assert rows == [(None, 1)], "stored once, not routed, one attempt"
        age_lease(store)

        up = create_app(
            webhook_settings(
                database_url,
                dev_env.client.service_client.config.target_host,
                task_queue,
                graph,
                graph_server.url,
            ),
            store=store,
        )
        settings: Settings = up.state.settings
        async with (
            build_activities(settings, store) as activities,
            build_worker(dev_env.client, settings, activities.all()),
        ):
            with serve(up) as server:
                if recovery == "sweep":
                    assert await up.state.menu_router.sweep() == 1
                else:
                    async with httpx.AsyncClient(base_url=server.url, timeout=10) as hooks:
                        response = await hooks.post(
                            "/webhooks/whatsapp", content=raw, headers=headers
                        )
                        assert response.status_code == 200
                await up.state.menu_router.drain()
                await wait_for(lambda: len(graph.sent) >= 1)
                # Neither another retry nor another sweep answers it again.
                assert await up.state.menu_router.sweep() == 0
                async with httpx.AsyncClient(base_url=server.url, timeout=10) as hooks:
                    response = await hooks.post("/webhooks/whatsapp", content=raw, headers=headers)
                    assert response.status_code == 200
                await up.state.menu_router.drain()
                await asyncio.sleep(0.5)
            contact = store.contact_for("whatsapp", f"+{CUSTOMER}")
            handle = dev_env.client.get_workflow_handle(f"menu:whatsapp:{contact}")
            view = await handle.query(MenuConversation.view)
            assert view is not None and view.step == "initial"
            await handle.terminate("test finished")
    assert [m["interactive"] for m in graph.sent] == [WELCOME]
    with store.engine.connect() as connection:
        routed = connection.execute(select(InboundMessage.routed_at)).scalar_one()
    assert routed is not None
    store.close()
