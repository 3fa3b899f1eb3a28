"""Menu conversations are known to Temporal by Nudge's contact id, never by a phone number;
conversations begun under the old address-based ids are still routed to until they end."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from domain.channels import ChannelName
from settings import WhatsAppSettings
from starter.inbound import handle_inbound
from store.repo import Store
from tests.fakes.graph import FakeGraph
from tests.fakes.server import serve
from tests.menu_rig import PHONE, Rig, closing, interactive, running_rig, text
from tests.menus import PRODUCTS, WELCOME, shop_menu
from worker import whatsapp_channel
from workflows.menu_conversation import MenuConversation
from workflows.menu_payloads import (
    MenuConversationInput,
    MenuConversationResult,
    MenuMessage,
    legacy_workflow_id_for,
    workflow_id_for,
)
from workflows.search_attributes import ALL

DIGITS = PHONE.lstrip("+")


@pytest.fixture
async def dev_rig(
    dev_env: WorkflowEnvironment, store: Store, task_queue: str
) -> AsyncIterator[Rig]:
    """The menu rig on the real dev server (the one ``nudge dev`` runs), where a run is
    described as the Web UI shows it."""
    graph = FakeGraph()
    with serve(graph.app) as server:
        channel = whatsapp_channel(
            WhatsAppSettings(
                token=graph.token, phone_number_id=graph.phone_number_id, graph_url=server.url
            )
        )
        async with running_rig(dev_env, store, task_queue, channel, graph=graph) as made:
            yield made
            for workflow_id in (made.workflow_id, legacy_workflow_id_for("whatsapp", PHONE)):
                with contextlib.suppress(RPCError):  # none, or ended already
                    await dev_env.client.get_workflow_handle(workflow_id).terminate("finished")


async def test_a_new_conversation_shows_the_contact_id_and_no_phone_number(dev_rig: Rig) -> None:
    dev_rig.store.save_menu(shop_menu())
    assert await dev_rig.say("hi") == "trigger:main_menu"
    await dev_rig.replies(1)

    contact = dev_rig.contact_id
    assert dev_rig.workflow_id == f"menu:whatsapp:{contact}"
    description = await dev_rig.handle().describe()
    assert description.status == WorkflowExecutionStatus.RUNNING
    assert await description.static_summary() == f"Menu main_menu with contact {contact}"
    shown = {
        key.name: description.typed_search_attributes.get(key)
        for key in ALL
        if description.typed_search_attributes.get(key) is not None
    }
    assert shown == {
        "NudgeKind": "menu",
        "NudgeStatus": "active",
        "ContactId": str(contact),
        "Channel": "whatsapp",
    }
    metadata = await dev_rig.handle().query(
        "__temporal_workflow_metadata", result_type=WorkflowMetadata
    )
    everything_shown = [
        description.id,
        await description.static_summary() or "",
        await description.static_details() or "",
        metadata.current_details,
        *map(str, shown.values()),
    ]
    assert not [shown for shown in everything_shown if DIGITS in shown]


async def _start_under_the_old_id(dev_rig: Rig) -> str:
    """A conversation as one began before ids named the contact: ``menu:whatsapp:{phone}``."""
    menu = shop_menu()
    dev_rig.store.save_menu(menu)
    legacy_id = legacy_workflow_id_for("whatsapp", PHONE)
    now = await dev_rig.env.get_current_time()
    await handle_inbound(dev_rig.store, "whatsapp", "wamid.old", PHONE, text="hi", received_at=now)
    await dev_rig.env.client.start_workflow(
        MenuConversation.run,
        MenuConversationInput(ChannelName.whatsapp, PHONE, menu, contact_id=dev_rig.contact_id),
        id=legacy_id,
        task_queue=dev_rig.task_queue,
        start_signal="message",
        start_signal_args=[MenuMessage("wamid.old", "hi")],
    )
    return legacy_id


async def test_a_conversation_begun_under_the_old_id_is_routed_to_until_it_ends(
    dev_rig: Rig,
) -> None:
    """Started as the release before this one did (id ``menu:{channel}:{phone}``): the
    customer's next messages reach it, not a new run under the contact's id."""
    legacy_id = await _start_under_the_old_id(dev_rig)
    assert interactive((await dev_rig.replies(1))[0]) == WELCOME

    # A trigger word too goes to the running conversation (here: no option of its step).
    assert await dev_rig.say("hello") == "conversation"
    assert interactive((await dev_rig.replies(2))[1])["action"] == WELCOME["action"]
    assert await dev_rig.say("New Order", "order") == "conversation"
    assert interactive((await dev_rig.replies(3))[2]) == PRODUCTS
    for said, reply_id in (("Fern", "fern"), ("Small pot", "small")):
        assert await dev_rig.say(said, reply_id) == "conversation"
    assert text((await dev_rig.replies(5))[4]) == "How many plants?"
    assert text(await dev_rig.exchange("7")) == "Order for 7 plants noted!"

    legacy = dev_rig.env.client.get_workflow_handle(legacy_id)
    assert await closing(legacy) == WorkflowExecutionStatus.COMPLETED
    sessions = dev_rig.store.list_menu_sessions("main_menu")
    assert [(s.status, s.context) for s in sessions] == [("completed", {"qty": "7"})]
    # The shared dev server may hold an ended run of an earlier test under the same id.
    began = (await legacy.describe()).start_time
    with contextlib.suppress(RPCError):  # none at all
        other = await dev_rig.handle().describe()
        assert other.start_time < began, "a run was started under the contact's id"

    # Once it has ended, the next conversation starts under the contact's id.
    assert await dev_rig.say("hi") == "trigger:main_menu"
    await dev_rig.replies(7)
    assert (await dev_rig.handle().describe()).id == workflow_id_for("whatsapp", dev_rig.contact_id)


async def test_stop_reaches_a_conversation_under_the_old_id(dev_rig: Rig) -> None:
    legacy_id = await _start_under_the_old_id(dev_rig)
    await dev_rig.replies(1)
    assert await dev_rig.say("STOP") == "opt_out"
    legacy = dev_rig.env.client.get_workflow_handle(legacy_id)
    assert await closing(legacy) == WorkflowExecutionStatus.COMPLETED
    result = await dev_rig.env.client.get_workflow_handle(
        legacy_id, result_type=MenuConversationResult
    ).result()
    assert (result.status, result.reason) == ("cancelled", "opted out")
