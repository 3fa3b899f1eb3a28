"""Running menu conversations: where a customer is, and giving a handed-off one back.

A conversation that reached a ``handoff: true`` end step stays quiet (a person is answering)
until an agent releases it here, or until its inactivity expiry. Ids are the workflow ids,
``menu:{channel}:{contact id}``, as the Temporal Web UI shows them (conversations begun before
ids named the contact: ``menu:{channel}:{phone}``).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException, status
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from dependencies import AdminToken, TemporalDep
from workflows.menu_conversation import MenuConversation
from workflows.menu_payloads import MenuView

router = APIRouter(prefix="/v1/menu-conversations", tags=["menus"])


@router.get("/{workflow_id}")
async def get_conversation(workflow_id: str, _: AdminToken, client: TemporalDep) -> Any:
    """The menu, step, saved answers and hand-off state of a running conversation."""
    return asdict(await _view(client.get_workflow_handle(workflow_id), workflow_id))


@router.post("/{workflow_id}/release", status_code=status.HTTP_202_ACCEPTED)
async def release(workflow_id: str, _: AdminToken, client: TemporalDep) -> dict[str, str]:
    """An agent is done: the handed-off conversation ends (as ``handed_off``)."""
    handle = client.get_workflow_handle(workflow_id)
    view = await _view(handle, workflow_id)
    if not view.handed_off:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"workflow_id: {workflow_id} is at step {view.step!r}, not handed off",
        )
    await handle.signal(MenuConversation.release)
    return {"workflow_id": workflow_id, "status": "release_requested"}


async def _view(handle: WorkflowHandle[Any, Any], workflow_id: str) -> MenuView:
    if not workflow_id.startswith("menu:"):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "workflow_id: a menu conversation id looks like menu:whatsapp:42",
        )
    try:
        description = await handle.describe()
        view: MenuView | None = None
        if description.status == WorkflowExecutionStatus.RUNNING:
            view = await handle.query(MenuConversation.view)
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"workflow_id: no conversation {workflow_id}"
            ) from error
        raise
    if view is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"workflow_id: {workflow_id} is no longer running"
        )
    return view
