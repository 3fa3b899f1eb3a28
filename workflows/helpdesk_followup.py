"""HelpdeskFollowUp: timed follow-ups on one tagged helpdesk conversation.

For each step: wait, read the conversation, stop if the customer bought or an agent took the
tag off, else write the message and send it. However it ends (all sent, purchase, tag
removed, conversation deleted, cancelled), take the tag off and record the outcome.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.delivery import DeliveryActivities, PostReplyInput, PostReplyResult
    from activities.helpdesk import (
        ORIGIN_PREFIX,
        HelpdeskActivities,
        ReadConversationInput,
        RecordOutcomeInput,
        RemoveTagInput,
        StepOutcome,
    )
    from activities.writer import WRITE_ATTEMPTS, WriterActivities, WriteRequest
    from domain.channels import ChannelName, MessageClass
    from domain.delivery import ContactPolicyCheck, DeliverRequest, DeliveryOutcome
    from domain.durations import format_duration
    from domain.next_action import NextAction, ended
    from domain.policy import HELD_PREFIX, Verdict, held_status
    from domain.status import SENT_STATUSES, FollowUpStatus, SendStatus
    from workflows.bookkeeping import BOOKKEEPING, recorded
    from workflows.delivery import send
    from workflows.search_attributes import (
        CHANNEL,
        CONTACT_ID,
        NUDGE_KIND,
        NUDGE_STATUS,
        at_start,
    )
    from workflows.starting import WorkflowStart

KIND = "helpdesk_followup"
CONTACT_POLICY_PATCH = "contact-policy"
"""Follow-ups are marketing: unsubscribes, quiet hours and the frequency cap apply."""
SEND_PATH_PATCH = "reply-through-send-path"
"""Replies go through the one send path (``deliver`` on the ``reamaze`` channel) with a key a
reset keeps; runs begun earlier post through ``post_reply`` with their run's key."""
HELD_STATUS_PATCH = "held-status"
"""A held step says until when and why (``held_until_08:00_quiet_hours``), in the ``status``
query and the ``NudgeStatus`` search attribute; runs begun earlier said ``holding_step_N``
in the query only."""

FAILED_RUNS_FAIL_PATCH = "failed-runs-fail"
"""A sequence that ends ``failed`` ends as a FAILED run (``FollowUpFailed``) after recording
its outcome, and one cancelled while an activity ran ends ``cancelled``; runs begun earlier
completed in both cases, recording the cancel as ``failed``."""
FOLLOW_UP_FAILED = "FollowUpFailed"

HELPDESK_API = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    non_retryable_error_types=["Rejected", "NotFound", "ConversationGone", "NotConfigured"],
)
"""Transient helpdesk faults (5xx, 429, timeouts) are retried until HELPDESK_PATIENCE runs out."""
HELPDESK_PATIENCE = timedelta(hours=6)
LLM_API = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=WRITE_ATTEMPTS,
)


@dataclass
class FollowUpInput:
    conversation: str
    waits: list[timedelta]
    trigger_tag: str
    remove_tag_on_finish: bool = True
    helpdesk: str = ChannelName.reamaze.value
    subject: str = ""


@dataclass
class FollowUpResult:
    status: FollowUpStatus
    steps: list[StepOutcome] = field(default_factory=list)
    reason: str | None = None
    tag_removed: bool = False


def workflow_id_for(helpdesk: str, conversation: str) -> str:
    return f"followup:{helpdesk}:{conversation}"


def start_options(conversation: str, helpdesk: str = ChannelName.reamaze.value) -> WorkflowStart:
    """A conversation has one follow-up at a time (its id); once one has ended, a new tag may
    start another (ALLOW_DUPLICATE)."""
    return WorkflowStart(
        id=workflow_id_for(helpdesk, conversation),
        search_attributes=at_start(KIND, "waiting_step_1", helpdesk),
        summary=f"Follow-up on {helpdesk} conversation {conversation}",
    )


