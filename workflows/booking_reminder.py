"""BookingReminder: one per booking, a timer to ``starts_at - N`` for each
``booking_reminder_hours`` rule (its ``delay_hours``/``delay_days`` is N).

The booking lives in the store; this workflow re-reads it whenever it is told (``refresh``:
moved, cancelled, completed, rules changed), so a reschedule moves the timers in place, with
no cancel-and-restart, and a cancellation ends it. A reminder whose moment has passed is sent
at once while the booking is still ahead, and recorded ``too_late`` once it has begun. Each
reminder is a run of its rule for the booking at that start time: moved, the booking is
reminded again for its new time, and never twice for one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.automations import AutomationActivities
    from domain.automation_runs import (
        BookingPlan,
        BookingStatus,
        ReminderRule,
        RunRecord,
        RunRequest,
        RunStatus,
        booking_occurrence,
    )
    from domain.automation_runs import (
        workflow_id_for as run_id_for,
    )
    from domain.durations import format_duration
    from domain.events import Trigger
    from domain.next_action import NextAction
    from workflows.bookkeeping import BOOKKEEPING, recorded
    from workflows.rule_timers import Progress, read_patiently, run_rule
    from workflows.search_attributes import at_start
    from workflows.starting import WorkflowStart

KIND = "booking_reminder"


def workflow_id_for(booking_id: int) -> str:
    return f"booking:{booking_id}"


def start_options(booking_id: int, contact_id: int) -> WorkflowStart:
    return WorkflowStart(
        id=workflow_id_for(booking_id),
        search_attributes=at_start(KIND, "waiting", "", contact_id=contact_id),
        summary=f"reminders of booking {booking_id} for contact {contact_id}",
    )


@dataclass
class ReminderInput:
    booking_id: int
    contact_id: int
    done: list[str] = field(default_factory=list)
    """The reminders handled (``{rule}:{occurrence}``): sent, or recorded too late."""


@dataclass
class _Due:
    rule: ReminderRule
    occurrence: str
    at: datetime


@workflow.defn
class BookingReminder:
    def __init__(self) -> None:
        self._dirty = False
        self._progress = Progress("waiting", NextAction("reads the booking"))

    @workflow.signal
    def refresh(self) -> None:
        """The booking was moved, cancelled or completed, or the rules changed."""
        self._dirty = True

    @workflow.query
    def status(self) -> str:
        return self._progress.status

    @workflow.query
    def next_action(self) -> NextAction:
        return self._progress.next

    @workflow.run
    async def run(self, state: ReminderInput) -> str:
        self._state = state
        while True:
            self._dirty = False
            plan = await self._read()
            if not plan.exists:
                return self._progress.end("deleted", f"booking {state.booking_id} was deleted")
            if plan.status != BookingStatus.booked:
                return self._progress.end(plan.status.value, f"the booking was {plan.status.value}")
            if not plan.rules:
                return self._progress.end(
                    "no_rules", "no booking_reminder_hours rule is switched on"
                )
            assert plan.starts_at is not None
            pending = self._pending(plan)
            now = workflow.now()
            for due in [d for d in pending if d.at <= now]:
                await self._remind(plan, due, late=plan.starts_at <= now)
            future = [d for d in pending if d.at > now]
            if not future and plan.starts_at <= now:
                return self._progress.end("started", "the booking has begun")
            if future:
                due = min(future, key=lambda d: (d.at, d.rule.rule_id))
                until = due.at
                self._progress.set(
                    "waiting",
                    NextAction(
                        f"sends rule {due.rule.rule_id}'s reminder",
                        due.at,
                        f"{format_duration(due.rule.before)} before the booking",
                    ),
                )
            else:
                until = plan.starts_at
                self._progress.set(
                    "reminded",
                    NextAction("ends when the booking begins", until, "every reminder is handled"),
                )
            try:
                await workflow.wait_condition(
                    lambda: self._dirty, timeout=max(until - workflow.now(), timedelta(0))
                )
            except TimeoutError:
                pass

    async def _read(self) -> BookingPlan:
        plan: BookingPlan = await read_patiently(
            "read the booking",
            lambda: workflow.execute_local_activity_method(
                AutomationActivities.booking_plan,
                self._state.booking_id,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=BOOKKEEPING,
            ),
            self._progress,
            "reads the booking again",
        )
        return plan

    def _pending(self, plan: BookingPlan) -> list[_Due]:
        assert plan.starts_at is not None
        occurrence = booking_occurrence(self._state.booking_id, plan.starts_at)
        return [
            _Due(rule, occurrence, plan.starts_at - rule.before)
            for rule in plan.rules
            if f"{rule.rule_id}:{occurrence}" not in self._state.done
        ]

    async def _remind(self, plan: BookingPlan, due: _Due, *, late: bool) -> None:
        state = self._state
        state.done.append(f"{due.rule.rule_id}:{due.occurrence}")
        if late:
            await recorded(
                "record a reminder that came too late",
                workflow.execute_local_activity_method(
                    AutomationActivities.record_run,
                    RunRecord(
                        workflow_id=run_id_for(due.rule.rule_id, state.contact_id, due.occurrence),
                        rule_id=due.rule.rule_id,
                        contact_id=state.contact_id,
                        occurrence=due.occurrence,
                        due_at=due.at,
                        status=RunStatus.too_late,
                        reason="the booking had begun before its reminder could be sent",
                        finished_at=workflow.now(),
                    ),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=BOOKKEEPING,
                ),
            )
            return
        request = RunRequest(
            rule_id=due.rule.rule_id,
            contact_id=state.contact_id,
            occurrence=due.occurrence,
            due_at=due.at,
            trigger=Trigger.booking_reminder_hours,
            event_data=dict(plan.data),
        )
        await run_rule(request)
