"""MenuConversation on the time-skipping server: menus, questions, restart, hand-off, sliding
expiry, opt-out, keyword precedence and continue-as-new.

Messages come in the way the webhook hands them over (recorded by ``handle_inbound``, routed
by ``MenuRouter``); replies go out through the real send path and the real WhatsApp Cloud
client to a fake Graph API server, whose received bodies the tests read: the ``rig`` of
``tests/menu_rig.py``, walking the shop menu of ``tests/menus.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from domain.channels import ChannelName
from domain.menu_matching import pick_menu
from settings import MenusSettings, Settings, TemporalSettings, TwilioSettings
from starter.inbound import handle_inbound, handle_status, signal_status
from starter.menu_routing import MenuRouter
from store.models import BusinessEvent, OutboxMessage
from store.repo import Store
from tests.fakes.server import serve
from tests.fakes.twilio import FakeTwilio
from tests.menu_rig import BUSY, HINT, PHONE, Rig, closing, interactive, running_rig, text
from tests.menus import POTS, PRODUCTS, WELCOME, shop_menu
from tests.waiting import eventually
from worker import twilio_channel
from workflows.menu_conversation import QUEUE_BEFORE_RELEASE, MenuConversation
from workflows.menu_payloads import MenuConversationInput, MenuConversationResult, MenuMessage


async def test_three_level_menu_with_question_and_validation(rig: Rig) -> None:
    rig.store.save_menu(shop_menu())

    assert await rig.say("Hi there!") == "trigger:main_menu"
    first = (await rig.replies(1))[0]
    assert first["to"].lstrip("+") == PHONE.lstrip("+")
    assert interactive(first) == WELCOME

    assert interactive(await rig.exchange("New Order", "order")) == PRODUCTS
    # Typed text that is a row's title counts as choosing that row.
    assert interactive(await rig.exchange("fern")) == POTS
    # Anything else: the same step again, with a hint (never silence).
    again = interactive(await rig.exchange("blue please"))
    assert again["body"]["text"] == f"{HINT}\n\nWhich pot size?"
    assert again["action"] == POTS["action"]

    assert text(await rig.exchange("Large pot", "large")) == "How many plants?"
    assert text(await rig.exchange("a dozen")) == "Please send a number"
    assert text(await rig.exchange("12")) == "Order for 12 plants noted!"

    result = await rig.result()
    assert (result.status, result.last_step, result.context) == ("completed", "done", {"qty": "12"})

    sessions = rig.store.list_menu_sessions("main_menu")
    assert [(s.status, s.last_step, s.context) for s in sessions] == [
        ("completed", "done", {"qty": "12"})
    ]
    directions = [entry["direction"] for entry in sessions[0].transcript]
    assert directions == ["in", "out"] * 7
    with rig.store.engine.connect() as connection:
        events = connection.execute(
            select(BusinessEvent.name, BusinessEvent.payload).where(
                BusinessEvent.name != "message_received"  # one per inbound message
            )
        ).all()
    assert len(events) == 1 and events[0][0] == "new_order"
    assert events[0][1]["context"] == {"qty": "12"}
    await rig.record("menu_conversation_completed")


async def test_restart_and_menu_go_back_to_start_and_forget_answers(rig: Rig) -> None:
    rig.store.save_menu(shop_menu())
    await rig.say("hello")
    await rig.replies(1)
    await rig.exchange(reply_id="order", text="New Order")
    assert interactive(await rig.exchange("restart")) == WELCOME
    assert (await rig.view()).step == "initial"

    await rig.exchange(reply_id="order", text="New Order")
    await rig.exchange(reply_id="cactus", text="Cactus")
    await rig.exchange(reply_id="small", text="Small pot")
    await rig.exchange("3")  # answered; the end step completes the conversation
    assert (await rig.result()).context == {"qty": "3"}

    # A new conversation starts afresh; "MENU" mid-way goes back to the start.
    await rig.say("hi")
    await rig.replies(8)
    await rig.exchange(reply_id="order", text="New Order")
    assert interactive(await rig.exchange("MENU")) == WELCOME


async def test_handoff_stops_the_bot_until_released(rig: Rig) -> None:
    rig.store.save_menu(shop_menu())
    await rig.say("hi")
    await rig.replies(1)
    assert text(await rig.exchange("Support", "support")) == "An agent will reply soon."
    view = await rig.view()
    assert view.handed_off and view.step == "agent"
    assert rig.store.menu_stats("main_menu").handed_off == 1

    # The customer writes again, even a trigger keyword: the bot stays quiet.
    assert await rig.say("are you there?") == "conversation"
    assert await rig.say("hi") == "trigger:main_menu"  # signal-with-start: the same one
    assert (await rig.view()).handed_off
    assert len(rig.graph.sent) == 2

    await rig.handle().signal(MenuConversation.release)
    result = await rig.result()
    assert (result.status, result.reason) == ("handed_off", "released by an agent")
    assert len(rig.graph.sent) == 2
    await rig.record("menu_conversation_handoff")


async def test_expiry_slides_with_each_message(rig: Rig) -> None:
    rig.store.save_menu(shop_menu(expiry="2h", expiry_message="Session closed. Say hi anytime."))
    began = await rig.env.get_current_time()
    await rig.say("hi")
    await rig.replies(1)

    await rig.env.sleep(timedelta(minutes=90))
    await rig.exchange("New Order", "order")  # 90 min in: still open, and the clock restarts
    await rig.env.sleep(timedelta(minutes=90))  # 3 h after the start, 90 min after the reply
    assert (await rig.view()).step == "products", "an absolute 2 h expiry would have ended it"

    await rig.env.sleep(timedelta(hours=1))  # 2.5 h since the reply
    result = await rig.result()
    assert result.status == "expired" and result.last_step == "products"
    assert result.ended_at is not None
    idle = result.ended_at - began
    assert timedelta(minutes=90) + timedelta(hours=2) <= idle < timedelta(hours=4)
    # The window was still open (the last message was 2 h ago): the expiry message went out.
    assert text((await rig.replies(3))[-1]) == "Session closed. Say hi anytime."
    stats = rig.store.menu_stats("main_menu")
    assert (stats.started, stats.expired, stats.drop_off) == (1, 1, {"products": 1})
    await rig.record("menu_conversation_expired")


async def test_expiry_message_is_not_sent_once_the_whatsapp_window_closed(rig: Rig) -> None:
    """Validation now refuses an ``expiry_message`` with an expiry of 24h or more, but a
    definition saved before that rule still runs: the send path keeps the window shut."""
    rig.store.save_menu(shop_menu(expiry="25h", expiry_message="Session closed."))
    await rig.say("hi")
    await rig.replies(1)
    await rig.env.sleep(timedelta(hours=26))
    result = await rig.result()
    assert result.status == "expired"
    await asyncio.sleep(0.3)
    assert len(rig.graph.sent) == 1, "outside the 24-hour window nothing free-form is sent"


async def test_stop_ends_the_conversation_without_another_word(rig: Rig) -> None:
    rig.store.save_menu(shop_menu())
    await rig.say("hi")
    await rig.replies(1)
    assert await rig.say("STOP") == "opt_out"
    result = await rig.result()
    assert (result.status, result.reason) == ("cancelled", "opted out")
    assert len(rig.graph.sent) == 1
    # Opted out, a trigger keyword starts a conversation whose first send is suppressed.
    await rig.say("hi")
    assert (await rig.result()).status == "cancelled"
    assert len(rig.graph.sent) == 1


async def test_trigger_keyword_precedence(rig: Rig) -> None:
    greet = shop_menu(name="greeting", trigger_keywords=["hi"], priority=1)
    greet_long = shop_menu(name="greeting_long", trigger_keywords=["hi there"], priority=1)
    order = shop_menu(name="orders", trigger_keywords=["order", "buy"], priority=5)
    cafe = shop_menu(name="cafe", trigger_keywords=["cafe"], priority=0)
    menus = [greet, greet_long, order, cafe]

    assert pick_menu(menus, "Hi there!") is greet_long  # same priority: longer keyword
    assert pick_menu(menus, "hi, I want to ORDER") is order  # higher priority wins
    assert pick_menu(menus, "this is it") is None  # "hi" is not a whole word here
    assert pick_menu(menus, "Hí") is greet  # accents and case do not matter
    assert pick_menu(menus, "un café por favor") is cafe
    assert pick_menu([greet.model_copy(update={"active": False})], "hi") is None

    for menu in menus:
        rig.store.save_menu(menu)
    assert await rig.say("HI THERE") == "trigger:greeting_long"
    await rig.replies(1)
    view = await rig.view()
    assert view.menu == "greeting_long"


async def test_long_conversation_continues_as_new_with_its_state(rig: Rig) -> None:
    menu = shop_menu()
    now = await rig.env.get_current_time()
    await handle_inbound(rig.store, "whatsapp", "wamid.0", PHONE, text="hi", received_at=now)
    await rig.env.client.start_workflow(
        MenuConversation.run,
        MenuConversationInput(ChannelName.whatsapp, PHONE, menu, history_limit=60),
        id=rig.workflow_id,
        task_queue=rig.task_queue,
        start_signal="message",
        start_signal_args=[MenuMessage("wamid.start", "hi")],
    )
    first_run = (await rig.handle().describe()).run_id
    await rig.replies(1)
    sent = 1
    for round_ in range(6):
        for reply_id, title in (("order", "New Order"), ("fern", "Fern"), ("small", "Small pot")):
            await rig.message(MenuMessage(f"wamid.{round_}.{reply_id}", title, reply_id))
            sent += 1
            await rig.replies(sent)
        await rig.message(MenuMessage(f"wamid.{round_}", "menu"))
        sent += 1
        await rig.replies(sent)
    assert (await rig.handle().describe()).run_id != first_run
    await rig.message(MenuMessage("wamid.o", "x", "order"))
    await rig.message(MenuMessage("wamid.f", "x", "fern"))
    await rig.message(MenuMessage("wamid.s", "x", "small"))
    await rig.message(MenuMessage("wamid.q", "7"))
    result = await rig.result()
    assert (result.status, result.context) == ("completed", {"qty": "7"})
    sessions = rig.store.list_menu_sessions("main_menu")
    assert len(sessions) == 1, "one session across every run"
    assert len(sessions[0].transcript) == 2 * (1 + 6 * 4 + 4)


async def test_whatsapp_through_twilio_gets_numbered_text_menus(
    fresh_time_env: WorkflowEnvironment, store: Store, task_queue: str
) -> None:
    """Twilio's WhatsApp has no interactive messages here: the menu goes out as numbered
    text, and the customer may answer with the number or the option's title."""
    twilio = FakeTwilio()
    store.save_menu(shop_menu())
    with serve(twilio.app) as server:
        channel = twilio_channel(
            TwilioSettings(
                account_sid=twilio.account_sid,
                auth_token=twilio.auth_token,
                whatsapp_from="+15005550006",
                base_url=server.url,
            ),
            ChannelName.whatsapp_twilio,
        )
        async with running_rig(
            fresh_time_env, store, task_queue, channel, via=ChannelName.whatsapp_twilio
        ) as rig:

            async def bodies(count: int) -> list[tuple[str, str]]:
                await eventually(lambda: len(twilio.messages) >= count, every=0.02)
                assert len(twilio.messages) == count
                return [(m["To"], m["Body"]) for m in twilio.messages]

            await rig.say("hi")
            to, body = (await bodies(1))[0]
            assert to == f"whatsapp:{PHONE}"
            assert body == "Welcome! How can we help?\n1. New Order\n2. Support"
            await rig.say("1")
            assert (await bodies(2))[1][1] == (
                "Our plants\nWhich plant would you like?\n1. Monstera\n2. Fern\n3. Cactus\n"
                "Prices include delivery"
            )
            await rig.say("cactus")
            assert (await bodies(3))[2][1].startswith("Which pot size?\n1. Small pot")