def reply_key(info: workflow.Info, step: int) -> str:
    """The reply's idempotency key, which is also its Re:amaze ``origin_id``: the workflow id
    and the step, and a mark of this sequence (a conversation tagged again after its
    follow-up ended reuses the workflow id). The mark comes from the first run id of the
    chain, which ``temporal workflow reset`` keeps, so a reset never posts a step again."""
    sequence = info.first_execution_run_id.replace("-", "")[-12:]
    return f"{ORIGIN_PREFIX}{info.workflow_id}:{sequence}:step-{step}"


@workflow.defn
class HelpdeskFollowUp:
    def __init__(self) -> None:
        self._status = "starting"
        self._steps: list[StepOutcome] = []
        self._contact_id: int | None = None
        self._reason: str | None = None
        """Why the sequence ended as it did, when it did not complete."""
        self._next = NextAction("starts the sequence")

    @workflow.query
    def status(self) -> str:
        return self._status

    @workflow.query
    def next_action(self) -> NextAction:
        """What it does next, when and why; its current details say the same sentence."""
        return self._next

    @workflow.run
    async def run(self, request: FollowUpInput) -> FollowUpResult:
        started_at = workflow.now()
        self._plan(self._next)
        if workflow.info().typed_search_attributes.get(NUDGE_KIND) is None:
            # Started without them (e.g. by `temporal workflow start`): set them once.
            workflow.upsert_search_attributes(
                [NUDGE_KIND.value_set(KIND), CHANNEL.value_set(request.helpdesk)]
            )
        status, reason = FollowUpStatus.completed, None
        try:
            status = await self._run_steps(request)
            reason = self._reason
        except asyncio.CancelledError:
            await self._finish(request, FollowUpStatus.cancelled, None, started_at)
            raise
        except ActivityError as error:
            if is_cancelled_exception(error) and workflow.patched(FAILED_RUNS_FAIL_PATCH):
                # Cancelled while an activity ran: a cancel like any other, not a failure.
                await self._finish(request, FollowUpStatus.cancelled, None, started_at)
                raise
            status, reason = _classify(error)
        result = await self._finish(request, status, reason, started_at)
        if status == FollowUpStatus.failed and workflow.patched(FAILED_RUNS_FAIL_PATCH):
            # Recorded and cleaned up; now show it as what it is: red in the Web UI, counted
            # under Failures.
            message = f"follow-up failed: {result.reason or 'no reason given'}"
            workflow.set_current_details(message)
            raise ApplicationError(message, type=FOLLOW_UP_FAILED, non_retryable=True)
        return result

    async def _run_steps(self, request: FollowUpInput) -> FollowUpStatus:
        info = workflow.info()
        for number, wait in enumerate(request.waits, start=1):
            self._set_status(f"waiting_step_{number}")
            step = StepOutcome(step=number, due_at=workflow.now() + wait)
            after = "the sequence began" if number == 1 else f"step {number - 1}"
            self._plan(
                NextAction(
                    f"sends follow-up {number}",
                    step.due_at,
                    f"{format_duration(wait)} after {after}",
                )
            )
            await workflow.sleep(wait)
            step.fired_at = workflow.now()

            while True:
                self._plan(
                    NextAction(
                        f"sends follow-up {number} now",
                        why="unless the customer has bought or the tag is gone",
                    )
                )
                snapshot = await workflow.execute_activity_method(
                    HelpdeskActivities.read_conversation,
                    ReadConversationInput(request.conversation, request.trigger_tag),
                    start_to_close_timeout=timedelta(minutes=2),
                    schedule_to_close_timeout=HELPDESK_PATIENCE,
                    retry_policy=HELPDESK_API,
                )
                self._note_contact(snapshot.contact_id)
                if snapshot.purchase_seen:
                    return FollowUpStatus.purchase_detected
                if not snapshot.tag_present:
                    return FollowUpStatus.tag_removed
                if not workflow.patched(CONTACT_POLICY_PATCH):
                    break  # runs started before follow-ups obeyed the contact policy
                answer = await workflow.execute_activity_method(
                    DeliveryActivities.check_contact_policy,
                    ContactPolicyCheck(contact_id=self._contact_id, as_of=workflow.now()),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=BOOKKEEPING,
                )
                if answer.status == Verdict.suppressed:
                    self._reason = answer.reason
                    return FollowUpStatus.suppressed
                if answer.status != Verdict.wait or answer.not_before is None:
                    break
                # Quiet hours or the frequency cap: wait, then read the conversation again
                # (the customer may have bought or an agent taken over meanwhile).
                self._hold(number, answer.not_before, answer.timezone, answer.reason)
                await workflow.sleep(max(answer.not_before - workflow.now(), timedelta(seconds=1)))

            self._set_status(f"sending_step_{number}", searchable=False)
            self._plan(NextAction(f"sends follow-up {number} now", why="writing the message"))
            draft = await workflow.execute_activity_method(
                WriterActivities.write_followup,
                WriteRequest(step=number, transcript=snapshot.transcript),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=LLM_API,
            )
            step.fallback_used, step.fallback_reason = draft.fallback_used, draft.reason
            self._steps.append(step)
            if not workflow.patched(SEND_PATH_PATCH):
                await self._post_reply(request, step, draft.text)
                continue
            step.outbox_key = reply_key(info, number)
            sent = await send(
                DeliverRequest(
                    idempotency_key=step.outbox_key,
                    workflow_id=info.workflow_id,
                    channel=ChannelName(request.helpdesk),
                    to=request.conversation,
                    text=draft.text,
                    message_class=MessageClass.marketing,
                    contact_id=self._contact_id,
                ),
                on_hold=functools.partial(self._held_send, number),
            )
            step.sent_at, step.send_status = sent.sent_at, sent.status.value
            if sent.status == SendStatus.suppressed:
                self._reason = sent.reason
                return FollowUpStatus.suppressed
            if sent.gone:
                self._reason = sent.reason
                return FollowUpStatus.conversation_gone
            if sent.status not in SENT_STATUSES and sent.status != SendStatus.unknown:
                self._reason = sent.reason or f"the reply was not sent ({sent.status})"
                return FollowUpStatus.failed
        return FollowUpStatus.completed

    async def _finish(
        self,
        request: FollowUpInput,
        status: FollowUpStatus,
        reason: str | None,
        started_at: datetime,
    ) -> FollowUpResult:
        self._set_status("finishing", searchable=False)
        self._plan(NextAction("records the outcome", why=f"the sequence ended {status.value}"))
        tag_removed = False
        if request.remove_tag_on_finish and status != FollowUpStatus.conversation_gone:
            try:
                tag_removed = await workflow.execute_activity_method(
                    HelpdeskActivities.remove_trigger_tag,
                    RemoveTagInput(request.conversation, request.trigger_tag),
                    start_to_close_timeout=timedelta(minutes=1),
                    schedule_to_close_timeout=timedelta(hours=1),
                    retry_policy=HELPDESK_API,
                )
            except ActivityError as error:
                # The outcome still gets recorded; the poller will not restart on a leftover tag.
                # A cancel is no failure: its record says only tag_removed=false.
                workflow.logger.warning("trigger tag not removed: %s", _cause(error))
                if status != FollowUpStatus.cancelled:
                    reason = f"{reason + '; ' if reason else ''}tag not removed: {_cause(error)}"
        info = workflow.info()
        await recorded(
            "record the follow-up's outcome",
            workflow.execute_activity_method(
                HelpdeskActivities.record_outcome,
                RecordOutcomeInput(
                    workflow_id=info.workflow_id,
                    run_id=info.run_id,
                    conversation=request.conversation,
                    status=status.value,
                    started_at=started_at,
                    finished_at=workflow.now(),
                    steps=self._steps,
                    tag_removed=tag_removed,
                    failure_reason=reason,
                    contact_id=self._contact_id,
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=BOOKKEEPING,
            ),
        )
        self._set_status(status.value)
        self._plan(ended(status.value))
        # How it ended, in one line: a purchase or a removed tag is the sequence working.
        log = workflow.logger.warning if status == FollowUpStatus.failed else workflow.logger.info
        log(
            "follow-up on %s ended %s%s",
            request.conversation,
            status.value,
            f": {reason}" if reason else "",
        )
        return FollowUpResult(
            status=status, steps=self._steps, reason=reason, tag_removed=tag_removed
        )

    async def _post_reply(self, request: FollowUpInput, step: StepOutcome, text: str) -> None:
        """How runs begun before the one send path post (their recorded history says so)."""
        info = workflow.info()
        step.outbox_key = f"{ORIGIN_PREFIX}{info.run_id}:step-{step.step}"
        sent = await workflow.execute_activity(
            "post_reply",
            PostReplyInput(
                conversation=request.conversation,
                body=text,
                idempotency_key=step.outbox_key,
                workflow_id=info.workflow_id,
                contact_id=self._contact_id,
            ),
            result_type=PostReplyResult,
            start_to_close_timeout=timedelta(minutes=2),
            heartbeat_timeout=timedelta(seconds=10),
            schedule_to_close_timeout=HELPDESK_PATIENCE,
            retry_policy=HELPDESK_API,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        step.sent_at, step.send_status = sent.sent_at, sent.status

    def _hold(
        self,
        step: int,
        not_before: datetime,
        timezone: str,
        reason: str,
        then: str = "the conversation is read again first",
    ) -> None:
        """Say until when and why the step is held, in the zone it was judged in."""
        self._plan(
            NextAction(
                f"sends follow-up {step}",
                not_before,
                f"held by {reason or 'the contact policy'}; {then}",
                timezone,
            )
        )
        if not workflow.patched(HELD_STATUS_PATCH):
            self._set_status(f"holding_step_{step}", searchable=False)
            return
        self._set_status(held_status(not_before, timezone, reason))

    def _held_send(self, step: int, outcome: DeliveryOutcome) -> None:
        if outcome.not_before is not None:
            self._hold(
                step,
                outcome.not_before,
                outcome.timezone,
                outcome.reason,
                then="the message is written already",
            )

    def _plan(self, next_action: NextAction) -> None:
        """The ``next_action`` query and the Web UI's current details, in step (neither is a
        command: changing them never breaks replay)."""
        self._next = next_action
        workflow.set_current_details(next_action.sentence())

    def _set_status(self, status: str, *, searchable: bool = True) -> None:
        """Every phase shows in the ``status`` query; only the waits (a hold too) and the
        ending go to the ``NudgeStatus`` search attribute, since each upsert costs the cluster a
        visibility write. The phase after a hold replaces it there, so no list shows a hold
        that is over."""
        self._status = status
        current = workflow.info().typed_search_attributes.get(NUDGE_STATUS)
        was_held = current is not None and current.startswith(HELD_PREFIX)
        if (searchable or was_held) and current != status:
            workflow.upsert_search_attributes([NUDGE_STATUS.value_set(status)])

    def _note_contact(self, contact_id: int | None) -> None:
        if contact_id is not None and contact_id != self._contact_id:
            self._contact_id = contact_id
            workflow.upsert_search_attributes([CONTACT_ID.value_set(str(contact_id))])


def _cause(error: ActivityError) -> str:
    cause = error.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause or error)


def _classify(error: ActivityError) -> tuple[FollowUpStatus, str]:
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type in ("ConversationGone", "NotFound"):
        return FollowUpStatus.conversation_gone, cause.message
    return FollowUpStatus.failed, _cause(error)
