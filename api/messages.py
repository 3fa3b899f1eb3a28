"""Outbound messages: ``POST /v1/messages`` sends one through the send path; ``GET /v1/outbox``
lists every message Nudge has held, claimed, sent or refused, whichever workflow sent it
(``status=held``: the messages waiting out quiet hours or the frequency cap)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from temporalio.exceptions import WorkflowAlreadyStartedError

from dependencies import AdminToken, SettingsDep, StoreDep, TemporalDep, UserToken, checked_address
from domain import limits, whatsapp
from domain.channels import ChannelName, MessageClass, Template
from domain.delivery import DeliverRequest
from domain.status import OutboxStatus
from workflows.send_message import SendMessage, start_options, workflow_id_for

router = APIRouter(prefix="/v1", tags=["messages"])


KeyName = Annotated[str, StringConstraints(max_length=limits.KEY_NAME)]
Variable = Annotated[str, StringConstraints(max_length=limits.TEMPLATE_VARIABLE)]
PushData = Annotated[str, StringConstraints(max_length=limits.PUSH_DATA)]


class TemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelled field is named, not ignored

    name: str = Field(default="", max_length=limits.TEMPLATE_NAME)
    language: str = Field(default="en", max_length=limits.LOCALE)
    components: list[dict[str, Any]] = Field(
        default_factory=list, max_length=limits.MAX_TEMPLATE_COMPONENTS
    )
    content_sid: str = Field(default="", max_length=limits.TWILIO_SID)
    variables: dict[KeyName, Variable] = Field(
        default_factory=dict, max_length=limits.MAX_TEMPLATE_VARIABLES
    )


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelled field is named, not ignored

    channel: ChannelName
    to: str = Field(min_length=1, max_length=limits.ADDRESS)
    text: str = Field(default="", max_length=whatsapp.TEXT)
    subject: str = Field(default="", max_length=limits.SUBJECT)
    html: str = Field(default="", max_length=limits.HTML)
    template: TemplateIn | None = None
    interactive: dict[str, Any] | None = None
    data: dict[KeyName, PushData] = Field(
        default_factory=dict, max_length=limits.MAX_PUSH_DATA_KEYS
    )
    message_class: MessageClass = MessageClass.transactional
    key: str | None = Field(
        default=None,
        max_length=limits.MESSAGE_KEY,
        description="idempotency key; a repeat is refused",
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
    to = checked_address(settings, ["body", "to"], body.channel.value, body.to)
    key = body.key or uuid.uuid4().hex
    workflow_id = workflow_id_for(key)
    request = DeliverRequest(
        idempotency_key=workflow_id,
        workflow_id=workflow_id,
        channel=body.channel,
        to=to,
        text=body.text,
        subject=body.subject,
        html=body.html,
        template=Template(**body.template.model_dump()) if body.template else None,
        interactive=body.interactive,
        data=body.data,
        message_class=body.message_class,
    )
    try:
        handle = await client.start_workflow(
            SendMessage.run,
            request,
            task_queue=settings.temporal.task_queue,
            **start_options(request).options(),
        )
    except WorkflowAlreadyStartedError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, f"key: {key} is already being sent") from exc
    return MessageStarted(workflow_id=workflow_id, run_id=handle.result_run_id)


class OutboxOut(BaseModel):
    idempotency_key: str
    workflow_id: str
    channel: str
    recipient: str
    contact_id: int | None
    message_class: str
    body: str
    status: str
    provider_message_id: str | None
    error: str | None
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    status_at: datetime | None
    not_before: datetime | None = Field(
        default=None, description="held: when quiet hours or the frequency cap let it go"
    )
    held_reason: str | None = Field(
        default=None, description="why it was held: quiet hours or frequency cap"
    )


@router.get("/outbox", response_model=list[OutboxOut])
async def list_outbox(
    _: UserToken,
    store: StoreDep,
    contact: Annotated[int | None, Query(ge=1, le=limits.RECORD_ID)] = None,
    channel: ChannelName | None = None,
    status_: Annotated[OutboxStatus | None, Query(alias="status")] = None,
    class_: Annotated[MessageClass | None, Query(alias="class")] = None,
    workflow_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=limits.MAX_OFFSET)] = 0,
) -> list[Any]:
    rows = await asyncio.to_thread(
        store.list_outbox,
        contact_id=contact,
        channel=channel.value if channel else None,
        status=status_.value if status_ else None,
        message_class=class_.value if class_ else None,
        workflow_id=workflow_id,
        limit=limit,
        offset=offset,
    )
    return [row.__dict__ for row in rows]