async def test_fallback_reply_at_most_once_per_period(rig: Rig) -> None:
    rig.store.save_menu(shop_menu())
    fallback = Settings(
        _env_file=None,
        temporal=TemporalSettings(task_queue=rig.task_queue),
        menus=MenusSettings(fallback_text="Thanks! Say hi for our menu.", fallback_period="1h"),
    )

    async def client() -> Any:
        return rig.env.client

    rig.router = MenuRouter(fallback, rig.store, client)
    assert await rig.say("what are your opening hours?") == "fallback"
    assert text((await rig.replies(1))[0]) == "Thanks! Say hi for our menu."
    assert await rig.say("hello?? opening hours") == "trigger:main_menu"  # a keyword: the menu
    await rig.replies(2)
    await rig.exchange("Support", "support")  # handed off: the conversation keeps the rest
    assert await rig.say("still there?") == "conversation"
    await rig.handle().signal(MenuConversation.release)
    await rig.result()
    assert await rig.say("anyone?") == "fallback"  # the workflow decides whether one is due
    assert (await rig.result()).status == "ignored", "one fallback per hour"
    assert len(rig.graph.sent) == 3

    silent = Settings(_env_file=None, temporal=TemporalSettings(task_queue=rig.task_queue))
    rig.router = MenuRouter(silent, rig.store, client)
    rig.store.delete_menu("main_menu")
    assert await rig.say("hi") == "ignored", "no menu, and the fallback is off when empty"


