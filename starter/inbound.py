"""What every provider webhook does with a message or a status, once it is verified.

Kept out of the routes so Twilio and WhatsApp (and later Support Board) share one meaning of
STOP and START, one de-duplication, and one "the furthest status wins" rule.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from temporalio.client import Client

from domain import limits
from domain.addresses import normalize_address
from domain.delivery import DeliveryStatus
from domain.policy import Keyword, opt_keyword
from store.delivery import StatusResult
from store.inbound import OptChange
from store.repo import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inbound:
    """An inbound message, recorded: who sent it, whether it was STOP or a START that opted
    the contact back in, and whether the caller must route it to its conversation now."""

    address: str
    contact_id: int
    keyword: Keyword | None
    """``start`` only when the message lifted an opt-out: "yes" from a contact who is not
    opted out answers a question, it is no opt-in."""
    inbound_id: int = 0
    route: bool = False
    """True when this caller holds the message's routing lease (``store/inbound.py``)."""


def provider_ids(provider_message_id: str, reply_id: str | None) -> tuple[str, str | None]:
    """A provider's message id and reply id as Nudge keeps them: cut to their columns (a
    longer reply id names none of our buttons anyway). The conversation gets the very values
    the store keeps, so a message routed again later from the store is the same message."""
    return (
        limits.cut(provider_message_id, limits.PROVIDER_MESSAGE_ID),
        None if reply_id is None else limits.cut(reply_id, limits.REPLY_ID),
    )


async def handle_inbound(
    store: Store,
    channel: str,
    provider_message_id: str,
    address: str,
    *,
    text: str,
    received_at: datetime,
    kind: str = "text",
    reply_id: str | None = None,
    name: str | None = None,
    route_channel: str | None = None,
) -> Inbound | None:
    """Record the message once, acting on opt-out keywords in the same transaction. None for
    a provider's retry, unless it finds the message still unrouted (its first routing
    failed): the retry then routes it. ``route_channel`` names the conversation channel the
    message is for (None: no conversation takes it, e.g. SMS)."""
    address = normalize_address(channel, address)
    if len(address) > limits.ADDRESS:
        # No channel has addresses this long: nobody to answer, and nothing to keep.
        log.warning(
            "%s message %.40s ignored: its sender's address has %d characters (at most %d)",
            channel,
            provider_message_id,
            len(address),
            limits.ADDRESS,
        )
        return None
    provider_message_id, reply_id = provider_ids(provider_message_id, reply_id)
    kind = limits.cut(kind, limits.MESSAGE_KIND)
    name = None if name is None else limits.cut(name, limits.CONTACT_NAME)
    word = opt_keyword(text) if kind == "text" else None
    opt: OptChange | None = None
    if word is not None:
        opt = "out" if word == Keyword.stop else "in"
    result = await asyncio.to_thread(
        store.record_inbound,
        channel,
        provider_message_id,
        address,
        body=text,
        received_at=received_at,
        kind=kind,
        reply_id=reply_id,
        name=name,
        route_channel=route_channel,
        opt=opt,
    )
    if not result.new and not result.route:
        return None
    # A retried STOP is still a STOP (its conversation must end); a retried START already
    # did what it did on its first delivery.
    keyword = Keyword.stop if word == Keyword.stop else None
    if result.opted == "in":
        keyword = Keyword.start
    return Inbound(
        address=address,
        contact_id=result.contact_id,
        keyword=keyword,
        inbound_id=result.inbound_id,
        route=result.route,
    )


async def handle_status(
    store: Store,
    provider: str,
    provider_message_id: str,
    status: str,
    *,
    occurred_at: datetime,
    error_code: str | None = None,
) -> StatusResult:
    return await asyncio.to_thread(
        store.record_status,
        provider,
        limits.cut(provider_message_id, limits.PROVIDER_MESSAGE_ID),
        status,
        occurred_at=occurred_at,
        error_code=None if error_code is None else limits.cut(error_code, limits.ERROR_CODE),
    )


async def signal_status(
    temporal: Callable[[], Awaitable[Client]], result: StatusResult, status: str
) -> None:
    """Tell the workflow that sent the message; runs after the webhook has answered."""
    if not (result.advanced and result.workflow_id and result.idempotency_key):
        return
    try:
        client = await temporal()
        handle = client.get_workflow_handle(result.workflow_id)
        await handle.signal("delivery_status", DeliveryStatus(result.idempotency_key, status))
    except Exception as error:  # a finished workflow no longer listens: that is fine
        log.info("status %s for %s not signalled: %s", status, result.workflow_id, error)
