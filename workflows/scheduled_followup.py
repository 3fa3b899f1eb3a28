"""ScheduledFollowUp: one follow-up a user paid for, sent at its time, its credits settled once.

Its credits were reserved when it was scheduled. It waits on a durable timer until
``scheduled_at`` (moved in place by ``reschedule``), renders its template as it is then,
sends through the one send path (policy included), and settles the reservation by what
the outbox says happened: captured when the provider accepted the message, released when
it was cancelled or could not be delivered (as the settings say). A sent message then waits
for the provider's delivered and read statuses.

Cancelling it, through ``cancel`` (the API) or from the Temporal Web UI or CLI, settles the
same way: a message that had left is paid for, one that had not is refunded. Settling is
keyed by the workflow id, so no crash, retry or reset settles twice.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.scheduled_followups import ScheduledFollowUpActivities
    from domain.channels import REPORTING_CHANNELS
    from domain.delivery import DeliverRequest, DeliveryOutcome, DeliveryStatus
    from domain.next_action import NextAction, ended
    from domain.policy import held_status
    from domain.scheduled_followups import (
        KIND,
        PreparedMessage,
        Reschedule,
        ScheduledFollowUpInput,
        ScheduleStatus,
        ScheduleUpdate,
        Settled,
        SettleRequest,
        workflow_id_for,
    )
    from domain.status import SENT_STATUSES, SendStatus
    from workflows.bookkeeping import BOOKKEEPING, recorded
    from workflows.delivery import send
    from workflows.search_attributes import NUDGE_STATUS, at_start
    from workflows.starting import WorkflowStart

FAILED = "ScheduledFollowUpFailed"
STATUS_WAIT = timedelta(days=3)
"""How long a sent message waits for the provider to report it read (or failed)."""
STORE_CALL = timedelta(seconds=30)


NOT_PENDING = "NotPending"
"""An update that only a follow-up still waiting for its time accepts."""


def start_options(request: ScheduledFollowUpInput) -> WorkflowStart:
    return WorkflowStart(
        id=workflow_id_for(request.schedule_id),
        search_attributes=at_start(
            KIND, ScheduleStatus.pending.value, request.channel.value, contact_id=request.contact_id
        ),
        summary=f"follow-up {request.schedule_id} for contact {request.contact_id} "
        f"on {request.channel.value}",
    )


@workflow.defn
class ScheduledFollowUp:
    @workflow.init
    def __init__(self, request: ScheduledFollowUpInput) -> None:
        # Given the input here, so an update arriving with the first task finds it.
        self._request = request
        self._schedule_id = request.schedule_id
        self._id = workflow.info().workflow_id
        self._due = request.scheduled_at
        self._status = ScheduleStatus.pending
        self._held: str | None = None
        self._next = NextAction("waits for its time")
        self._due_changes = 0
        self._cancel: str | None = None
        self._settled: Settled | None = None
        self._statuses: list[str] = []
        self._statuses_seen = 0
        self._changes_seen = 0

    @workflow.update
    async def reschedule(self, change: Reschedule) -> str:
        """Move the time in place (the API checked the limits). Refused once it is sending."""
        self._due = change.scheduled_at
        self._due_changes += 1
        await self._record(ScheduleUpdate(self._schedule_id, scheduled_at=change.scheduled_at))
        return change.scheduled_at.isoformat()

    @reschedule.validator
    def _reschedule_allowed(self, change: Reschedule) -> None:
        self._refuse_unless_pending("moved")

    @workflow.update
    async def cancel(self, reason: str) -> Settled:
        """Cancel a follow-up still waiting for its time; answers once its credits are
        settled. Refused once it is sending (the message may be on its way)."""
        self._cancel = reason or "cancelled"
        await workflow.wait_condition(lambda: self._settled is not None)
        assert self._settled is not None
        return self._settled

    @cancel.validator
    def _cancel_allowed(self, reason: str) -> None:
        self._refuse_unless_pending("cancelled")

    def _refuse_unless_pending(self, what: str) -> None:
        if self._status != ScheduleStatus.pending or self._cancel is not None:
            raise ApplicationError(
                f"the follow-up is {self._status.value}; it can no longer be {what}",
                type=NOT_PENDING,
                non_retryable=True,
            )

    @workflow.signal
    def delivery_status(self, update: DeliveryStatus) -> None:
        self._statuses.append(update.status)

    @workflow.query
    def status(self) -> str:
        """``pending``, ``sending`` (``held_until_08:00_quiet_hours`` while held), ``sent``,
        ``delivered``, ``read``, or how it ended (``failed``, ``suppressed``, ``cancelled``)."""
        return self._held or self._status.value

    @workflow.query
    def next_action(self) -> NextAction:
        return self._next

    @workflow.run
    async def run(self, request: ScheduledFollowUpInput) -> Settled:
        try:
            settled = await self._run()
        except asyncio.CancelledError:
            # From the Web UI or the CLI: settled by what the outbox says went out.
            await self._settle(ScheduleStatus.cancelled, "cancelled by an operator")
            raise
        if settled.status == ScheduleStatus.failed:
            message = f"follow-up {request.schedule_id} failed: {settled.reason}"
            workflow.set_current_details(message)
            raise ApplicationError(message, type=FAILED, non_retryable=True)
        return settled

    async def _run(self) -> Settled:
        if not await self._wait_for_time():
            return await self._settle(ScheduleStatus.cancelled, self._cancel or "cancelled")
        self._set(ScheduleStatus.sending, NextAction("sends the follow-up now"))
        prepared: PreparedMessage = await recorded(
            "read the follow-up, its template and its contact",
            workflow.execute_local_activity_method(
                ScheduledFollowUpActivities.prepare_followup,
                self._schedule_id,
                start_to_close_timeout=STORE_CALL,
                retry_policy=BOOKKEEPING,
            ),
        )
        if prepared.reason:
            return await self._settle(ScheduleStatus.failed, prepared.reason)
        outcome = await self._send(prepared)
        if outcome.status in SENT_STATUSES:
            settled = await self._settle(ScheduleStatus.sent, "")
        elif outcome.status in (SendStatus.suppressed, SendStatus.outside_whatsapp_window):
            settled = await self._settle(ScheduleStatus.suppressed, outcome.reason)
        else:
            settled = await self._settle(ScheduleStatus.failed, outcome.reason or "not sent")
        if (
            settled.status == ScheduleStatus.sent
            and outcome.status == SendStatus.sent
            and self._request.channel in REPORTING_CHANNELS
        ):
            settled = await self._follow_statuses(settled)
        return settled

    async def _wait_for_time(self) -> bool:
        """Sleep until the (possibly moved) time; False when cancelled meanwhile."""
        while self._cancel is None:
            wait = self._due - workflow.now()
            if wait <= timedelta(0):
                return True
            self._plan(
                NextAction(
                    f"sends the follow-up on {self._request.channel.value}",
                    self._due,
                    "its scheduled time",
                )
            )
            self._changes_seen = self._due_changes
            try:
                await workflow.wait_condition(self._moved_or_cancelled, timeout=wait)
            except TimeoutError:
                pass
        return False

    def _moved_or_cancelled(self) -> bool:
        return self._cancel is not None or self._due_changes != self._changes_seen

    def _new_status(self) -> bool:
        return len(self._statuses) > self._statuses_seen

    async def _send(self, prepared: PreparedMessage) -> DeliveryOutcome:
        request = self._request
        return await send(
            DeliverRequest(
                idempotency_key=f"{self._id}:send",
                workflow_id=self._id,
                channel=request.channel,
                to=prepared.to,
                text=prepared.text,
                subject=prepared.subject,
                template=prepared.approved,
                message_class=prepared.message_class,
                contact_id=request.contact_id,
                template_name=prepared.template_name,
            ),
            local=True,
            on_hold=self._hold,
        )

    async def _follow_statuses(self, settled: Settled) -> Settled:
        """Record delivered and read as the provider reports them, until read or failed
        or ``STATUS_WAIT``; a failure after sending is refunded where the settings say."""
        deadline = workflow.now() + STATUS_WAIT
        self._set(
            ScheduleStatus.sent,
            NextAction("ends with the message's last reported status", deadline, "sent"),
        )
        self._statuses_seen = 0
        while True:
            try:
                await workflow.wait_condition(
                    self._new_status,
                    timeout=deadline - workflow.now(),
                )
            except TimeoutError:
                break
            self._statuses_seen = len(self._statuses)
            statuses = await recorded(
                "record the message's delivery status",
                workflow.execute_local_activity_method(
                    ScheduledFollowUpActivities.followup_statuses,
                    self._schedule_id,
                    start_to_close_timeout=STORE_CALL,
                    retry_policy=BOOKKEEPING,
                ),
            )
            settled = Settled(
                statuses.status,
                statuses.credits_charged,
                reason="the provider reported it failed" if statuses.refunded else "",
                sent_at=settled.sent_at,
            )
            self._set(statuses.status, self._next)
            if statuses.status in (ScheduleStatus.read, ScheduleStatus.failed):
                break
        self._plan(ended(settled.status.value))
        return settled

    async def _settle(self, ending: ScheduleStatus, reason: str) -> Settled:
        settled: Settled = await recorded(
            "settle the follow-up's credits",
            workflow.execute_local_activity_method(
                ScheduledFollowUpActivities.settle_followup,
                SettleRequest(
                    schedule_id=self._schedule_id,
                    workflow_id=self._id,
                    message_key=f"{self._id}:send",
                    ending=ending,
                    reason=reason,
                ),
                start_to_close_timeout=STORE_CALL,
                retry_policy=BOOKKEEPING,
            ),
        )
        self._settled = settled
        self._set(settled.status, ended(settled.status.value))
        return settled

    async def _record(self, change: ScheduleUpdate) -> None:
        await recorded(
            "record the follow-up",
            workflow.execute_local_activity_method(
                ScheduledFollowUpActivities.record_followup,
                change,
                start_to_close_timeout=STORE_CALL,
                retry_policy=BOOKKEEPING,
            ),
        )

    def _hold(self, outcome: DeliveryOutcome) -> None:
        assert outcome.not_before is not None
        self._held = held_status(outcome.not_before, outcome.timezone, outcome.reason)
        workflow.upsert_search_attributes([NUDGE_STATUS.value_set(self._held)])
        self._plan(
            NextAction(
                "sends the follow-up",
                outcome.not_before,
                f"held by {outcome.reason or 'the contact policy'}",
                outcome.timezone,
            )
        )

    def _set(self, status: ScheduleStatus, next_action: NextAction) -> None:
        if status != self._status or self._held is not None:
            workflow.upsert_search_attributes([NUDGE_STATUS.value_set(status.value)])
        self._status, self._held = status, None
        self._plan(next_action)

    def _plan(self, next_action: NextAction) -> None:
        self._next = next_action
        workflow.set_current_details(next_action.sentence())