async def test_messages_queued_when_an_agent_releases_go_to_the_transcript(rig: Rig) -> None:
    """The customer writes to the agent (even with a trigger word) and the release comes
    before the conversation has taken that message: it is kept in the transcript, the bot
    stays quiet, and the conversation ends - no main menu, no second run."""
    rig.store.save_menu(shop_menu())
    await rig.say("hi")
    await rig.replies(1)
    first_run = (await rig.handle().describe()).run_id
    rig.graph.hold.hold_next(BUSY)  # the workflow is busy handing off while both arrive
    await rig.say("Support", "support")
    await rig.replies(2)
    assert await rig.say("hello, is anyone there?") == "trigger:main_menu"
    await rig.handle().signal(MenuConversation.release)

    run = rig.env.client.get_workflow_handle(
        rig.workflow_id, run_id=first_run, result_type=MenuConversationResult
    )
    closed = await closing(run)
    assert closed == WorkflowExecutionStatus.COMPLETED, "the message was routed afresh"
    result = await run.result()
    assert (result.status, result.reason) == ("handed_off", "released by an agent")
    history = await run.fetch_history()
    assert QUEUE_BEFORE_RELEASE in patches(history), "the release did not find it queued"
    await asyncio.sleep(0.3)
    assert len(rig.graph.sent) == 2
    sessions = rig.store.list_menu_sessions("main_menu")
    assert [s.status for s in sessions] == ["handed_off"]
    last = sessions[0].transcript[-1]
    assert (last["direction"], last["text"], last["step"]) == (
        "in",
        "hello, is anyone there?",
        "agent",
    )
    await rig.record("menu_conversation_release_queued")


