"""Follow-up outcomes and cancellation for operators."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from api.deps import AdminToken, StoreDep, TemporalDep, UserToken

router = APIRouter(prefix="/v1/followups", tags=["follow-ups"])

FINAL_STATUSES = (
    "completed",
    "purchase_detected",
    "tag_removed",
    "conversation_gone",
    "cancelled",
    "failed",
)
FinalStatus = Literal[
    "completed", "purchase_detected", "tag_removed", "conversation_gone", "cancelled", "failed"
]


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


class CancelOut(BaseModel):
    workflow_id: str
    cancel_requested: bool


@router.get("", response_model=list[FollowUpOut])
async def list_followups(
    _: UserToken,
    store: StoreDep,
    status_: Annotated[list[FinalStatus] | None, Query(alias="status")] = None,
    conversation: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[Any]:
    """Finished sequences, newest first; `status` may be repeated."""
    records = await asyncio.to_thread(
        store.list_followups,
        status=list(status_) if status_ else None,
        conversation=conversation,
        limit=limit,
        offset=offset,
    )
    return [record.__dict__ for record in records]


@router.get("/running", response_model=list[RunningFollowUp])
async def list_running(
    _: UserToken, client: TemporalDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[RunningFollowUp]:
    """Sequences still waiting or sending, from Temporal's visibility store."""
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
    return found


@router.post(
    "/{workflow_id}/cancel", response_model=CancelOut, status_code=status.HTTP_202_ACCEPTED
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
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"workflow_id: {workflow_id} is not running ({description.status.name.lower() if description.status else 'unknown'})",
        )
    await handle.cancel()
    return CancelOut(workflow_id=workflow_id, cancel_requested=True)
