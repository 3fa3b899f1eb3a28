"""MenuConversation: one customer's WhatsApp menu conversation, start to end.

The original system kept each customer's place in a state table and swept stale rows with a cron job.
Here the conversation is a workflow with id ``menu:{channel}:{contact id}`` (never the phone
number: ids, summaries and search attributes are readable by anyone who can see the namespace;
the address travels only in payloads, which a payload codec can encrypt): the webhook starts it
(or feeds it) with signal-with-start, the customer's messages queue up and are handled one at
a time in arrival order, the saved answers live in the workflow, and the 24-hour inactivity
expiry is a durable timer that every customer message pushes back.

Every reply goes through the one send path (policy -> outbox -> channel). How it ends is
recorded for operators (sessions, with transcript and answers) and, when the end step names
an ``event``, emitted for automation rules.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.menus import (
        FallbackClaim,
        MenuActivities,
        MenuEvent,
        SessionEnd,
        SessionStart,
    )
    from domain import whatsapp
    from domain.addresses import address_channel
    from domain.channels import ChannelName, MessageClass
    from domain.delivery import DeliverRequest, DeliveryStatus
    from domain.menu_answers import check_answer
    from domain.menu_definition import MenuDefinition, MenuStep
    from domain.menu_matching import same_words
    from domain.next_action import NextAction, ended
    from domain.rendering import interactive_text
    from domain.status import MenuStatus, OutboxStatus, SendStatus
    from domain.text import clamp, fill, fill_interactive, words
    from domain.transcripts import TranscriptEntry
    from workflows.bookkeeping import BOOKKEEPING, recorded
    from workflows.delivery import send
    from workflows.menu_payloads import (
        MenuConversationInput,
        MenuConversationResult,
        MenuMessage,
        MenuState,
        MenuView,
        workflow_id_for,
    )
    from workflows.search_attributes import CONTACT_ID, NUDGE_STATUS, at_start
    from workflows.starting import WorkflowStart

KIND = "menu"
# Reads and idempotent writes (load or pick a menu, record a session's start) run as local
# activities, without a round trip through the server. Anything a customer or an operator
# sees (sends, outcomes, events) is a regular activity: a local activity runs again, or
# on a path the workflow then does not take, when its workflow task is discarded (e.g. a
# message arriving while the run completes). All of them retry for minutes, not forever
# (``workflows.bookkeeping``).
RESTART_WORDS = (["menu"], ["restart"])
NOT_UNDERSTOOD = "Sorry, I did not understand that."
UNAVAILABLE = "Sorry, that option is not available right now."
NOT_DELIVERED = "failed: WhatsApp could not deliver the message sent at this step"
TRANSCRIPT_LIMIT = 500
"""Entries kept in the workflow (and stored); a very long conversation keeps its latest."""
SEEN_LIMIT = 200
MAX_EXPIRY = timedelta(days=365)
"""Definitions are checked for a sane expiry; this only keeps a timer within the calendar."""
TEXT_CHANNELS = (ChannelName.whatsapp_twilio,)
"""Channels without interactive messages: menus are sent as numbered text."""
SENT_STEPS_LIMIT = 100
"""Recent messages whose step a delivery status can still be matched to."""
QUEUE_BEFORE_RELEASE = "menu-queue-before-release"
"""Patch: a released conversation takes the messages already queued (into its transcript)
before it ends; runs begun earlier ended at once and routed them afresh in a new run."""
ENDED_BY_AGENT_OR_TIME = (MenuStatus.completed, MenuStatus.expired, MenuStatus.handed_off)


def start_options(
    channel: ChannelName, contact_id: int, menu: MenuDefinition | None
) -> WorkflowStart:
    """One conversation per customer and channel; a new one starts once the last has ended.
    Takes no address, so none can reach the id, the summary or the search attributes."""
    who = f"contact {contact_id}"
    return WorkflowStart(
        id=workflow_id_for(channel.value, contact_id),
        search_attributes=at_start(
            KIND, MenuStatus.active.value, channel.value, contact_id=contact_id
        ),
        summary=f"Menu {menu.name} with {who}" if menu else f"Message from {who}",
    )


@dataclass
class _Ending:
    status: MenuStatus
    reason: str = ""


@workflow.defn
class MenuConversation:
    def __init__(self) -> None:
        self._pending: list[MenuMessage] = []
        self._seen: list[str] = []
        self._opted_out = False
        self._released = False
        self._state: MenuState | None = None
        self._fallbacks = 0
        self._answering = False
        self._received = 0
        self._failed: list[str] = []
        self._next = NextAction("answers the customer's message")

    @workflow.signal
    def message(self, message: MenuMessage) -> None:
        """A customer message; a provider's retry of the same message is dropped."""
        if message.provider_message_id in self._seen:
            return
        self._seen = [*self._seen, message.provider_message_id][-SEEN_LIMIT:]
        self._pending.append(message)
        self._received += 1

    @workflow.signal
    def opted_out(self) -> None:
        """The customer sent STOP: the conversation ends without another word."""
        self._opted_out = True

    @workflow.signal
    def release(self) -> None:
        """An agent has finished with a handed-off conversation: end it."""
        self._released = True

    @workflow.signal
    def delivery_status(self, update: DeliveryStatus) -> None:
        """What the provider reports about a message this conversation sent (the status
        webhook signals the workflow that sent it). Only ``failed`` matters here: the customer
        never got that message, so the transcript says so; the others change nothing."""
        if update.status == OutboxStatus.failed:
            self._failed.append(update.idempotency_key)
            self._note_failures()

    @workflow.query
    def view(self) -> MenuView | None:
        state = self._state
        if state is None:
            return None
        return MenuView(
            state.menu.name,
            state.step,
            state.handed_off,
            dict(state.context),
            len(self._pending) + self._answering,
            self._received,
        )

    @workflow.query
    def next_action(self) -> NextAction:
        """What it does next, when and why; its current details say the same sentence."""
        return self._next

    @workflow.run
    async def run(self, start: MenuConversationInput) -> MenuConversationResult:
        self._plan(self._next)
        carried = start.state
        seen = carried.seen if carried is not None else start.seen
        queued = carried.pending if carried is not None else start.leftovers
        # Signals can arrive before this method runs: drop those the last run already took.
        early = [m for m in self._pending if m.provider_message_id not in seen]
        self._pending = [*queued, *early]
        self._received = len(early) + (carried.received if carried is not None else len(queued))
        self._seen = [*seen, *(i for i in self._seen if i not in seen)][-SEEN_LIMIT:]
        if carried is not None:
            carried.pending, carried.seen = [], []
            self._opted_out = self._opted_out or carried.opted_out
            self._released = self._released or carried.released
        if start.contact_id is not None:
            workflow.upsert_search_attributes([CONTACT_ID.value_set(str(start.contact_id))])

        state = carried
        if state is None and start.menu is not None:
            state = self._fresh(start.menu, self._pending[0] if self._pending else None)
        if state is None:
            state = await self._reroute(start)
            if state is None:
                status = MenuStatus.fallback if self._fallbacks else MenuStatus.ignored
                workflow.upsert_search_attributes([NUDGE_STATUS.value_set(status.value)])
                self._plan(ended(status.value))
                return MenuConversationResult(
                    status=status, menu="", last_step="", ended_at=workflow.now()
                )
        self._state = state
        self._note_failures()
        try:
            ending = await self._converse(start, state)
        except asyncio.CancelledError:
            await self._record_end(start, state, MenuStatus.cancelled)
            self._plan(ended(MenuStatus.cancelled.value))
            raise
        await self._record_end(start, state, ending.status)
        self._plan(ended(ending.status.value))
        if self._pending and ending.status in ENDED_BY_AGENT_OR_TIME:
            # Messages that came while the conversation was ending are not dropped: a new
            # run routes them, as the webhook would have had the conversation been over.
            workflow.continue_as_new(
                dataclasses.replace(
                    start,
                    menu=None,
                    state=None,
                    leftovers=list(self._pending),
                    seen=list(self._seen),
                )
            )
        return MenuConversationResult(
            status=ending.status,
            menu=state.menu.name,
            last_step=state.step,
            reason=ending.reason,
            context=dict(state.context),
            ended_at=workflow.now(),
        )

    def _fresh(self, menu: MenuDefinition, trigger: MenuMessage | None) -> MenuState:
        return MenuState(
            session_id=_session_id(trigger),
            menu=menu,
            step=menu.start,
            last_activity=workflow.now(),
        )

    async def _reroute(self, start: MenuConversationInput) -> MenuState | None:
        """Route leftover messages one by one until one names a menu (it then starts that
        menu as its trigger); the others get the fallback auto-reply, if one is due."""
        while self._pending and not self._opted_out:
            message = self._pending[0]
            menu = await recorded(
                "read the menus",
                workflow.execute_local_activity_method(
                    MenuActivities.pick_menu,
                    message.text,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=BOOKKEEPING,
                ),
            )
            if menu is not None:
                return self._fresh(menu, message)
            self._pending.pop(0)
            reply = start.fallback_text.strip()
            if not reply or not message.text.strip():
                continue
            if await recorded(
                "record the fallback reply",
                workflow.execute_activity_method(
                    MenuActivities.claim_fallback,
                    # Keyed by the address's channel: the same person over Twilio's WhatsApp
                    # and the Cloud API is one contact, with one fallback per period.
                    FallbackClaim(
                        address_channel(start.channel.value),
                        start.address,
                        workflow.now(),
                        start.fallback_period,
                    ),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=BOOKKEEPING,
                ),
            ):
                self._fallbacks += 1
                await send(
                    DeliverRequest(
                        # The contact, not the address: keys are kept in the outbox and
                        # in histories. A fallback is scheduled once per message, so a run
                        # that scheduled one with the older key never schedules it again.
                        idempotency_key=f"fallback:{start.channel.value}:{start.contact_id}:"
                        f"{message.provider_message_id}",
                        workflow_id=workflow.info().workflow_id,
                        channel=start.channel,
                        to=start.address,
                        text=reply,
                        message_class=MessageClass.transactional,
                        contact_id=start.contact_id,
                    )
                )
        return None

    async def _converse(self, start: MenuConversationInput, state: MenuState) -> _Ending:
        while True:
            if self._opted_out:
                status = MenuStatus.handed_off if state.handed_off else MenuStatus.cancelled
                return _Ending(status, "opted out")
            if state.handed_off and self._released and not self._queued_before_release():
                return _Ending(MenuStatus.handed_off, "released by an agent")
            if not self._pending:
                expiry = min(state.menu.expiry, MAX_EXPIRY)
                remaining = state.last_activity + expiry - workflow.now()
                self._plan(_waiting(state, state.last_activity + expiry))
                try:
                    await workflow.wait_condition(
                        lambda: (
                            bool(self._pending)
                            or self._opted_out
                            or (state.handed_off and self._released)
                        ),
                        timeout=max(remaining, timedelta(0)),
                    )
                except TimeoutError:
                    return await self._expire(start, state)
                continue
            message = self._pending.pop(0)
            state.last_activity = workflow.now()
            self._answering = True
            self._plan(
                NextAction(
                    "answers the customer's message",
                    why=f"at step {state.step} of menu {state.menu.name}",
                )
            )
            try:
                ending = await self._handle(start, state, message)
            finally:
                self._answering = False
            if ending is not None:
                return ending
            if self._should_continue_as_new(start):
                state.pending = list(self._pending)
                state.seen = list(self._seen)
                state.opted_out, state.released = self._opted_out, self._released
                state.received = self._received
                workflow.continue_as_new(dataclasses.replace(start, state=state, leftovers=[]))

    def _plan(self, next_action: NextAction) -> None:
        """The ``next_action`` query and the Web UI's current details, in step (neither is a
        command: changing them never breaks replay)."""
        self._next = next_action
        workflow.set_current_details(next_action.sentence())

    def _queued_before_release(self) -> bool:
        """Messages the customer wrote before the agent released them were written to the
        agent: they go into the transcript (the bot stays quiet) before the conversation
        ends, rather than being routed afresh as if the customer had just said hello."""
        return bool(self._pending) and workflow.patched(QUEUE_BEFORE_RELEASE)

    def _should_continue_as_new(self, start: MenuConversationInput) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= start.history_limit
        )

    async def _handle(
        self, start: MenuConversationInput, state: MenuState, message: MenuMessage
    ) -> _Ending | None:
        text = message.text.strip()
        self._note(state, "in", text or (message.reply_id or ""))
        if not state.started:
            # The message that matched a trigger keyword: answer with the first step.
            state.started = True
            await self._start_session(start, state)
            return await self._show(start, state, state.menu.start)
        if state.handed_off:
            return None  # a human has it; the bot stays quiet and keeps the transcript
        if words(text) in RESTART_WORDS and not message.reply_id:
            state.context = {}
            return await self._show(start, state, state.menu.start)
        step = state.menu.steps[state.step]
        if step.kind == "menu":
            choice = self._choice(start, step, message)
            if choice is None:
                return await self._show(start, state, state.step, hint=start.hint)
            target = step.next[choice] if isinstance(step.next, dict) else None
            return await self._go(start, state, target, message)
        if step.kind == "question":
            value = check_answer(step, text)
            if value is None:
                again = step.error or f"{NOT_UNDERSTOOD} {step.message}"
                await self._send(start, state, text=fill(again, state.context))
                return None
            state.context[step.save_as or state.step] = value
            target = step.next if isinstance(step.next, str) else None
            return await self._go(start, state, target, message)
        return await self._show(start, state, state.menu.start)  # an end step: begin again

    def _choice(
        self, start: MenuConversationInput, step: MenuStep, message: MenuMessage
    ) -> str | None:
        options = step.reply_options()
        ids = [option_id for option_id, _ in options]
        if message.reply_id in ids:
            return message.reply_id
        for option_id, title in options:
            if same_words(message.text, title):
                return option_id
        typed = message.text.strip().rstrip(".)")
        numbered = typed.isascii() and typed.isdigit()  # "²" is a digit but not a number
        if start.channel in TEXT_CHANNELS and numbered and 1 <= int(typed) <= len(ids):
            return ids[int(typed) - 1]
        return None

    async def _go(
        self,
        start: MenuConversationInput,
        state: MenuState,
        target: str | None,
        message: MenuMessage,
    ) -> _Ending | None:
        if target is None:
            return await self._show(start, state, state.step, hint=start.hint)
        if target in state.menu.steps:
            return await self._show(start, state, target)
        if target == state.menu.name:  # this menu again, from its start
            state.context = {}
            return await self._show(start, state, state.menu.start)
        other = await recorded(
            f"read the menu {target!r}",
            workflow.execute_local_activity_method(
                MenuActivities.load_menu,
                target,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=BOOKKEEPING,
            ),
        )
        if other is None:
            await self._send(start, state, text=UNAVAILABLE)
            return await self._show(start, state, state.step)
        await self._record_end(start, state, MenuStatus.moved)
        state.sessions += 1
        state.session_id = _session_id(message)
        state.menu = other
        state.context = {}
        state.transcript = []
        state.sent_steps = {}
        await self._start_session(start, state)
        return await self._show(start, state, other.start)

    async def _show(
        self, start: MenuConversationInput, state: MenuState, name: str, *, hint: str = ""
    ) -> _Ending | None:
        state.step = name
        step = state.menu.steps[name]
        if step.kind == "menu" and isinstance(step.message, dict):
            interactive = fill_interactive(step.message, state.context)
            if hint:
                interactive = _with_hint(interactive, hint)
            return await self._send(start, state, interactive=interactive)
        text = fill(step.message if isinstance(step.message, str) else "", state.context)
        ending = await self._send(start, state, text=text)
        if ending is not None or step.kind != "end":
            return ending
        if step.event:
            await recorded(
                f"record the event {step.event!r}",
                workflow.execute_activity_method(
                    MenuActivities.emit_event,
                    MenuEvent(
                        idempotency_key=f"{state.session_id}:{name}",
                        name=step.event,
                        menu=state.menu.name,
                        channel=start.channel.value,
                        address=start.address,
                        context=dict(state.context),
                        occurred_at=workflow.now(),
                    ),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=BOOKKEEPING,
                ),
            )
        if step.handoff:
            state.handed_off = True
            await self._record_end(start, state, MenuStatus.handed_off)
            return None
        return _Ending(MenuStatus.completed)

    async def _send(
        self,
        start: MenuConversationInput,
        state: MenuState,
        *,
        text: str = "",
        interactive: dict[str, Any] | None = None,
    ) -> _Ending | None:
        state.sent += 1
        key = f"{state.session_id}:{state.sent}"
        # Noted before sending: a failure report may come in with the send's own result.
        recent = [*state.sent_steps.items(), (key, state.step)][-SENT_STEPS_LIMIT:]
        state.sent_steps = dict(recent)
        shown = text
        if interactive is not None:
            shown = interactive_text(interactive)
            if start.channel not in TEXT_CHANNELS:
                text = ""
            else:
                text, interactive = shown, None
        text = clamp(text, whatsapp.TEXT)
        outcome = await send(
            DeliverRequest(
                idempotency_key=key,
                workflow_id=workflow.info().workflow_id,
                channel=start.channel,
                to=start.address,
                text=text,
                interactive=interactive,
                message_class=MessageClass.transactional,
                contact_id=start.contact_id,
            ),
        )
        self._note(state, "out", shown)
        if outcome.status == SendStatus.suppressed:
            return _Ending(MenuStatus.cancelled, outcome.reason or "the customer opted out")
        return None

    def _note(self, state: MenuState, direction: str, text: str, step: str | None = None) -> None:
        entry = TranscriptEntry(
            at=workflow.now(), direction=direction, text=text, step=step or state.step
        )
        state.transcript = [*state.transcript, entry][-TRANSCRIPT_LIMIT:]

    def _note_failures(self) -> None:
        """Operators see in the transcript which message the customer never got, at the step
        it was sent from. Failures of other messages (a fallback, a menu left behind) are
        dropped; those reported before the run has taken up its state wait for it."""
        state = self._state
        if state is None:
            return
        for key in self._failed:
            step = state.sent_steps.pop(key, None)
            if step is not None:
                self._note(state, "status", NOT_DELIVERED, step)
        self._failed = []

    async def _expire(self, start: MenuConversationInput, state: MenuState) -> _Ending:
        if state.handed_off:
            return _Ending(MenuStatus.handed_off, "no message within the expiry")
        if state.menu.expiry_message and state.started:
            # The send path refuses free-form text once the WhatsApp window has closed.
            await self._send(start, state, text=fill(state.menu.expiry_message, state.context))
        return _Ending(MenuStatus.expired, f"no message for {state.menu.expiry}")

    async def _start_session(self, start: MenuConversationInput, state: MenuState) -> None:
        workflow.upsert_search_attributes([NUDGE_STATUS.value_set(MenuStatus.active.value)])
        await recorded(
            "record the session's start",
            workflow.execute_local_activity_method(
                MenuActivities.start_session,
                SessionStart(
                    session_id=state.session_id,
                    workflow_id=workflow.info().workflow_id,
                    menu=state.menu.name,
                    channel=start.channel.value,
                    address=start.address,
                    started_at=workflow.now(),
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=BOOKKEEPING,
            ),
        )

    async def _record_end(
        self, start: MenuConversationInput, state: MenuState, status: MenuStatus
    ) -> None:
        if status != MenuStatus.moved:
            workflow.upsert_search_attributes([NUDGE_STATUS.value_set(status.value)])
        if not state.started:
            return
        await recorded(
            "record the session's answers and transcript",
            workflow.execute_activity_method(
                MenuActivities.end_session,
                SessionEnd(
                    session_id=state.session_id,
                    status=status,
                    last_step=state.step,
                    ended_at=workflow.now(),
                    context=dict(state.context),
                    transcript=list(state.transcript),
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=BOOKKEEPING,
            ),
        )


def _waiting(state: MenuState, expires_at: datetime) -> NextAction:
    """Waiting for the customer (or, handed off, for the agent): the expiry is what comes."""
    where = f"step {state.step} of menu {state.menu.name}"
    if state.handed_off:
        return NextAction(
            "ends the conversation as handed off",
            expires_at,
            f"an agent has it (at {where}) unless they release it first",
        )
    return NextAction(
        "ends the conversation as expired",
        expires_at,
        f"waiting for the customer's answer at {where}",
    )


def _session_id(trigger: MenuMessage | None) -> str:
    """The workflow id and the message that began the session (its trigger keyword, or the
    choice that moved to another menu). Each sent message's idempotency key is this and a
    count, so a ``temporal workflow reset`` (a new run id) never sends a message again."""
    info = workflow.info()
    began_by = trigger.provider_message_id if trigger is not None else info.first_execution_run_id
    return f"{info.workflow_id}:{began_by}"


def _with_hint(interactive: dict[str, Any], hint: str) -> dict[str, Any]:
    """The same menu with the hint above its text, within WhatsApp's limit for a body."""
    body = dict(interactive.get("body") or {})
    text = f"{hint}\n\n{body.get('text', '')}".strip()
    body["text"] = text if len(text) <= whatsapp.BODY else hint
    return {**interactive, "body": body}
