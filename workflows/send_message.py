"""SendMessage: one message to one contact through the send path (policy, outbox, channel).

What an operator's "send this now" becomes, and the simplest user of ``workflows.delivery``:
it may wait out quiet hours or the frequency cap; once the message is sent on a channel whose
provider reports statuses, it waits (at most ``STATUS_WAIT``) for it to report the message
delivered, read or failed, and ends with the furthest status it heard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.channels import REPORTING_CHANNELS
    from domain.delivery import DeliverRequest, DeliveryOutcome, DeliveryStatus
    from domain.durations import format_duration
    from domain.next_action import NextAction, ended
    from domain.policy import held_status
    from domain.status import DELIVERY_FINAL, SendStatus, furthest
    from workflows.delivery import send
    from workflows.search_attributes import (
        CHANNEL,
        CONTACT_ID,
        NUDGE_KIND,
        NUDGE_STATUS,
        at_start,
    )
    from workflows.starting import WorkflowStart

KIND = "send_message"
STATUS_WAIT = timedelta(hours=1)
"""How long a sent message waits for its delivery status; without one it ends ``sent``."""
WAIT_FOR_STATUS = "send-message-waits-for-status"
"""``workflow.patched`` id: runs started before SendMessage waited end right after sending."""
REPORTING_ONLY = "send-message-waits-only-where-statuses-come"
"""``workflow.patched`` id: runs started earlier waited for a status on every channel, also
where none ever comes (e-mail, push, Re:amaze)."""
HELD_STATUS = "send-message-held-status"
"""``workflow.patched`` id: a held message says until when and why in ``NudgeStatus``
(``held_until_08:00_quiet_hours``); runs begun earlier kept ``sending`` while held."""
HELD_CONTACT = "send-message-held-contact-id"
"""``workflow.patched`` id: a held message started with only an address sets ``ContactId``
from the send path's answer (``GET /v1/contacts/{id}/next`` finds it); runs begun earlier
did not."""


def workflow_id_for(key: str) -> str:
    return f"message:{key}"


def start_options(request: DeliverRequest) -> WorkflowStart:
    """One run per idempotency key (``request.workflow_id``): a repeat while it runs is
    refused, and a repeat after it ended finds the message already sent."""
    recipient = f"contact {request.contact_id}" if request.contact_id is not None else "one address"
    return WorkflowStart(
        id=request.workflow_id,
        search_attributes=at_start(
            KIND, "sending", request.channel.value, contact_id=request.contact_id
        ),
        summary=f"{request.message_class.value} {request.channel.value} message to {recipient}",
    )


@dataclass
class SendMessageResult:
    status: str
    reason: str = ""
    provider_message_id: str | None = None
    statuses: list[str] = field(default_factory=list)
    finished_at: datetime | None = None
    """Workflow time when the send path answered (after any policy wait)."""


@workflow.defn
class SendMessage:
    def __init__(self) -> None:
        self._statuses: list[str] = []
        self._status = "sending"
        self._next = NextAction("sends the message now")
        self._contact_known = False

    @workflow.signal
    def delivery_status(self, update: DeliveryStatus) -> None:
        self._statuses.append(update.status)

    @workflow.query
    def statuses(self) -> list[str]:
        return list(self._statuses)

    @workflow.query
    def status(self) -> str:
        """``sending``, ``held_until_08:00_quiet_hours`` while held, then how it ended."""
        return self._status

    @workflow.query
    def next_action(self) -> NextAction:
        """What it does next, when and why; its current details say the same sentence."""
        return self._next

    @workflow.run
    async def run(self, request: DeliverRequest) -> SendMessageResult:
        self._plan(self._next)
        self._contact_known = request.contact_id is not None
        workflow.upsert_search_attributes(
            [NUDGE_KIND.value_set(KIND), CHANNEL.value_set(request.channel.value)]
        )
        outcome = await send(request, on_hold=self._hold)
        workflow.upsert_search_attributes([NUDGE_STATUS.value_set(outcome.status.value)])
        finished_at = workflow.now()
        status: str = outcome.status.value
        self._status = status
        self._plan(ended(status))
        if status == SendStatus.sent and workflow.patched(WAIT_FOR_STATUS):
            if request.channel in REPORTING_CHANNELS or not workflow.patched(REPORTING_ONLY):
                self._plan(
                    NextAction(
                        "ends with the message's last reported status",
                        workflow.now() + STATUS_WAIT,
                        f"sent on {request.channel.value}; waiting up to "
                        f"{format_duration(STATUS_WAIT)} for delivered, read or failed",
                    )
                )
                status = await self._final_status(status)
            if status != outcome.status:
                workflow.upsert_search_attributes([NUDGE_STATUS.value_set(status)])
                self._status = status
            self._plan(ended(status))
        return SendMessageResult(
            status=status,
            reason=outcome.reason,
            provider_message_id=outcome.provider_message_id,
            statuses=list(self._statuses),
            finished_at=finished_at,
        )

    def _hold(self, outcome: DeliveryOutcome) -> None:
        """Quiet hours or the frequency cap: say until when (in the zone it was judged in)."""
        assert outcome.not_before is not None
        self._status = held_status(outcome.not_before, outcome.timezone, outcome.reason)
        self._plan(
            NextAction(
                "sends the message",
                outcome.not_before,
                f"held by {outcome.reason or 'the contact policy'}",
                outcome.timezone,
            )
        )
        if workflow.patched(HELD_STATUS):
            workflow.upsert_search_attributes([NUDGE_STATUS.value_set(self._status)])
        if (
            not self._contact_known
            and outcome.contact_id is not None
            and workflow.patched(HELD_CONTACT)
        ):
            self._contact_known = True
            workflow.upsert_search_attributes([CONTACT_ID.value_set(str(outcome.contact_id))])

    def _plan(self, next_action: NextAction) -> None:
        """The ``next_action`` query and the Web UI's current details, in step (neither is a
        command: changing them never breaks replay)."""
        self._next = next_action
        workflow.set_current_details(next_action.sentence())

    async def _final_status(self, sent: str) -> str:
        """The furthest status reported within ``STATUS_WAIT``, waiting for a final one."""
        try:
            await workflow.wait_condition(
                lambda: any(s in DELIVERY_FINAL for s in self._statuses), timeout=STATUS_WAIT
            )
        except TimeoutError:
            pass  # no final word from the provider: the message stays "sent"
        return furthest([sent, *self._statuses])
