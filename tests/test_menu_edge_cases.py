"""MenuConversation at its edges: messages while a run ends, odd input, long answers, limits.

Driven the way ``tests/test_menu_conversation.py`` drives a conversation (its ``rig``
fixture: the router, the real send path, a fake Graph API, the time-skipping server).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from starter.inbound import handle_inbound
from tests import test_menu_conversation as base
from tests.test_menu_conversation import PHONE, WELCOME, Rig, interactive, shop_menu, text
from workflows.menu_conversation import MenuConversation
from workflows.menu_definition import MenuDefinition, problems
from workflows.menu_payloads import (
    MenuConversationInput,
    MenuMessage,
    MenuState,
    MenuView,
)

# The fixtures of tests/test_menu_conversation.py, reused by name.
rig = base.rig
graph_url = base.graph_url


async def sent_after(rig: Rig, count: int, seconds: float = 4.0) -> list[dict[str, Any]]:
    """What the fake Graph API received, once it holds ``count`` messages or time is up."""
    for _ in range(int(seconds / 0.02)):
        if len(rig.graph.sent) >= count:
            break
        await asyncio.sleep(0.02)
    return list(rig.graph.sent)


async def settled_view(rig: Rig, seconds: float = 4.0) -> MenuView | None:
    """The conversation's view once it has no pending message; None if it never settles
    (e.g. its workflow task keeps failing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        try:
            found: MenuView | None = await asyncio.wait_for(
                rig.handle().query(MenuConversation.view), timeout=0.5
            )
        except Exception:  # a query that fails or hangs while the workflow task fails
            found = None
        if found is not None and found.pending == 0:
            return found
        await asyncio.sleep(0.05)
    return None


def sound(raw: dict[str, Any]) -> MenuDefinition:
    definition = MenuDefinition.model_validate(raw)
    assert problems(definition) == [], problems(definition)
    return definition


# --- messages lost at the end of a run ---------------------------------------------------


async def test_message_that_arrives_while_the_conversation_completes_is_not_lost(
    rig: Rig,
) -> None:
    """A customer message signalled into the run while it is finishing (sending the end
    step, emitting its event, recording the session) is dropped: ``_converse`` returns the
    ending and ``run`` completes without looking at ``_pending``. The router already
    reported it as delivered to the conversation ("trigger:..." / "conversation"), so no
    trigger or fallback runs for it either: the customer's "hi" gets no answer at all.

    Right: a message that reached the run before it closed is still handled (e.g. the run
    continues as new / starts the next conversation with it), so "hi" gets the menu.
    """
    rig.store.save_menu(shop_menu())
    await rig.say("hi")
    await rig.replies(1)
    await rig.exchange("New Order", "order")
    await rig.exchange("Fern", "fern")
    await rig.exchange("Small pot", "small")
    rig.graph.hold.hold_next(2.0)  # the end message is accepted, its answer comes late
    await rig.say("12")
    await rig.replies(5)
    assert await rig.say("hi") == "trigger:main_menu"  # the run is still open: signalled

    sent = await sent_after(rig, 6, seconds=6)
    assert text(sent[4]) == "Order for 12 plants noted!"
    assert len(sent) == 6, "the customer's 'hi' sent while the conversation ended got nothing"
    assert interactive(sent[5]) == WELCOME


async def test_message_that_arrives_while_the_conversation_expires_is_answered(
    rig: Rig,
) -> None:
    """A message that arrives while ``_expire`` is running (sending the expiry message as a
    local activity) makes the server refuse the run's completion (a new event during the
    workflow task); the task is replayed with the timer and the signal in one activation,
    the signal wins, and the run goes on instead of expiring. But the discarded attempt's
    local activities already happened: "Session closed." went to the customer and the
    session was recorded as ``expired``. The replayed run then answers the message with
    idempotency key ``{session}:2`` - the key the expiry message already used - so the
    outbox returns the old "sent" outcome and the menu is never sent.

    Net effect: the customer is told the session closed, their "hi" gets no answer, the
    session says ``expired`` while the conversation keeps running (its real outcome will
    be ignored by ``end_menu_session``). Right: the customer's message is answered (the
    menu) and the stored outcome matches what the conversation did.
    """
    rig.store.save_menu(shop_menu(expiry="2h", expiry_message="Session closed."))
    await rig.say("hi")
    await rig.replies(1)
    rig.graph.hold.hold_next(3.0)  # the expiry message is accepted, its answer comes late
    skipping = asyncio.create_task(rig.env.sleep(timedelta(hours=3)))
    assert text((await rig.replies(2))[-1]) == "Session closed."
    assert await rig.say("hi") == "trigger:main_menu"  # still open: signalled into it
    await skipping

    sent = await sent_after(rig, 3, seconds=6)
    assert len(sent) == 3, "the customer's 'hi' sent at expiry got no answer"
    assert interactive(sent[2]) == WELCOME
    description = await rig.handle().describe()
    if description.status is not None and description.status.name == "RUNNING":
        newest = rig.store.list_menu_sessions("main_menu")[0]
        assert newest.status == "active", "the running conversation's session says expired"


# --- crashes on customer input / definitions that pass validation -------------------------


async def test_a_superscript_digit_on_twilio_does_not_wedge_the_conversation(rig: Rig) -> None:
    """``_choice`` (menu_conversation.py) accepts a typed number with ``str.isdigit()`` and
    then calls ``int()``. ``"²".isdigit()`` is True but ``int("²")`` raises ValueError, so on
    the Twilio (numbered text) channel a customer typing "²" fails the workflow task; it is
    retried forever, every later message of the customer piles up unanswered and even the
    expiry timer never ends it.

    Right: "²" is not an option number; the step is re-sent with the hint and the
    conversation goes on ("1" then picks the first option).
    """
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


async def test_a_long_expiry_that_passes_validation_does_not_crash_the_workflow(
    rig: Rig,
) -> None:
    """``problems`` only checks that ``expiry`` is positive. An expiry such as "4000000d"
    (a typo for 4000000s) is accepted (saved, 201), but ``state.last_activity +
    state.menu.expiry`` overflows ``datetime`` in ``_converse``: every workflow task that
    reaches the wait fails (OverflowError) and is retried. The conversation can never
    expire, nothing it does after a message is recorded (each retry replays from the last
    good task), and it limps on only because each new signal re-runs the failing task.

    Right: either ``problems`` rejects such an expiry (so it can't be saved) or the
    conversation goes on; a saved definition must never wedge a conversation.
    """
    menu = shop_menu(expiry="4000000d")
    if problems(menu):
        return  # rejected at save time: fine
    rig.store.save_menu(menu)
    await rig.say("hi")
    await rig.replies(1)
    await asyncio.sleep(1)
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
    """A question without ``error`` is re-asked as ``f"{NOT_UNDERSTOOD} {step.message}"``
    (menu_conversation.py, ``_handle``) without ``fill``: the customer gets the raw
    ``{name}`` placeholder ("Thanks {name}! How many plants?") although the definition is
    sound and the first asking filled it in.

    Right: the re-ask is filled like the question itself: "... Thanks Ana! How many plants?"
    """
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
            "message": {
                "type": "button",
                "body": {"text": "You wrote: {issue}\n\nShall we open a ticket?"},
                "action": {
                    "buttons": [
                        {"type": "reply", "reply": {"id": "yes", "title": "Yes"}},
                        {"type": "reply", "reply": {"id": "no", "title": "No"}},
                    ]
                },
            },
            "next": {"yes": "opened", "no": "dropped"},
        },
        "opened": {"message": "Ticket opened.", "end": True},
        "dropped": {"message": "OK, nothing opened.", "end": True},
    },
}


async def test_a_filled_in_body_longer_than_whatsapp_allows_is_not_silently_dropped(
    rig: Rig,
) -> None:
    """``problems`` checks the body's length before placeholders are filled; a free-text
    answer put into ``{issue}`` makes the body longer than WhatsApp's 1024 characters. The
    Graph API refuses it, ``deliver`` reports ``failed`` and ``_send`` ignores that: the
    customer who described their problem at length gets no confirmation menu - silence,
    while the conversation waits for a reply to a message never shown.

    Right: filled-in texts are kept within WhatsApp's limits (like ``_with_hint`` does for
    the hint), so the step is delivered.
    """
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
    """The ``message`` handler de-duplicates against ``self._seen``, but in a continued run
    ``_seen`` is only merged with ``state.seen`` when ``run`` starts; a signal delivered in
    the run's first activation (before ``run`` executes) is checked against an empty list
    and queued. ``run`` merges ``_seen`` but never filters ``_pending``, so a message the
    previous run already answered (the router re-sends a signal whose first RPC timed out)
    is answered a second time: a duplicate reply and a wrong step transition.

    Right: a message whose id is in ``state.seen`` is dropped in the new run too.
    """
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
