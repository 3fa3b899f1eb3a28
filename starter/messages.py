"""``POST /v1/messages``: send one message to one contact through the send path."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field, model_validator
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.delivery import DeliverRequest
from api.deps import AdminToken, SettingsDep, TemporalDep
from integrations.channels import ChannelName, MessageClass, Template
from workflows.search_attributes import at_start
from workflows.send_message import KIND, SendMessage

router = APIRouter(prefix="/v1", tags=["starter"])


class TemplateIn(BaseModel):
    name: str = ""
    language: str = "en"
    components: list[dict[str, Any]] = Field(default_factory=list)
    content_sid: str = ""
    variables: dict[str, str] = Field(default_factory=dict)


class MessageIn(BaseModel):
    channel: ChannelName
    to: str = Field(min_length=1, max_length=512)
    text: str = Field(default="", max_length=4096)
    subject: str = Field(default="", max_length=255)
    html: str = ""
    template: TemplateIn | None = None
    interactive: dict[str, Any] | None = None
    data: dict[str, str] = Field(default_factory=dict)
    message_class: MessageClass = MessageClass.transactional
    key: str | None = Field(
        default=None, max_length=120, description="idempotency key; a repeat is refused"
    )

    @model_validator(mode="after")
    def _has_content(self) -> MessageIn:
        if not (self.text or self.template or self.interactive or self.data):
            raise ValueError(
                "text: a message needs text, a template, an interactive object or data"
            )
        if self.channel == ChannelName.email and not self.subject:
            raise ValueError("subject: an e-mail needs a subject")
        return self


class MessageStarted(BaseModel):
    workflow_id: str
    run_id: str | None


@router.post("/messages", response_model=MessageStarted, status_code=status.HTTP_202_ACCEPTED)
async def send_message(
    body: MessageIn, _: AdminToken, client: TemporalDep, settings: SettingsDep
) -> MessageStarted:
    key = body.key or uuid.uuid4().hex
    workflow_id = f"message:{key}"
    request = DeliverRequest(
        idempotency_key=workflow_id,
        workflow_id=workflow_id,
        channel=body.channel,
        to=body.to,
        text=body.text,
        subject=body.subject,
        html=body.html,
        template=Template(**body.template.model_dump()) if body.template else None,
        interactive=body.interactive,
        data=body.data,
        message_class=body.message_class,
    )
    summary = f"{body.message_class.value} {body.channel.value} message to {body.to}"
    try:
        handle = await client.start_workflow(
            SendMessage.run,
            request,
            id=workflow_id,
            task_queue=settings.temporal.task_queue,
            search_attributes=at_start(KIND, "sending", body.channel.value),
            static_summary=summary[:200],
        )
    except WorkflowAlreadyStartedError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, f"key: {key} is already being sent") from exc
    return MessageStarted(workflow_id=workflow_id, run_id=handle.result_run_id)
