"""ContactWatch: one per contact that a ``no_contact_days`` rule applies to.

It keeps a timer to the end of the contact's quiet spell for each such rule (the last time
anyone wrote either way, plus the rule's N days) and fires exactly then: no daily sweep over
every contact. A message from the contact arrives as ``contacted`` (after the store has it) and starts a
new spell at once; a message to the contact (a person's reply, another rule's message) is
found when the timer fires (``last_contacted_at`` moved on) and the timer moves to the new
spell's end. The store is the one truth of when the last contact was. A
rule with ``repeat`` sends at most that many messages a spell, each N days after the last
(never two at once, however old the spell); the watch's own messages do not start a new spell
(``last_exchange_at`` leaves them out). A database that does not answer is waited out, not
given up on: the watch is the contact's only clock. ``continue_as_new`` keeps its history
small however long the contact stays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.automations import AutomationActivities
    from domain.automation_runs import (
        QuietRule,
        RunRequest,
        WatchPlan,
        quiet_occurrence,
    )
    from domain.durations import format_duration
    from domain.events import Trigger
    from domain.next_action import NextAction
    from workflows.bookkeeping import BOOKKEEPING
    from workflows.rule_timers import Progress, read_patiently, run_rule
    from workflows.search_attributes import at_start
    from workflows.starting import WorkflowStart

KIND = "contact_watch"
ON_TIME = timedelta(minutes=1)
"""A message that fired within this of its due time fired on time."""
TURNS_BEFORE_CONTINUING = 50
"""Timer firings and signals handled before ``continue_as_new`` (each is a few events)."""


def workflow_id_for(contact_id: int) -> str:
    return f"contact:{contact_id}"


def start_options(contact_id: int) -> WorkflowStart:
    return WorkflowStart(
        id=workflow_id_for(contact_id),
        search_attributes=at_start(KIND, "watching", "", contact_id=contact_id),
        summary=f"no-contact rules for contact {contact_id}",
    )


@dataclass
class WatchInput:
    contact_id: int
    spell_start: datetime | None = None
    """When the current quiet spell began: the last message either way."""
    fired: dict[str, int] = field(default_factory=dict)
    """Rule id -> messages sent this spell."""
    last_fired: dict[str, datetime] = field(default_factory=dict)
    """Rule id -> when its last message of this spell was due: the next is N days later."""


@dataclass
class _Due:
    rule: QuietRule
    number: int
    at: datetime


@workflow.defn
class ContactWatch:
    @workflow.init
    def __init__(self, state: WatchInput) -> None:
        # The input is here before any signal: a signal-with-start's ``contacted`` lands on it.
        self._dirty = False
        self._progress = Progress("watching", NextAction("reads the contact's rules"))
        self._state = state

    @workflow.signal
    def contacted(self, at: datetime) -> None:
        """The contact wrote (or someone wrote to them, or an operator set when) at ``at``:
        the watch reads the store, which has it already, and starts a new quiet spell."""
        self._dirty = True

    @workflow.signal
    def refresh(self) -> None:
        """Rules or the contact changed: read them again."""
        self._dirty = True

    @workflow.query
    def status(self) -> str:
        return self._progress.status

    @workflow.query
    def next_action(self) -> NextAction:
        return self._progress.next

    @workflow.query
    def spell(self) -> WatchInput:
        return self._state

    @workflow.run
    async def run(self, state: WatchInput) -> str:
        for _ in range(TURNS_BEFORE_CONTINUING):
            self._dirty = False  # before reading: a signal during the read is not lost
            plan = await self._read()
            if not plan.exists:
                return self._progress.end(
                    "contact_deleted", f"contact {state.contact_id} was deleted"
                )
            if not plan.rules:
                return self._progress.end(
                    "no_rules", "no no_contact_days rule applies to the contact"
                )
            due = self._next_due(plan.rules)
            if due is None:
                self._progress.set(
                    "waiting_for_contact",
                    NextAction(
                        "waits for the contact to write or be written to",
                        why="every rule has sent its messages for this quiet spell",
                    ),
                )
                await workflow.wait_condition(lambda: self._dirty)
                continue
            self._progress.set(
                "watching",
                NextAction(
                    f"sends rule {due.rule.rule_id}'s message {due.number}",
                    due.at,
                    f"{format_duration(due.rule.after * due.number)} without contact",
                ),
            )
            wait = due.at - workflow.now()
            if wait > timedelta(0):
                try:
                    await workflow.wait_condition(lambda: self._dirty, timeout=wait)
                    continue  # woken: read again
                except TimeoutError:
                    pass
            # Due: someone may have written to the contact since (found in the store).
            plan = await self._read()
            if not plan.exists or self._next_due(plan.rules) != due:
                continue
            await self._fire(due)
            if workflow.info().is_continue_as_new_suggested():
                break
        workflow.continue_as_new(self._state)

    async def _read(self) -> WatchPlan:
        plan: WatchPlan = await read_patiently(
            "read the contact's rules and last contact",
            lambda: workflow.execute_local_activity_method(
                AutomationActivities.watch_plan,
                self._state.contact_id,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=BOOKKEEPING,
            ),
            self._progress,
            "reads the contact's rules again",
        )
        if plan.last_contact is not None:
            self._absorb(plan.last_contact)
        return plan

    def _absorb(self, last_contact: datetime) -> None:
        """The store's last exchange is where the spell begins: a new message either way
        starts a new one, and so does an operator setting ``last_contacted_at`` (earlier,
        too: the rule is due sooner). The watch's own messages are not exchanges."""
        state = self._state
        if last_contact != state.spell_start:
            state.spell_start, state.fired, state.last_fired = last_contact, {}, {}

    def _next_due(self, rules: list[QuietRule]) -> _Due | None:
        start = self._state.spell_start
        if start is None:
            return None
        found: list[_Due] = []
        for rule in rules:
            key = str(rule.rule_id)
            sent = self._state.fired.get(key, 0)
            if sent < rule.repeat:
                at = start + rule.after * (sent + 1)
                if key in self._state.last_fired:  # N days after the last, never at once
                    at = max(at, self._state.last_fired[key] + rule.after)
                found.append(_Due(rule, sent + 1, at))
        return min(found, key=lambda d: (d.at, d.rule.rule_id), default=None)

    async def _fire(self, due: _Due) -> None:
        state = self._state
        assert state.spell_start is not None
        request = RunRequest(
            rule_id=due.rule.rule_id,
            contact_id=state.contact_id,
            occurrence=quiet_occurrence(state.spell_start, due.number),
            due_at=due.at,
            trigger=Trigger.no_contact_days,
            event_data={
                "days": due.rule.after.days,
                "message": due.number,
                "quiet_since": state.spell_start.isoformat(),
            },
        )
        state.fired[str(due.rule.rule_id)] = due.number
        # The next is N days after this one: after its planned time when it fired on time,
        # after now when it was overdue (an old spell, a stopped worker): never two at once.
        late = workflow.now() - due.at > ON_TIME
        state.last_fired[str(due.rule.rule_id)] = workflow.now() if late else due.at
        await run_rule(request)
