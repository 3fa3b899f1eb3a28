"""Starting automation rules: from an event to the workflows it calls for.

An event is stored first (``store/events.py``), then dispatched here: each switched-on rule
its type triggers, whose conditions hold for the contact, gets a run (a row ``waiting``,
then an ``AutomationRun`` workflow sleeping until it is due); the contact's ``ContactWatch``
hears of it when quiet rules exist. The event is then marked dispatched. Every step may be
repeated: the run's row and workflow are keyed by rule, contact and event, so a dispatch
that stopped half way (the process died, Temporal was unreachable) is finished by the next
pass of ``sweep_forever`` without running anything twice.

The HTTP service owns one ``AutomationStarter`` (``app.state.automations``); ``api/`` and
``starter/`` call it after they store an event, a rule or a booking.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from domain.automation_runs import (
    RunOutcome,
    RunRecord,
    RunRequest,
    RunStatus,
    event_occurrence,
    workflow_id_for,
)
from domain.automations import TIMER_TRIGGERS
from domain.conditions import why_not
from domain.events import Trigger
from store.automations import StoredRule, facts_of
from store.bookings import CANCELLED, RESCHEDULED, BookingView
from store.events import EventView
from store.repo import Store
from workflows import automation_run, booking_reminder, contact_watch
from workflows.automation_run import AutomationRun
from workflows.booking_reminder import BookingReminder, ReminderInput
from workflows.contact_watch import ContactWatch, WatchInput

log = logging.getLogger(__name__)

BOOKING_EVENTS = frozenset(
    {Trigger.booking_created, RESCHEDULED, CANCELLED, Trigger.session_completed}
)
"""Events about a booking (``data.booking_id``): its reminder is told of each."""

SWEEP_EVERY = timedelta(seconds=1)
"""How often events nobody dispatched are looked for: inbound messages, menus' end events,
those a stopped process left. A run's due time counts from its event, not from this."""
SWEEP_GRACE = timedelta(seconds=1)
"""An event younger than this is left to the request that stored it."""
TEST_TIMEOUT = timedelta(seconds=60)
"""How long ``POST /v1/automations/{id}/test`` waits for its run to answer."""

ClientGetter = Callable[[], Awaitable[Client]]


