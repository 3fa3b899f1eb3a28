"""Twilio webhooks: inbound SMS/WhatsApp messages and delivery statuses.

Twilio signs each request (``X-Twilio-Signature``) over the exact public URL it called and
the POST parameters; ``NUDGE_PUBLIC_URL`` must therefore be the URL Twilio sees.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastapi import APIRouter, BackgroundTasks, HTTPException, Request, Response, status

from dependencies import SettingsDep, StoreDep
from domain.addresses import normalize_address
from domain.channels import ChannelName
from domain.policy import OptOutSource
from integrations.twilio_channel import verify_signature
from starter.inbound import handle_inbound, handle_status, provider_ids, signal_status
from starter.menu_routing import MenuRouter, RoutedMessage
from workflows.menu_payloads import MenuMessage

router = APIRouter(prefix="/webhooks/twilio", tags=["webhooks"])

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
STATUS_MAP = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "undelivered": "failed",
    "failed": "failed",
}
"""Twilio's intermediate statuses (queued, accepted, sending) add nothing to ``sent``."""
OPTED_OUT = "21610"


async def _verified_form(request: Request, settings: SettingsDep) -> dict[str, str]:
    auth_token = settings.twilio.auth_token.get_secret_value()
    if not auth_token:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "not configured: set NUDGE_TWILIO__AUTH_TOKEN (the auth token that signs "
            "X-Twilio-Signature)",
        )
    form = {key: str(value) for key, value in (await request.form()).items()}
    url = settings.public_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    if not verify_signature(auth_token, url, form, request.headers.get("X-Twilio-Signature")):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "X-Twilio-Signature does not match")
    return form


def _address(value: str) -> tuple[str, str]:
    if value.startswith("whatsapp:"):
        return "whatsapp", value.removeprefix("whatsapp:")
    return "sms", value


@router.post("/inbound", response_class=Response)
async def inbound(request: Request, settings: SettingsDep, store: StoreDep) -> Response:
    form = await _verified_form(request, settings)
    sid, sender = form.get("MessageSid", ""), form.get("From", "")
    if not sid or not sender:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "MessageSid and From are required"
        )
    channel, address = _address(sender)
    kind = "button" if form.get("ButtonPayload") else "text"
    text = form.get("Body", "") if kind == "text" else form.get("ButtonText", "")
    sid, reply_id = provider_ids(sid, form.get("ButtonPayload") or None)
    received_at = datetime.now(UTC)
    router: MenuRouter = request.app.state.menu_router
    async with router.in_order(ChannelName.whatsapp_twilio, normalize_address(channel, address)):
        found = await handle_inbound(
            store,
            channel,
            sid,
            address,
            text=text,
            received_at=received_at,
            kind=kind,
            reply_id=reply_id,
            name=form.get("ProfileName") or None,
            route_channel=ChannelName.whatsapp_twilio.value if channel == "whatsapp" else None,
        )
        if found is not None and found.route:
            router.submit(
                RoutedMessage(
                    channel=ChannelName.whatsapp_twilio,
                    address=found.address,
                    contact_id=found.contact_id,
                    message=MenuMessage(sid, text, reply_id, received_at),
                    keyword=found.keyword,
                    inbound_id=found.inbound_id,
                )
            )
    return Response(EMPTY_TWIML, media_type="text/xml")


@router.post("/status", response_class=Response)
async def delivery_status(
    request: Request, background: BackgroundTasks, settings: SettingsDep, store: StoreDep
) -> Response:
    form = await _verified_form(request, settings)
    sid, reported = form.get("MessageSid", ""), form.get("MessageStatus", "")
    if not sid or not reported:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "MessageSid and MessageStatus are required"
        )
    error_code = form.get("ErrorCode") or None
    if error_code == OPTED_OUT and form.get("To"):
        channel, address = _address(form["To"])
        await asyncio.to_thread(
            store.suppress, channel, address, scope="all", reason="Twilio 21610: recipient opted out",
            source=OptOutSource.provider_block,
        )  # fmt: skip
    mapped = STATUS_MAP.get(reported)
    if mapped is not None:
        result = await handle_status(
            store, "twilio", sid, mapped, occurred_at=datetime.now(UTC), error_code=error_code
        )
        background.add_task(signal_status, request.app.state.temporal.get, result, mapped)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
