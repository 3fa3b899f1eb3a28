"""WhatsApp Cloud API webhooks: Meta's verification handshake, then signed deliveries of
messages and statuses (a delivery may batch several entries; all of it is handled)."""

from __future__ import annotations

import json

from fastapi import APIRouter, BackgroundTasks, HTTPException, Request, Response, status
from fastapi.responses import PlainTextResponse

from dependencies import SettingsDep, StoreDep
from domain.addresses import normalize_address
from domain.channels import ChannelName
from integrations.whatsapp_cloud import (
    InboundMessage,
    parse_webhook,
    verify_signature,
    verify_subscription,
)
from starter.inbound import Inbound, handle_inbound, handle_status, provider_ids, signal_status
from starter.menu_routing import MenuRouter, RoutedMessage
from store.repo import Store
from workflows.menu_payloads import MenuMessage

router = APIRouter(prefix="/webhooks/whatsapp", tags=["webhooks"])

STATUS_MAP = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed"}


@router.get("", response_class=PlainTextResponse)
async def verify(request: Request, settings: SettingsDep) -> PlainTextResponse:
    """Meta's subscription check: answer the bare ``hub.challenge``."""
    verify_token = settings.whatsapp.verify_token.get_secret_value()
    if not verify_token:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "not configured: set NUDGE_WHATSAPP__VERIFY_TOKEN (the verify token you give Meta)",
        )
    challenge = verify_subscription(dict(request.query_params), verify_token)
    if challenge is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "hub.verify_token does not match")
    return PlainTextResponse(challenge)


@router.post("", response_class=Response)
async def deliveries(
    request: Request, background: BackgroundTasks, settings: SettingsDep, store: StoreDep
) -> Response:
    raw = await request.body()
    app_secret = settings.whatsapp.app_secret.get_secret_value()
    if not app_secret:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "not configured: set NUDGE_WHATSAPP__APP_SECRET (the app secret that signs "
            "X-Hub-Signature-256)",
        )
    if not verify_signature(app_secret, raw, request.headers.get("X-Hub-Signature-256")):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "X-Hub-Signature-256 does not match")
    try:
        batch = parse_webhook(json.loads(raw))
    except (ValueError, TypeError) as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"body: {error}") from error
    router: MenuRouter = request.app.state.menu_router
    for message in batch.messages:
        await receive(store, router, message)
    for update in batch.statuses:
        mapped = STATUS_MAP.get(update.status)
        if mapped is None:
            continue
        result = await handle_status(
            store,
            "whatsapp",
            update.id,
            mapped,
            occurred_at=update.timestamp,
            error_code=str(update.error_code) if update.error_code else None,
        )
        background.add_task(signal_status, request.app.state.temporal.get, result, mapped)
    return Response(status_code=status.HTTP_200_OK)


async def receive(store: Store, router: MenuRouter, message: InboundMessage) -> Inbound | None:
    """Record one verified message and hand it to its conversation; returns at once (routing
    runs after). None for a retry already routed. ``nudge simulate whatsapp`` comes in here too
    (``starter/simulate.py``), so a simulated message takes the very path of a real one."""
    message_id, reply_id = provider_ids(message.id, message.reply_id)
    async with router.in_order(ChannelName.whatsapp, normalize_address("whatsapp", message.from_)):
        inbound = await handle_inbound(
            store,
            "whatsapp",
            message_id,
            message.from_,
            text=message.text,
            received_at=message.timestamp,
            kind=message.type,
            reply_id=reply_id,
            name=message.profile_name,
            route_channel=ChannelName.whatsapp.value,
        )
        if inbound is None or not inbound.route:
            return inbound
        router.submit(
            RoutedMessage(
                channel=ChannelName.whatsapp,
                address=inbound.address,
                contact_id=inbound.contact_id,
                message=MenuMessage(message_id, message.text, reply_id, message.timestamp),
                keyword=inbound.keyword,
                inbound_id=inbound.inbound_id,
            )
        )
        return inbound
