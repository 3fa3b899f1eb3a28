"""MenuConversation at its edges: messages while a run ends, odd input, long answers, limits.

Driven the way ``tests/test_menu_conversation.py`` drives a conversation (the ``rig``
fixture of ``tests/menu_rig.py``: the router, the real send path, a fake Graph API, the
time-skipping server).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowHandle

from domain.menu_checks import problems
from domain.menu_definition import MenuDefinition
from starter.inbound import handle_inbound
from tests.menu_rig import BUSY, PHONE, Rig, closing, interactive, text
from tests.menus import WELCOME, buttons, shop_menu
from tests.waiting import PATIENCE, eventually, first_result
from workflows.menu_conversation import MAX_EXPIRY, MenuConversation
from workflows.menu_payloads import (
    MenuConversationInput,
    MenuMessage,
    MenuState,
    MenuView,
)


async def sent_after(rig: Rig, count: int, seconds: float = PATIENCE) -> list[dict[str, Any]]:
    """What the fake Graph API received, once it holds ``count`` messages or time is up."""
    await eventually(lambda: len(rig.graph.sent) >= count, within=seconds, every=0.02)
    return list(rig.graph.sent)


async def settled_view(rig: Rig, seconds: float = PATIENCE) -> MenuView | None:
    """The conversation's view once it has no pending message; None if it never settles
    (e.g. its workflow task keeps failing)."""

    async def settled() -> MenuView | None:
        try:
            found: MenuView | None = await asyncio.wait_for(
                rig.handle().query(MenuConversation.view), timeout=5
            )
        except Exception:  # a query that fails or hangs while the workflow task fails
            return None
        return found if found is not None and found.pending == 0 else None

    return await first_result(settled, within=seconds)


def sound(raw: dict[str, Any]) -> MenuDefinition:
    definition = MenuDefinition.model_validate(raw)
    assert problems(definition) == [], problems(definition)
    return definition


# --- messages lost at the end of a run ---------------------------------------------------


def first_run(rig: Rig, run_id: str) -> WorkflowHandle[Any, Any]:
    return rig.env.client.get_workflow_handle(rig.workflow_id, run_id=run_id)


async def test_message_that_arrives_while_the_conversation_completes_is_not_lost(
    rig: Rig,
) -> None:
    """A customer message signalled into the run while it is finishing (sending the end
    step, emitting its event, recording the session) has been reported to the router as
    taken, so nothing else will answer it: the run continues as new and routes it afresh,
    and "hi" gets the menu. The first run closing as continued-as-new shows the message
    reached it before it ended (had it come later, the router would have started a new run).
    """
    rig.store.save_menu(shop_menu())
    await rig.say("hi")
    await rig.replies(1)
    run_id = (await rig.handle().describe()).run_id
    await rig.exchange("New Order", "order")
    await rig.exchange("Fern", "fern")
    await rig.exchange("Small pot", "small")
    rig.graph.hold.hold_next(BUSY)  # the end message is accepted, its answer comes late
    await rig.say("12")
    await rig.replies(5)
    assert await rig.say("hi") == "trigger:main_menu"  # the run is still open: signalled

    sent = await sent_after(rig, 6)
    assert text(sent[4]) == "Order for 12 plants noted!"
    assert len(sent) == 6, "the customer's 'hi' sent while the conversation ended got nothing"
    assert interactive(sent[5]) == WELCOME
    assert await closing(first_run(rig, run_id)) == WorkflowExecutionStatus.CONTINUED_AS_NEW
    sessions = rig.store.list_menu_sessions("main_menu")
    assert [s.status for s in sessions] == ["active", "completed"]


async def test_message_that_arrives_while_the_conversation_expires_is_answered(
    rig: Rig,
) -> None:
    """A message that arrives while the expiry message is being sent: the customer was told
    the session closed, and it did (the session is stored as ``expired``); their message is
    then routed afresh by a continued run, so "hi" gets the menu in a new session. The
    stored outcomes match what each conversation did."""
    rig.store.save_menu(shop_menu(expiry="2h", expiry_message="Session closed."))
    await rig.say("hi")
    await rig.replies(1)
    run_id = (await rig.handle().describe()).run_id
    rig.graph.hold.hold_next(BUSY)  # the expiry message is accepted, its answer comes late
    skipping = asyncio.create_task(rig.env.sleep(timedelta(hours=3)))
    assert text((await rig.replies(2))[-1]) == "Session closed."
    assert await rig.say("hi") == "trigger:main_menu"  # still open: signalled into it
    await skipping

    sent = await sent_after(rig, 3)
    assert len(sent) == 3, "the customer's 'hi' sent at expiry got no answer"
    assert interactive(sent[2]) == WELCOME
    assert await closing(first_run(rig, run_id)) == WorkflowExecutionStatus.CONTINUED_AS_NEW
    view = await settled_view(rig)
    assert view is not None and (view.menu, view.step) == ("main_menu", "initial")
    sessions = rig.store.list_menu_sessions("main_menu")
    assert [s.status for s in sessions] == ["active", "expired"]


# --- crashes on customer input / definitions that pass validation -------------------------


async def test_a_superscript_digit_on_twilio_does_not_wedge_the_conversation(rig: Rig) -> None:
    """On the Twilio (numbered text) channel a typed number picks an option. "²" passes
    ``str.isdigit()`` but ``int("²")`` raises: it must be taken as no option (the step again,
    with the hint), not fail the workflow task (retried forever, the customer's later
    messages piling up unanswered). "1" then picks the first option."""
    rig.channel = rig.channel.whatsapp_twilio  # numbered text menus (sent sandboxed here)
    rig.store.save_menu(shop_menu())
    await rig.say("hi")
    first = await settled_view(rig)
    assert first is not None and first.step == "initial"

    await rig.say("²")
    await rig.say("1")
    view = await settled_view(rig)
    assert view is not None, "the conversation is stuck: its workflow task keeps failing"
    assert view.step == "products"


async def test_an_expiry_validation_never_saw_is_capped_by_the_workflow(rig: Rig) -> None:
    """``problems`` refuses an expiry over 30 days, but a run may carry a definition nobody
    checked (stored before that rule, or built in code). An expiry such as "4000000d" (a
    typo for 4000000s) would overflow ``datetime`` when the wait is computed and fail every
    workflow task; the workflow caps its timer at ``MAX_EXPIRY`` instead, so the
    conversation goes on and still expires."""
    menu = shop_menu().model_copy(update={"expiry": timedelta(days=4_000_000)})
    assert problems(menu), "validation refuses it: only an unchecked definition gets here"
    began = await rig.env.get_current_time()
    await handle_inbound(rig.store, "whatsapp", "wamid.h", PHONE, text="hi", received_at=began)
    await rig.env.client.start_workflow(
        MenuConversation.run,
        MenuConversationInput(rig.channel, PHONE, menu),
        id=rig.workflow_id,
        task_queue=rig.task_queue,
        start_signal="message",
        start_signal_args=[MenuMessage("wamid.h", "hi")],
    )
    await rig.replies(1)

    await rig.env.sleep(MAX_EXPIRY - timedelta(days=1))
    view = await settled_view(rig)
    assert view is not None and view.step == "initial", "still waiting a day before the cap"
    await rig.env.sleep(timedelta(days=2))
    result = await rig.result()
    assert result.status == "expired" and result.ended_at is not None
    assert MAX_EXPIRY <= result.ended_at - began < MAX_EXPIRY + timedelta(days=1)
    history = await rig.handle().fetch_history()
    failures = [
        event.workflow_task_failed_event_attributes.failure.message
        for event in history.events
        if event.HasField("workflow_task_failed_event_attributes")
    ]
    assert failures == [], failures


# --- placeholders ---------------------------------------------------------------------------


ASK_NAME: dict[str, Any] = {
    "name": "greet",
    "trigger_keywords": ["hi"],
    "start": "ask_name",
    "steps": {
        "ask_name": {"message": "What is your name?", "save_as": "name", "next": "ask_qty"},
        "ask_qty": {
            "message": "Thanks {name}! How many plants?",
            "save_as": "qty",
            "validate": "number",
            "next": "done",
        },
        "done": {"message": "{qty} plants for {name}.", "end": True},
    },
}


async def test_question_reask_fills_placeholders(rig: Rig) -> None:
    """A question without ``error`` is re-asked as "Sorry, I did not understand that."
    followed by the question, with its placeholders filled in like the first asking
    ("... Thanks Ana! How many plants?"), never the raw ``{name}``."""
    rig.store.save_menu(sound(ASK_NAME))
    await rig.say("hi")
    assert text((await rig.replies(1))[0]) == "What is your name?"
    assert text(await rig.exchange("Ana")) == "Thanks Ana! How many plants?"
    again = text(await rig.exchange("lots"))
    assert "{name}" not in again, again
    assert again.endswith("Thanks Ana! How many plants?")


TICKET: dict[str, Any] = {
    "name": "support",
    "trigger_keywords": ["help"],
    "start": "ask_issue",
    "steps": {
        "ask_issue": {"message": "Please describe the problem.", "save_as": "issue", "next": "ok"},
        "ok": {
            "message": buttons(
                "You wrote: {issue}\n\nShall we open a ticket?", ("yes", "Yes"), ("no", "No")
            ),
            "next": {"yes": "opened", "no": "dropped"},
        },
        "opened": {"message": "Ticket opened.", "end": True},
        "dropped": {"message": "OK, nothing opened.", "end": True},
    },
}


async def test_a_filled_in_body_longer_than_whatsapp_allows_is_not_silently_dropped(
    rig: Rig,
) -> None:
    """``problems`` checks the body's length before placeholders are filled; a long
    free-text answer put into ``{issue}`` could make it longer than WhatsApp's 1024
    characters, which the Graph API refuses (the customer would get silence). Filled-in
    texts are cut to WhatsApp's limits, so the confirmation menu is delivered."""
    rig.store.save_menu(sound(TICKET))
    await rig.say("help")
    await rig.replies(1)
    long_issue = "My order arrived damaged. " * 45  # ~1170 characters, a normal long message
    await rig.say(long_issue)
    sent = await sent_after(rig, 2)
    assert len(sent) == 2, "the confirmation menu was refused by WhatsApp: nothing sent"
    assert len(interactive(sent[1])["body"]["text"]) <= 1024


