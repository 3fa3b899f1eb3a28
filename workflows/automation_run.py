"""AutomationRun: one rule, for one contact, for one occurrence (an event, a quiet spell's
n-th message, a booking's reminder).

It sleeps the rule's delay on a durable timer (exact to the second, where the original's
hourly cron ran up to an hour late), then asks the store about the rule and the contact as
they are now (still there, switched on, conditions holding), and does the rule's action: a
message through the one send path, a contact update, or a signed webhook call. Switching the
rule off or deleting it ends a waiting run at once (``stop``), with the reason.

Its reads and writes of the store and its send run as local activities, in the worker that
runs the workflow: a run acts once and briefly, and a round trip through the server for each
step was most of the server's work per contact (``bench/automations.py``).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.automations import AutomationActivities, ContactChange, PlanRequest
    from activities.delivery import DeliveryActivities
    from activities.writer import WriteMessageRequest, WriterActivities
    from domain.automation_runs import (
        KIND,
        MessageDraft,
        RunOutcome,
        RunPlan,
        RunRecord,
        RunRequest,
        RunStatus,
        workflow_id_for,
    )
    from domain.delivery import ContactPolicyCheck, DeliverRequest, DeliveryOutcome
    from domain.durations import format_duration
    from domain.next_action import NextAction, ended
    from domain.policy import held_status
    from domain.status import SENT_STATUSES, SendStatus
    from workflows.bookkeeping import BOOKKEEPING, recorded
    from workflows.delivery import NoLongerWanted, send
    from workflows.search_attributes import CHANNEL, NUDGE_STATUS, at_start
    from workflows.starting import WorkflowStart

FAILED = "AutomationRunFailed"
WEBHOOK_RETRIES = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=8,
    non_retryable_error_types=["Rejected", "NotFound"],
)
"""5 s, 10 s, 20 s ... about 20 minutes of attempts before the run fails."""
WRITE_RETRIES = RetryPolicy(maximum_attempts=3)


def start_options(request: RunRequest) -> WorkflowStart:
    return WorkflowStart(
        id=workflow_id_for(request.rule_id, request.contact_id, request.occurrence),
        search_attributes=at_start(
            KIND, RunStatus.waiting.value, "", contact_id=request.contact_id
        ),
        summary=f"rule {request.rule_id} for contact {request.contact_id} ({request.occurrence})",
    )


@workflow.defn
class AutomationRun:
    def __init__(self) -> None:
        self._status = RunStatus.waiting
        self._next = NextAction("checks the rule and acts")
        self._stopped: str | None = None
        self._held: str | None = None

    @workflow.signal
    def stop(self, reason: str) -> None:
        """The rule was switched off or deleted: a run still waiting ends, saying why."""
        if self._stopped is None:
            self._stopped = reason

    @workflow.query
    def status(self) -> str:
        """``waiting``, ``running`` (``held_until_08:00_quiet_hours`` while held), then how
        it ended."""
        return self._held or self._status.value

    @workflow.query
    def next_action(self) -> NextAction:
        return self._next

    @workflow.run
    async def run(self, request: RunRequest) -> RunOutcome:
        self._id = workflow.info().workflow_id
        self._request = request
        try:
            outcome = await self._run(request)
        except asyncio.CancelledError:
            await self._finish(RunOutcome(status=RunStatus.cancelled, reason="cancelled"))
            raise
        except ActivityError as error:
            if is_cancelled_exception(error):
                await self._finish(RunOutcome(status=RunStatus.cancelled, reason="cancelled"))
                raise
            outcome = RunOutcome(status=RunStatus.failed, reason=_cause(error))
        if not request.dry_run:
            await self._finish(outcome)
        else:
            self._set(outcome.status, ended(outcome.status.value))
        if outcome.status == RunStatus.failed:
            message = f"automation run failed: {outcome.reason}"
            workflow.set_current_details(message)
            raise ApplicationError(message, type=FAILED, non_retryable=True)
        return outcome

    async def _run(self, request: RunRequest) -> RunOutcome:
        wait = request.due_at - workflow.now()
        if not request.now and wait > timedelta(0):
            self._plan(
                NextAction(
                    f"runs rule {request.rule_id}",
                    request.due_at,
                    f"{format_duration(wait)} after {request.trigger}",
                )
            )
            try:
                await workflow.wait_condition(lambda: self._stopped is not None, timeout=wait)
            except TimeoutError:
                pass
        if self._stopped is not None:
            return RunOutcome(status=RunStatus.skipped, reason=self._stopped)
        self._set(RunStatus.running, NextAction(f"runs rule {request.rule_id} now"))
        plan = await self._plan_run()
        if not plan.go:
            return RunOutcome(status=plan.status, reason=plan.reason)
        if plan.contact_update is not None and request.dry_run:
            return RunOutcome(status=RunStatus.dry_run, text=f"would set {plan.contact_update}")
        if plan.contact_update is not None:
            said = await workflow.execute_activity_method(
                AutomationActivities.update_contact,
                ContactChange(contact_id=request.contact_id, changes=plan.contact_update),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=BOOKKEEPING,
            )
            return RunOutcome(status=RunStatus.done, text=said)
        if plan.webhook is not None:
            if request.dry_run:
                return RunOutcome(status=RunStatus.dry_run, text=plan.webhook.url)
            self._plan(NextAction("calls the rule's webhook", why="retried for about 20 minutes"))
            code = await workflow.execute_activity_method(
                AutomationActivities.call_webhook,
                plan.webhook,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=WEBHOOK_RETRIES,
            )
            return RunOutcome(status=RunStatus.done, text=f"webhook answered HTTP {code}")
        assert plan.draft is not None
        return await self._send(request, plan.draft)

    async def _plan_run(self) -> RunPlan:
        """The rule and the contact as they are now: what the run does, or why it does not."""
        request = self._request
        plan: RunPlan = await recorded(
            "read the rule and the contact",
            workflow.execute_local_activity_method(
                AutomationActivities.plan_run,
                PlanRequest(
                    workflow_id=self._id,
                    rule_id=request.rule_id,
                    contact_id=request.contact_id,
                    trigger=request.trigger,
                    event_data=request.event_data,
                    test=request.occurrence.startswith("test-"),
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=BOOKKEEPING,
            ),
        )
        return plan

    async def _still_wanted(self) -> str | None:
        """Asked when a hold (quiet hours, the cap) ends: the rule may have been switched off,
        the contact may have written, the booking may have moved, meanwhile."""
        if self._stopped is not None:
            return self._stopped
        plan = await self._plan_run()
        return None if plan.go else plan.reason

    async def _send(self, request: RunRequest, draft: MessageDraft) -> RunOutcome:
        writer = "rule"
        if draft.needs_writing:
            written = await workflow.execute_activity_method(
                WriterActivities.write_message,
                WriteMessageRequest(prompt=draft.prompt, fallback=draft.fallback),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=WRITE_RETRIES,
            )
            draft.text, writer = written.text, written.writer
        channel = draft.channel.value
        workflow.upsert_search_attributes([CHANNEL.value_set(channel)])
        if request.dry_run:
            answer = await workflow.execute_activity_method(
                DeliveryActivities.check_contact_policy,
                ContactPolicyCheck(
                    contact_id=request.contact_id,
                    message_class=draft.message_class,
                    as_of=workflow.now(),
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=BOOKKEEPING,
            )
            verdict = answer.status.value
            if answer.not_before is not None:
                verdict += f" until {answer.not_before.isoformat()}"
            if answer.reason:
                verdict += f" ({answer.reason})"
            return RunOutcome(
                status=RunStatus.dry_run,
                channel=channel,
                text=draft.text,
                subject=draft.subject,
                verdict=verdict,
                writer=writer,
            )
        self._plan(NextAction(f"sends the message on {channel}"))
        try:
            outcome = await self._deliver(request, draft)
        except NoLongerWanted as stopped:
            return RunOutcome(status=RunStatus.skipped, reason=stopped.reason, channel=channel)
        return RunOutcome(
            status=_run_status(outcome.status),
            reason=outcome.reason,
            channel=channel,
            text=draft.text,
            subject=draft.subject,
            sent_at=outcome.sent_at,
            writer=writer,
        )

    async def _deliver(self, request: RunRequest, draft: MessageDraft) -> DeliveryOutcome:
        return await send(
            DeliverRequest(
                idempotency_key=f"{self._id}:send",
                workflow_id=self._id,
                channel=draft.channel,
                to=draft.to,
                text=draft.text,
                subject=draft.subject,
                template=draft.template,
                message_class=draft.message_class,
                contact_id=request.contact_id,
            ),
            local=True,
            on_hold=self._hold,
            still_wanted=self._still_wanted,
        )

    def _hold(self, outcome: DeliveryOutcome) -> None:
        assert outcome.not_before is not None
        status = held_status(outcome.not_before, outcome.timezone, outcome.reason)
        self._held = status
        workflow.upsert_search_attributes([NUDGE_STATUS.value_set(status)])
        self._plan(
            NextAction(
                "sends the message",
                outcome.not_before,
                f"held by {outcome.reason or 'the contact policy'}",
                outcome.timezone,
            )
        )

    async def _finish(self, outcome: RunOutcome) -> None:
        request = self._request
        self._set(outcome.status, ended(outcome.status.value))
        record = RunRecord(
            workflow_id=self._id,
            rule_id=request.rule_id,
            contact_id=request.contact_id,
            occurrence=request.occurrence,
            due_at=request.due_at,
            status=outcome.status,
            event_id=request.event_id,
            channel=outcome.channel,
            message=outcome.text or None,
            reason=outcome.reason or None,
            # Local steps do not move the workflow's clock: the send's own time, when later.
            finished_at=max(filter(None, [workflow.now(), outcome.sent_at])),
        )
        await recorded(
            "record the run",
            workflow.execute_local_activity_method(
                AutomationActivities.record_run,
                record,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=BOOKKEEPING,
            ),
        )

    def _set(self, status: RunStatus, next_action: NextAction) -> None:
        self._status, self._held = status, None
        workflow.upsert_search_attributes([NUDGE_STATUS.value_set(status.value)])
        self._plan(next_action)

    def _plan(self, next_action: NextAction) -> None:
        self._next = next_action
        workflow.set_current_details(next_action.sentence())


def _run_status(status: SendStatus) -> RunStatus:
    if status in SENT_STATUSES:
        return RunStatus.sent
    if status in (SendStatus.suppressed, SendStatus.outside_whatsapp_window):
        return RunStatus.suppressed
    return RunStatus.failed


def _cause(error: ActivityError) -> str:
    cause = error.cause
    while isinstance(cause, ActivityError | ApplicationError) and cause.cause is not None:
        if isinstance(cause, ApplicationError) and cause.message:
            break
        cause = cause.cause
    return getattr(cause, "message", None) or str(cause or error)