class AutomationStarter:
    def __init__(self, store: Store, client: ClientGetter, task_queue: str) -> None:
        self.store = store
        self.client = client
        self.task_queue = task_queue
        self._background: set[asyncio.Task[None]] = set()
        self._dispatching: set[int] = set()
        """Events a request is dispatching now: the sweep leaves them to it."""

    # --- events ---------------------------------------------------------------------

    async def dispatch(self, event: EventView) -> bool:
        """Start what ``event`` calls for and mark it dispatched; False (logged, left for
        the sweep) when Temporal or the database could not be reached."""
        self._dispatching.add(event.id)
        try:
            await self._dispatch(event)
            await asyncio.to_thread(self.store.mark_dispatched, event.id)
        except Exception as error:  # logged: the sweep or the timer finds it later
            log.warning("event %s left for the next dispatch pass: %s", event.id, error)
            return False
        finally:
            self._dispatching.discard(event.id)
        return True

    async def _dispatch(self, event: EventView) -> None:
        if event.contact_id is None:
            return
        contact_id = event.contact_id
        booking_id = event.data.get("booking_id")
        if event.type in BOOKING_EVENTS and isinstance(booking_id, int):
            # The reminder hears of it here too: a booking saved while Temporal was away.
            booking = await asyncio.to_thread(self.store.get_booking, booking_id)
            if booking is not None:
                await self.booking_changed(booking)
        if event.type in TIMER_TRIGGERS:
            return  # nothing raises these: a watch or a reminder times them
        rules = await asyncio.to_thread(self.store.enabled_rules, event.type)
        quiet = await asyncio.to_thread(self.store.enabled_rules, Trigger.no_contact_days)
        if not rules and not quiet:
            return
        contact = await asyncio.to_thread(self.store.contact_for_rule, contact_id)
        if contact is None:
            return
        facts = facts_of(contact)
        for stored in rules:
            if why_not(stored.rule.conditions, facts, event.data) is not None:
                continue
            request = RunRequest(
                rule_id=stored.id,
                contact_id=contact_id,
                occurrence=event_occurrence(event.id),
                due_at=event.occurred_at + stored.rule.delay,
                trigger=event.type,
                event_data=event.data,
                event_id=event.id,
            )
            await self.start_run(request, stored.rule.name)
        if any(why_not(q.rule.conditions, facts, {}) is None for q in quiet):
            contacted = event.occurred_at if event.type == Trigger.message_received else None
            await self.watch(contact_id, contacted_at=contacted)

    async def dispatch_for(self, contact_id: int) -> None:
        """Dispatch the contact's events not yet dispatched (just stored by the caller: a
        new lead, a status change). Never raises."""
        try:
            ids = await asyncio.to_thread(self.store.undispatched_events, contact_id=contact_id)
        except Exception as error:  # the sweep will find them
            log.warning("events of contact %s left for the sweep: %s", contact_id, error)
            return
        await self._dispatch_ids(ids)

    async def dispatch_pending(self) -> int:
        """One pass over the events not yet dispatched; how many were."""
        before = datetime.now(UTC) - SWEEP_GRACE
        ids = await asyncio.to_thread(self.store.undispatched_events, before=before)
        return await self._dispatch_ids([i for i in ids if i not in self._dispatching])

    async def _dispatch_ids(self, ids: list[int]) -> int:
        done = 0
        for event_id in ids:
            event = await asyncio.to_thread(self.store.get_event, event_id)
            if event is not None and await self.dispatch(event):
                done += 1
        return done

    async def sweep_forever(self, every: timedelta = SWEEP_EVERY) -> None:
        while True:
            try:
                await self.dispatch_pending()
            except Exception:  # the next pass tries again; one line, not a dead sweep
                log.exception("dispatching pending events failed")
            await asyncio.sleep(every.total_seconds())

    # --- runs -----------------------------------------------------------------------

    async def start_run(self, request: RunRequest, rule_name: str) -> str:
        """The run's row (``waiting``) and its workflow; the workflow id. A run already
        scheduled is not scheduled again, but its workflow is started if it never was."""
        workflow_id = workflow_id_for(request.rule_id, request.contact_id, request.occurrence)
        record = RunRecord(
            workflow_id=workflow_id,
            rule_id=request.rule_id,
            contact_id=request.contact_id,
            occurrence=request.occurrence,
            due_at=request.due_at,
            status=RunStatus.waiting,
            event_id=request.event_id,
        )
        new = await asyncio.to_thread(self.store.schedule_run, record, rule_name)
        if not new:
            existing = await asyncio.to_thread(self.store.get_run, workflow_id)
            if existing is None or existing.status != RunStatus.waiting:
                return workflow_id
        client = await self.client()
        start = automation_run.start_options(request)
        try:
            await client.start_workflow(
                AutomationRun.run, request, task_queue=self.task_queue, **start.options()
            )
        except WorkflowAlreadyStartedError:
            pass
        return workflow_id

    async def run_now(
        self, stored: StoredRule, contact_id: int, *, dry_run: bool, data: dict[str, object]
    ) -> RunOutcome:
        """Run ``stored`` for the contact at once (``POST /v1/automations/{id}/test``) and
        wait for what it did: with ``dry_run``, the text and the policy's verdict only."""
        request = RunRequest(
            rule_id=stored.id,
            contact_id=contact_id,
            occurrence=f"test-{uuid.uuid4().hex[:16]}",
            due_at=datetime.now(UTC),
            trigger=stored.rule.trigger,
            event_data=dict(data),
            dry_run=dry_run,
            now=True,
        )
        client = await self.client()
        start = automation_run.start_options(request)
        handle = await client.start_workflow(
            AutomationRun.run, request, task_queue=self.task_queue, **start.options()
        )
        try:
            return await asyncio.wait_for(handle.result(), TEST_TIMEOUT.total_seconds())
        except WorkflowFailureError as failure:
            cause = failure.cause
            return RunOutcome(status=RunStatus.failed, reason=str(getattr(cause, "message", cause)))

    async def trigger(self, stored: StoredRule, contact_id: int, data: dict[str, object]) -> str:
        """Run ``stored`` for the contact by hand, after its delay as an event would."""
        now = datetime.now(UTC)
        request = RunRequest(
            rule_id=stored.id,
            contact_id=contact_id,
            occurrence=f"manual-{uuid.uuid4().hex[:16]}",
            due_at=now if stored.rule.timer_based else now + stored.rule.delay,
            trigger=stored.rule.trigger,
            event_data=dict(data),
        )
        return await self.start_run(request, stored.rule.name)

    # --- rules changed --------------------------------------------------------------

    async def rule_changed(self, automation_id: int, stored: StoredRule | None) -> None:
        """A rule was saved, switched or deleted (``stored`` None): waiting runs of a rule
        that is off or gone end now with the reason; watches and reminders re-read their
        rules (every contact, every upcoming booking, in the background). Never raises: the
        rule is saved; what could not be told is logged (a waiting run of a rule switched
        off still checks the rule when it wakes, and skips)."""
        try:
            await self._rule_changed(automation_id, stored)
        except Exception as error:  # logged: the sweep or the timer finds it later
            log.warning("runs of rule %s were not told of its change: %s", automation_id, error)

    async def _rule_changed(self, automation_id: int, stored: StoredRule | None) -> None:
        if stored is None or not stored.rule.enabled:
            reason = (
                f"rule {automation_id} was deleted"
                if stored is None
                else f"rule {automation_id} was switched off"
            )
            # In the background: a rule with thousands of waiting runs is one signal each.
            self._in_background(self._stop_waiting(automation_id, reason))
        trigger = stored.rule.trigger if stored is not None else None
        if trigger in (None, Trigger.no_contact_days):
            self._in_background(self._refresh_watches())
        if trigger in (None, Trigger.booking_reminder_hours):
            self._in_background(self._refresh_reminders())

    async def _stop_waiting(self, automation_id: int, reason: str) -> None:
        client = await self.client()
        for workflow_id in await asyncio.to_thread(self.store.waiting_runs, automation_id):
            try:
                await client.get_workflow_handle(workflow_id).signal(AutomationRun.stop, reason)
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise

    async def _refresh_watches(self) -> None:
        """Every contact's watch re-reads its rules (started where one now applies). One
        contact that cannot be told does not stop the others; it is told by its next event."""
        after = 0
        while ids := await asyncio.to_thread(self.store.contact_ids, after=after):
            for contact_id in ids:
                try:
                    await self.watch(contact_id)
                except RPCError as error:
                    log.warning("the watch of contact %s was not told: %s", contact_id, error)
            after = ids[-1]

    async def _refresh_reminders(self) -> None:
        offset = 0
        now = datetime.now(UTC)
        while ids := await asyncio.to_thread(
            self.store.upcoming_bookings, after=now, offset=offset
        ):
            for booking_id in ids:
                booking = await asyncio.to_thread(self.store.get_booking, booking_id)
                try:
                    if booking is not None:
                        await self.booking_changed(booking)
                except RPCError as error:
                    log.warning("the reminder of booking %s was not told: %s", booking_id, error)
            offset += len(ids)

    def _in_background(self, work: Awaitable[None]) -> None:
        async def logged() -> None:
            try:
                await work
            except Exception:
                log.exception("updating watches or reminders after a rule change failed")

        task = asyncio.create_task(logged())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        for task in list(self._background):
            task.cancel()

    # --- watches and reminders ------------------------------------------------------

    async def _watching(self) -> bool:
        return bool(await asyncio.to_thread(self.store.enabled_rules, Trigger.no_contact_days))

    async def contact_changed(self, contact_id: int) -> None:
        """The contact changed without an event (tags, fields, source): a quiet rule may
        apply to it now, or no longer. Never raises."""
        try:
            if await self._watching():
                await self.watch(contact_id)
        except Exception as error:  # logged: the next event of the contact tells it
            log.warning("the watch of contact %s was not told: %s", contact_id, error)

    async def contacted(self, contact_id: int, at: datetime) -> None:
        """Someone contacted the contact at ``at`` (an operator says so): its watch starts a
        new quiet spell. Never raises: the watch also finds it when its timer fires."""
        try:
            if await self._watching():
                await self.watch(contact_id, contacted_at=at)
        except Exception as error:  # logged: the sweep or the timer finds it later
            log.warning("the watch of contact %s was not told: %s", contact_id, error)

    async def watch(self, contact_id: int, *, contacted_at: datetime | None = None) -> None:
        """The contact's watch hears that someone wrote (``contacted_at``) or that its
        rules may have changed; it is started when it is not running."""
        client = await self.client()
        start = contact_watch.start_options(contact_id)
        signal, args = (
            (ContactWatch.contacted, [contacted_at])
            if contacted_at is not None
            else (ContactWatch.refresh, [])
        )
        await client.start_workflow(
            ContactWatch.run,
            WatchInput(contact_id=contact_id),
            task_queue=self.task_queue,
            start_signal=signal.__name__,
            start_signal_args=args,
            **start.options(),
        )

    async def booking_saved(self, booking: BookingView, event: EventView | None) -> None:
        """A booking was made or changed, with its event (None: nothing an event says
        changed): the event's rules are started and the booking's reminder told. Never
        raises: what could not be done now is logged, and the event dispatched later."""
        if event is not None and await self.dispatch(event):
            return  # dispatching the booking's event told its reminder
        try:
            await self.booking_changed(booking)
        except Exception as error:  # logged: the sweep or the timer finds it later
            log.warning("the reminder of booking %s was not told: %s", booking.id, error)

    async def booking_changed(self, booking: BookingView) -> None:
        """The booking's reminder hears of its new time, its cancellation or completion;
        a booked one is started when it is not running (and there is a rule to remind by)."""
        if not await asyncio.to_thread(self.store.enabled_rules, Trigger.booking_reminder_hours):
            return  # no rule reminds of bookings (a reminder left running ends by itself)
        client = await self.client()
        workflow_id = booking_reminder.workflow_id_for(booking.id)
        if booking.status != "booked":
            try:
                await client.get_workflow_handle(workflow_id).signal(BookingReminder.refresh)
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise
            return
        start = booking_reminder.start_options(booking.id, booking.contact_id)
        await client.start_workflow(
            BookingReminder.run,
            ReminderInput(booking_id=booking.id, contact_id=booking.contact_id),
            task_queue=self.task_queue,
            start_signal="refresh",
            **start.options(),
        )
