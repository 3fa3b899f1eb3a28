"""``POST /v1/dev/inbound``: a customer's WhatsApp message, simulated, for trying menus locally.

The message goes where a signed Cloud API webhook's goes (``starter.whatsapp.receive``:
recorded, then routed by the ``MenuRouter``), and the replies take the one send path, so
in sandbox mode they land in the outbox as ``sandboxed``, menus rendered as text.
``nudge simulate whatsapp`` posts here and prints those replies. Only in sandbox mode: with
WhatsApp configured, a simulated customer would get real messages sent to their number.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dependencies import AdminToken, SettingsDep, StoreDep, checked_address
from domain import limits, whatsapp
from integrations.whatsapp_cloud import InboundMessage
from starter.menu_routing import MenuRouter
from starter.whatsapp import receive

router = APIRouter(prefix="/v1/dev", tags=["dev"])

CONFIGURED = (
    "the WhatsApp channel is configured (NUDGE_WHATSAPP__TOKEN): simulated messages are only "
    "accepted in sandbox mode"
)


class SimulatedMessage(BaseModel):
    """A text (``text``) or a tap on a button or list row (``reply_id``, ``reply_title``)."""

    model_config = ConfigDict(populate_by_name=True)

    channel: Literal["whatsapp"] = "whatsapp"
    from_: str = Field(
        alias="from",
        min_length=1,
        max_length=limits.ADDRESS,
        description="the customer's number, e.g. +15551234567 (without a country code: read "
        "in NUDGE_POLICY__DEFAULT_REGION)",
    )
    text: str = Field(default="", max_length=whatsapp.TEXT)
    reply_id: str | None = Field(default=None, min_length=1, max_length=limits.REPLY_ID)
    reply_title: str = Field(default="", max_length=whatsapp.ROW_TITLE)

    @model_validator(mode="after")
    def _has_content(self) -> SimulatedMessage:
        if not (self.text.strip() or self.reply_id):
            raise ValueError("text: a simulated message needs text or a reply_id (a tap)")
        return self


class SimulatedInbound(BaseModel):
    message_id: str
    """The synthetic provider message id (``sim.<uuid>``), as a ``wamid`` would be kept."""
    inbound_id: int
    contact_id: int
    """Filter ``GET /v1/outbox?contact=`` by it to read the replies."""
    received_at: datetime
    """The service's clock when the message was taken: replies are created after it."""


@router.post("/inbound", status_code=status.HTTP_202_ACCEPTED)
async def simulate_inbound(
    body: SimulatedMessage,
    request: Request,
    _: AdminToken,
    settings: SettingsDep,
    store: StoreDep,
) -> SimulatedInbound:
    if settings.whatsapp.configured:
        raise HTTPException(status.HTTP_409_CONFLICT, CONFIGURED)
    # Typed by a person, so checked as the API checks any address it is given.
    sender = checked_address(settings, ["body", "from"], "whatsapp", body.from_)
    received_at = datetime.now(UTC)
    message = InboundMessage(
        id=f"sim.{uuid.uuid4().hex}",
        from_=sender,
        timestamp=received_at,
        type="interactive" if body.reply_id else "text",
        text=body.reply_title or body.text,
        reply_id=body.reply_id,
        phone_number_id=settings.whatsapp.phone_number_id or "sandbox",
    )
    menu_router: MenuRouter = request.app.state.menu_router
    inbound = await receive(store, menu_router, message)
    if inbound is None:  # a fresh id is never a retry; only an address no channel has
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "from: not a WhatsApp sender")
    return SimulatedInbound(
        message_id=message.id,
        inbound_id=inbound.inbound_id,
        contact_id=inbound.contact_id,
        received_at=received_at,
    )
