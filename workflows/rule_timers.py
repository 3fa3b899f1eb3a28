"""What the two long-lived timers of automation rules share (``ContactWatch``,
``BookingReminder``): how they report, how they read the store (waiting out an outage,
since each is the only clock of its contact or booking), and how a due rule is run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import (
    ApplicationError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)

with workflow.unsafe.imports_passed_through():
    from domain.automation_runs import RunRequest
    from domain.next_action import NextAction, ended
    from workflows import automation_run
    from workflows.automation_run import AutomationRun
    from workflows.bookkeeping import FAILED as BOOKKEEPING_FAILED
    from workflows.bookkeeping import recorded
    from workflows.search_attributes import NUDGE_STATUS

T = TypeVar("T")

DATABASE_PAUSE = timedelta(minutes=10)
"""How long a timer waits before reading again when the database did not answer."""


class Progress:
    """A timer's ``NudgeStatus``, its ``next_action`` and its current details, in step."""

    def __init__(self, status: str, next_action: NextAction) -> None:
        self.status = status
        self.next = next_action

    def set(self, status: str, next_action: NextAction) -> None:
        if status != self.status:
            self.status = status
            workflow.upsert_search_attributes([NUDGE_STATUS.value_set(status)])
        self.next = next_action
        workflow.set_current_details(next_action.sentence())

    def end(self, status: str, why: str) -> str:
        self.status = status
        workflow.upsert_search_attributes([NUDGE_STATUS.value_set(status)])
        self.next = ended(status)
        workflow.set_current_details(f"ended: {why}")
        return status


async def read_patiently(
    what: str, read: Callable[[], Awaitable[T]], progress: Progress, again: str
) -> T:
    """``read()``'s result; when the database has not answered through the bookkeeping
    retries, wait ``DATABASE_PAUSE`` (saying so) and read again, rather than end."""
    while True:
        try:
            return await recorded(what, read())
        except ApplicationError as error:
            if error.type != BOOKKEEPING_FAILED:
                raise
            progress.set(
                "database_unreachable",
                NextAction(again, workflow.now() + DATABASE_PAUSE, error.message),
            )
            await workflow.sleep(DATABASE_PAUSE)


async def run_rule(request: RunRequest) -> None:
    """The due rule's run, as a child that outlives this workflow's run (continue-as-new,
    cancel); one already started (fired before a continue-as-new) or one that failed (it is
    red in the Web UI on its own) does not stop the timer."""
    start = automation_run.start_options(request)
    try:
        await workflow.execute_child_workflow(
            AutomationRun.run,
            request,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            **start.options(),
        )
    except WorkflowAlreadyStartedError:
        pass
    except ChildWorkflowError as error:
        workflow.logger.warning("the run of rule %s failed: %s", request.rule_id, error)
