"""Sending from a workflow: ask the send path, and when it says "not before T" (quiet hours,
frequency cap) sleep durably until T and ask again. Every workflow that messages a
customer sends through ``send``."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.delivery import DeliveryActivities
    from domain.delivery import DeliverRequest, DeliveryOutcome
    from domain.status import SendStatus

PROVIDER_API = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    non_retryable_error_types=["Rejected", "NotFound"],
)
PROVIDER_PATIENCE = timedelta(hours=6)
MIN_WAIT = timedelta(seconds=1)
LOCAL_RETRY_THRESHOLD = timedelta(seconds=30)
"""A local send retried after longer waits than this waits on a durable timer instead."""


class NoLongerWanted(Exception):
    """A held message whose sender, asked after the hold, no longer wants it sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def send(
    request: DeliverRequest,
    *,
    local: bool = False,
    on_hold: Callable[[DeliveryOutcome], None] | None = None,
    still_wanted: Callable[[], Awaitable[str | None]] | None = None,
) -> DeliveryOutcome:
    """``local``: run the send path as a local activity, in the worker that runs the workflow,
    without a round trip through the server (for replies a customer is waiting for).
    ``on_hold`` is told of each hold before its sleep, so the workflow can say until when;
    ``still_wanted`` is asked after each hold (None: send; a reason: raise ``NoLongerWanted``),
    for a message whose reason to be sent may end while it is held."""
    while True:
        request = dataclasses.replace(request, as_of=workflow.now())
        if local:
            outcome = await workflow.execute_local_activity_method(
                DeliveryActivities.deliver,
                request,
                start_to_close_timeout=timedelta(minutes=2),
                schedule_to_close_timeout=PROVIDER_PATIENCE,
                retry_policy=PROVIDER_API,
                local_retry_threshold=LOCAL_RETRY_THRESHOLD,
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        else:
            outcome = await workflow.execute_activity_method(
                DeliveryActivities.deliver,
                request,
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=timedelta(seconds=10),
                schedule_to_close_timeout=PROVIDER_PATIENCE,
                retry_policy=PROVIDER_API,
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        if outcome.status != SendStatus.wait or outcome.not_before is None:
            return outcome
        if on_hold is not None:
            on_hold(outcome)
        await workflow.sleep(max(outcome.not_before - workflow.now(), MIN_WAIT))
        if still_wanted is not None and (reason := await still_wanted()) is not None:
            raise NoLongerWanted(reason)