def patches(history: WorkflowHistory) -> list[str]:
    """The ``workflow.patched`` ids a run recorded: the paths it took that old runs did not."""
    found = []
    for event in history.events:
        if event.HasField("marker_recorded_event_attributes"):
            marker = event.marker_recorded_event_attributes
            if marker.marker_name == "core_patch":
                found.append(json.loads(marker.details["patch-data"].payloads[0].data)["id"])
    return found


def connected(env: WorkflowEnvironment) -> Callable[[], Awaitable[Client]]:
    """What ``signal_status`` gets the Temporal client from (the app's lazy connection)."""

    async def client() -> Client:
        return env.client

    return client


async def test_a_failed_delivery_is_noted_in_the_transcript(rig: Rig) -> None:
    """The status webhook signals the conversation that sent a message; a ``failed`` one is
    written into the transcript at the step it was sent from, other statuses are not."""
    rig.store.save_menu(shop_menu())
    await rig.say("hi")
    await rig.replies(1)

    def last_sent() -> str | None:
        """The provider's id of the conversation's latest message, once it is marked sent."""
        with rig.store.engine.connect() as connection:
            row = connection.execute(
                select(OutboxMessage.provider_message_id, OutboxMessage.status)
                .where(OutboxMessage.workflow_id == rig.workflow_id)
                .order_by(OutboxMessage.id.desc())
            ).first()
        return row[0] if row is not None and row[1] == "sent" else None

    async def report(status: str) -> None:
        assert await eventually(lambda: last_sent() is not None, every=0.02)
        wamid = last_sent()
        assert wamid is not None
        now = await rig.env.get_current_time()
        result = await handle_status(rig.store, "whatsapp", wamid, status, occurred_at=now)
        assert result.advanced and result.workflow_id == rig.workflow_id
        await signal_status(connected(rig.env), result, status)

    await report("failed")  # the welcome menu never reached the customer
    assert text(await rig.exchange("Support", "support")) == "An agent will reply soon."
    await report("delivered")  # this one did: nothing to note
    await rig.view()
    await rig.handle().signal(MenuConversation.release)
    await rig.result()

    transcript = rig.store.list_menu_sessions("main_menu")[0].transcript
    assert [(e["direction"], e["step"]) for e in transcript] == [
        ("in", "initial"),
        ("out", "initial"),
        ("status", "initial"),
        ("in", "initial"),
        ("out", "agent"),
    ]
    assert transcript[2]["text"].startswith("failed")
    await rig.record("menu_conversation_delivery_failed")


async def test_one_fallback_per_period_over_twilio_and_the_cloud_api(rig: Rig) -> None:
    """Twilio's WhatsApp and the Cloud API reach the same WhatsApp number: one contact, so
    one fallback auto-reply per period whichever way they write."""
    fallback = Settings(
        _env_file=None,
        temporal=TemporalSettings(task_queue=rig.task_queue),
        menus=MenusSettings(fallback_text="Thanks! Say hi for our menu.", fallback_period="1h"),
    )

    async def client() -> Any:
        return rig.env.client

    rig.router = MenuRouter(fallback, rig.store, client)
    rig.channel = ChannelName.whatsapp_twilio  # no Twilio client here: sent sandboxed
    assert await rig.say("what are your opening hours?") == "fallback"
    assert (await rig.result()).status == "fallback"

    rig.channel = ChannelName.whatsapp
    assert await rig.say("and on sundays?") == "fallback"
    assert (await rig.result()).status == "ignored", "a second fallback within the hour"
    assert rig.graph.sent == []
