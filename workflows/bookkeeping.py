"""Bookkeeping: the store reads and writes a workflow cannot go on without (a session's
answers, a follow-up's outcome, an event for automation rules).

They are retried through a few minutes of a database outage, then given up: the run ends
FAILED with a sentence saying what could not be recorded (in its failure and its current
details in the Web UI), not retrying forever where nobody looks.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, RetryState

T = TypeVar("T")

ATTEMPTS = 10
BOOKKEEPING = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=ATTEMPTS,
)
"""1 s, 2 s, 4 s ... then a minute apart: about four minutes of attempts in all."""
BOUNDED_PATCH = "bounded-bookkeeping-retries"
"""Patch: a bookkeeping failure ends the run with a stated reason (``BookkeepingFailed``);
runs begun earlier retried forever, and ended with the bare activity error if one gave up."""
FAILED = "BookkeepingFailed"


async def recorded(what: str, call: Awaitable[T]) -> T:
    """``call``'s result; when it has failed for good, the run ends FAILED saying it
    could not ``what`` (e.g. "record the session's answers")."""
    try:
        return await call
    except ActivityError as error:
        if isinstance(error.cause, CancelledError) or not workflow.patched(BOUNDED_PATCH):
            raise
        exhausted = error.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED
        after = f" after {ATTEMPTS} attempts" if exhausted else ""
        reason = f"could not {what} in the database{after}: {_cause(error)}"
        workflow.set_current_details(reason)
        workflow.logger.error(reason)
        raise ApplicationError(reason, type=FAILED, non_retryable=True) from error


def _cause(error: ActivityError) -> str:
    cause = error.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause or error)
