"""SendMessage: one message to one contact through the send path (policy, outbox, channel).

What an operator's "send this now" becomes, and the simplest user of ``workflows.delivery``:
it may wait out quiet hours or the frequency cap, and it records each delivery status the
provider reports back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.delivery import DeliverRequest
    from workflows.delivery import send
    from workflows.search_attributes import CHANNEL, NUDGE_KIND, NUDGE_STATUS

KIND = "send_message"


@dataclass
class DeliveryStatus:
    idempotency_key: str
    status: str


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

    @workflow.signal
    def delivery_status(self, update: DeliveryStatus) -> None:
        self._statuses.append(update.status)

    @workflow.query
    def statuses(self) -> list[str]:
        return list(self._statuses)

    @workflow.run
    async def run(self, request: DeliverRequest) -> SendMessageResult:
        workflow.upsert_search_attributes(
            [NUDGE_KIND.value_set(KIND), CHANNEL.value_set(request.channel.value)]
        )
        outcome = await send(request)
        workflow.upsert_search_attributes([NUDGE_STATUS.value_set(outcome.status)])
        return SendMessageResult(
            status=outcome.status,
            reason=outcome.reason,
            provider_message_id=outcome.provider_message_id,
            statuses=list(self._statuses),
            finished_at=workflow.now(),
        )
