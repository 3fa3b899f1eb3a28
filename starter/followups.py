"""Launch follow-ups without waiting for the next poll: by hand, or from a script or webhook."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field, StringConstraints
from temporalio.client import ScheduleHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import AdminToken, SettingsDep, TemporalDep
from settings import Duration
from workflows.helpdesk_followup import KIND, FollowUpInput, HelpdeskFollowUp, workflow_id_for
from workflows.helpdesk_poll import schedule_id_for
from workflows.search_attributes import at_start

router = APIRouter(prefix="/v1", tags=["starter"])

Slug = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[\w.-]+$"),
]


class StartFollowUp(BaseModel):
    conversation: Slug = Field(description="The Re:amaze conversation slug")
    waits: list[Duration] | None = Field(
        default=None, description="Per-step waits like 30m, 24h; defaults to NUDGE_FOLLOWUP__WAITS"
    )


class Started(BaseModel):
    workflow_id: str
    run_id: str | None


@router.post("/followups", response_model=Started, status_code=status.HTTP_201_CREATED)
async def start_followup(
    body: StartFollowUp, _: AdminToken, client: TemporalDep, settings: SettingsDep
) -> Started:
    waits = body.waits or settings.followup.waits
    if not waits:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "waits: at least one wait is needed"
        )
    workflow_id = workflow_id_for("reamaze", body.conversation)
    try:
        handle = await client.start_workflow(
            HelpdeskFollowUp.run,
            FollowUpInput(
                conversation=body.conversation,
                waits=list(waits),
                trigger_tag=settings.reamaze.trigger_tag,
                remove_tag_on_finish=settings.reamaze.remove_tag_on_finish,
            ),
            id=workflow_id,
            task_queue=settings.temporal.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            search_attributes=at_start(KIND, "waiting_step_1", "reamaze"),
            static_summary=f"Follow-up on reamaze conversation {body.conversation}",
        )
    except WorkflowAlreadyStartedError as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"conversation: a follow-up for {body.conversation} is already running ({workflow_id})",
        ) from exc
    return Started(workflow_id=workflow_id, run_id=handle.result_run_id)


@router.post("/helpdesk/poll", status_code=status.HTTP_202_ACCEPTED)
async def poll_now(_: AdminToken, client: TemporalDep, settings: SettingsDep) -> dict[str, str]:
    """Trigger the poll schedule now instead of at its next interval."""
    schedule_id = schedule_id_for("reamaze", settings.temporal.task_queue)
    handle: ScheduleHandle = client.get_schedule_handle(schedule_id)
    try:
        await handle.trigger()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                "the poll schedule does not exist: is Re:amaze configured?",
            ) from exc
        raise
    return {"schedule_id": schedule_id, "triggered": "true"}