# --- continue-as-new ------------------------------------------------------------------------


async def test_a_redelivered_message_at_the_start_of_a_continued_run_is_dropped(
    rig: Rig,
) -> None:
    """A signal delivered in a continued run's first activation (before ``run`` executes)
    is checked against an empty ``_seen``; ``run`` then drops those the previous run already
    took (``state.seen``), so a message re-sent by the router (its first RPC timed out) is not
    answered twice, nor moves the conversation a second step."""
    menu = shop_menu()
    now = await rig.env.get_current_time()
    await handle_inbound(rig.store, "whatsapp", "wamid.h", PHONE, text="hi", received_at=now)
    # The state a previous run carried over: it has shown "initial" and handled wamid.dup.
    state = MenuState(
        session_id=f"{rig.workflow_id}:previous-run",
        menu=menu,
        step="initial",
        last_activity=now,
        started=True,
        sent=1,
        seen=["wamid.h", "wamid.dup"],
    )
    await rig.env.client.start_workflow(
        MenuConversation.run,
        MenuConversationInput(rig.channel, PHONE, menu, state=state),
        id=rig.workflow_id,
        task_queue=rig.task_queue,
        start_signal="message",
        start_signal_args=[MenuMessage("wamid.dup", "New Order", "order")],
    )
    view = await settled_view(rig)
    assert view is not None
    await asyncio.sleep(0.3)
    assert rig.graph.sent == [], "a message already handled was answered again"
    assert view.step == "initial"
