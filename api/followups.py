"""``/v1/followups``: start a helpdesk follow-up, list the running and the finished, cancel one;
``/v1/helpdesk/poll``: look for tagged conversations now instead of at the next interval."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field, StringConstraints
from temporalio.client import ScheduleHandle, WorkflowExecutionStatus
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.next_actions import NextActionOut, next_actions
from dependencies import AdminToken, SettingsDep, StoreDep, TemporalDep, UserToken
from domain import limits
from domain.addresses import REAMAZE_SLUG
from domain.durations import Duration
from domain.status import FollowUpStatus
from settings import Settings
from workflows.helpdesk_followup import FollowUpInput, HelpdeskFollowUp, start_options
from workflows.helpdesk_poll import schedule_id_for

router = APIRouter(tags=["follow-ups"])

Slug = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=limits.CONVERSATION_SLUG,
        pattern=REAMAZE_SLUG,
    ),
]
"""Goes into Re:amaze's URL path: its own alphabet only, so no ``..`` or ``/`` can climb out."""


class StartFollowUp(BaseModel):
    conversation: Slug = Field(description="The Re:amaze conversation slug")
    waits: list[Duration] | None = Field(
        default=None,
        min_length=1,
        max_length=limits.MAX_FOLLOWUP_STEPS,
        description=(
            f"One wait per step, 1 to {limits.MAX_FOLLOWUP_STEPS}, like 30m, 24h, 3d; "
            "left out: NUDGE_FOLLOWUP__WAITS"
        ),
    )


class Started(BaseModel):
    workflow_id: str
    run_id: str | None
    waits: list[Duration] = Field(description="The waits this sequence runs with, e.g. 12h, 1d")


class StepOut(BaseModel):
    step: int
    due_at: datetime | None = None
    fired_at: datetime | None = None
    sent_at: datetime | None = None
    send_status: str | None = None
    fallback_used: bool = False
    fallback_reason: str | None = None


class FollowUpOut(BaseModel):
    id: int
    workflow_id: str
    run_id: str
    helpdesk: str
    conversation: str
    status: str
    steps: list[StepOut]
    fallback_used: bool
    tag_removed: bool
    failure_reason: str | None
    started_at: datetime
    finished_at: datetime


class RunningFollowUp(BaseModel):
    workflow_id: str
    run_id: str | None
    status: str | None
    started_at: datetime | None
    next_action: NextActionOut | None = Field(
        default=None, description="what it does next, when and why; null if it did not answer"
    )


ENDED = {
    WorkflowExecutionStatus.COMPLETED: "completed",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "continued as new",
    WorkflowExecutionStatus.TIMED_OUT: "timed out",
}
"""Temporal's ending of a run in our words (its enum spells ``CANCELED``)."""


class CancelOut(BaseModel):
    workflow_id: str
    cancel_requested: bool


@router.post("/v1/followups", response_model=Started, status_code=status.HTTP_201_CREATED)
async def start_followup(
    body: StartFollowUp, _: AdminToken, client: TemporalDep, settings: SettingsDep
) -> Started:
    _require_reamaze(settings)
    waits = settings.followup.waits if body.waits is None else body.waits
    start = start_options(body.conversation)
    try:
        handle = await client.start_workflow(
            HelpdeskFollowUp.run,
            FollowUpInput(
                conversation=body.conversation,
                waits=list(waits),
                trigger_tag=settings.reamaze.trigger_tag,
                remove_tag_on_finish=settings.reamaze.remove_tag_on_finish,
            ),
            task_queue=settings.temporal.task_queue,
            **start.options(),
        )
    except WorkflowAlreadyStartedError as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"conversation: a follow-up for {body.conversation} is already running ({start.id})",
        ) from exc
    return Started(workflow_id=start.id, run_id=handle.result_run_id, waits=list(waits))


@router.get("/v1/followups", response_model=list[FollowUpOut])
async def list_followups(
    _: UserToken,
    store: StoreDep,
    status_: Annotated[list[FollowUpStatus] | None, Query(alias="status")] = None,
    conversation: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=limits.MAX_OFFSET)] = 0,
) -> list[Any]:
    """Finished sequences, newest first; `status` may be repeated."""
    records = await asyncio.to_thread(
        store.list_followups,
        status=[s.value for s in status_] if status_ else None,
        conversation=conversation,
        limit=limit,
        offset=offset,
    )
    return [record.__dict__ for record in records]


@router.get("/v1/followups/running", response_model=list[RunningFollowUp])
async def list_running(
    _: UserToken, client: TemporalDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[RunningFollowUp]:
    """Sequences still waiting or sending, from Temporal's visibility store, each with what it
    will do next (its ``next_action`` query, asked of all of them at once)."""
    found: list[RunningFollowUp] = []
    query = "NudgeKind = 'helpdesk_followup' AND ExecutionStatus = 'Running'"
    async for execution in client.list_workflows(query, limit=limit):
        attrs = execution.typed_search_attributes
        status_value = next((p.value for p in attrs if p.key.name == "NudgeStatus"), None)
        found.append(
            RunningFollowUp(
                workflow_id=execution.id,
                run_id=execution.run_id,
                status=str(status_value) if status_value is not None else None,
                started_at=execution.start_time,
            )
        )
    actions = await next_actions(client, [(run.workflow_id, run.run_id) for run in found])
    for run, action in zip(found, actions, strict=True):
        run.next_action = action
    return found


@router.post(
    "/v1/followups/{workflow_id}/cancel",
    response_model=CancelOut,
    status_code=status.HTTP_202_ACCEPTED,
)
async def cancel_followup(workflow_id: str, _: AdminToken, client: TemporalDep) -> CancelOut:
    """Ends the sequence as `cancelled`; its clean-up removes the tag and records the outcome."""
    if not workflow_id.startswith("followup:"):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "workflow_id: a follow-up id looks like followup:reamaze:<conversation slug>",
        )
    handle = client.get_workflow_handle(workflow_id)
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"workflow_id: no follow-up {workflow_id}"
            ) from exc
        raise
    if description.status != WorkflowExecutionStatus.RUNNING:
        ended = ENDED.get(description.status, "unknown") if description.status else "unknown"
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"workflow_id: {workflow_id} is not running ({ended})"
        )
    await handle.cancel()
    return CancelOut(workflow_id=workflow_id, cancel_requested=True)


@router.post("/v1/helpdesk/poll", status_code=status.HTTP_202_ACCEPTED)
async def poll_now(_: AdminToken, client: TemporalDep, settings: SettingsDep) -> dict[str, str]:
    """Trigger the poll schedule now instead of at its next interval."""
    _require_reamaze(settings)
    schedule_id = schedule_id_for(task_queue=settings.temporal.task_queue)
    handle: ScheduleHandle = client.get_schedule_handle(schedule_id)
    try:
        await handle.trigger()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"the poll schedule {schedule_id} does not exist yet: the worker creates it "
                "when it starts with Re:amaze configured (`nudge worker`)",
            ) from exc
        raise
    return {"schedule_id": schedule_id, "triggered": "true"}


def _require_reamaze(settings: Settings) -> None:
    """Refuse now what could only fail later: without Re:amaze a follow-up cannot read its
    conversation, and would end ``failed`` after its first wait."""
    if missing := settings.reamaze.missing:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"Re:amaze is not configured: set {', '.join(missing)} (for the worker and the "
            "HTTP service); nothing was started",
        )
