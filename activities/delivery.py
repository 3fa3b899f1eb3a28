"""The one send path: policy -> outbox -> channel.

``deliver`` either sends (or sandboxes) the message exactly once, refuses it for a stated
reason (suppressed, outside the WhatsApp window, rejected), or answers "not before T" - the
workflow then sleeps durably until T and asks again (``workflows/delivery.py``).
"""

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from temporalio import activity

from activities.failures import as_application_error
from activities.heartbeat import shielded_with_heartbeat
from activities.policy import (
    Decision,
    Verdict,
    address_channel,
    frequency_until,
    normalize_address,
    parse_clock,
    quiet_until,
    whatsapp_window_open,
)
from integrations.channels import (
    Channel,
    OutboundMessage,
    OutsideWindow,
    RecipientOptedOut,
    Template,
    Unregistered,
)

# ChannelName and MessageClass are part of DeliverRequest: workflows take them from here
# (explicitly re-exported), never from integrations/.
from integrations.channels import ChannelName as ChannelName
from integrations.channels import MessageClass as MessageClass
from integrations.errors import ProviderError, Rejected, RetryLater
from settings import PolicySettings
from store.repo import FINAL_OUTBOX, OutboxStatus, Store

log = logging.getLogger(__name__)

WHATSAPP_CHANNELS = (ChannelName.whatsapp, ChannelName.whatsapp_twilio)
"""WhatsApp through Twilio and through Meta reach the same WhatsApp number of the contact."""


@dataclass
class DeliverRequest:
    idempotency_key: str
    workflow_id: str
    channel: ChannelName
    to: str
    text: str = ""
    subject: str = ""
    html: str = ""
    template: Template | None = None
    interactive: dict[str, Any] | None = None
    data: dict[str, str] = field(default_factory=dict)
    message_class: MessageClass = MessageClass.transactional
    contact_id: int | None = None
    as_of: datetime | None = None
    """The workflow's clock when it asked (``workflow.now()``): policy windows are judged by
    the same clock the workflow sleeps by. None means the activity's own clock."""


@dataclass
class ContactPolicyCheck:
    contact_id: int | None
    message_class: MessageClass = MessageClass.marketing
    as_of: datetime | None = None
    """The workflow's clock, as for ``DeliverRequest.as_of``."""


@dataclass
class DeliveryOutcome:
    status: str
    """sent, sandboxed, suppressed, outside_whatsapp_window, failed, unknown, or wait."""
    not_before: datetime | None = None
    provider_message_id: str | None = None
    reason: str = ""


class DeliveryActivities:
    def __init__(
        self,
        channels: dict[ChannelName, Channel | None],
        store: Store,
        policy: PolicySettings,
        *,
        unsubscribe_url: Any = None,
        status_callback: str = "",
    ) -> None:
        """``channels`` maps every channel to its client, or to None for sandbox mode."""
        self.channels = channels
        self.store = store
        self.policy = policy
        self.unsubscribe_url = unsubscribe_url
        self.status_callback = status_callback

    @activity.defn
    async def deliver(self, request: DeliverRequest) -> DeliveryOutcome:
        existing = await asyncio.to_thread(self.store.get_outbox, request.idempotency_key)
        if existing is not None and existing.status in FINAL_OUTBOX:
            return DeliveryOutcome(
                status=existing.status,
                provider_message_id=existing.provider_message_id,
                reason=existing.error or "",
            )
        if existing is not None and existing.status == OutboxStatus.sending:
            # An earlier attempt died mid-call; these providers take no idempotency key, so
            # we cannot ask whether it arrived. Say so rather than risk a second message.
            await asyncio.to_thread(
                self.store.mark_outbox,
                request.idempotency_key,
                OutboxStatus.unknown,
                error="the worker stopped while the provider call was in flight",
            )
            return DeliveryOutcome(status=OutboxStatus.unknown, reason="send interrupted")

        contact_id = request.contact_id
        if contact_id is None:
            contact_id = await asyncio.to_thread(self.store.contact_for, *self._address(request))
        decision = await self.decide(request, contact_id)
        if decision.verdict == Verdict.wait:
            return DeliveryOutcome(
                status="wait", not_before=decision.not_before, reason=decision.reason
            )

        message = self._message(request, use_template=decision.verdict == Verdict.send_template)
        await asyncio.to_thread(
            self.store.claim_outbox,
            request.idempotency_key,
            workflow_id=request.workflow_id,
            channel=request.channel.value,
            recipient=request.to,
            body=message.text or (message.template.name if message.template else ""),
            message_class=request.message_class.value,
            contact_id=contact_id,
        )
        if decision.verdict in (Verdict.suppressed, Verdict.outside_whatsapp_window):
            status = (
                OutboxStatus.suppressed
                if decision.verdict == Verdict.suppressed
                else OutboxStatus.failed
            )
            await asyncio.to_thread(
                self.store.mark_outbox, request.idempotency_key, status, error=decision.reason
            )
            return DeliveryOutcome(status=decision.verdict.value, reason=decision.reason)
        return await self._send(request, message)

    @activity.defn
    async def check_contact_policy(self, check: ContactPolicyCheck) -> DeliveryOutcome:
        """May this contact get a message of this class now? For messages that leave through
        another API (helpdesk replies): ``send``, ``suppressed`` (unsubscribed from marketing
        e-mail or opted out everywhere) or ``wait`` with the time to ask again."""
        email = ""
        if check.contact_id is not None:
            contact = await asyncio.to_thread(self.store.get_contact, check.contact_id)
            email = (contact.email or "") if contact is not None else ""
        request = DeliverRequest(
            idempotency_key="",
            workflow_id="",
            channel=ChannelName.email,
            to=email,
            message_class=check.message_class,
            as_of=check.as_of,
        )
        decision = await self.decide(request, check.contact_id)
        return DeliveryOutcome(
            status=decision.verdict.value, not_before=decision.not_before, reason=decision.reason
        )

    async def decide(self, request: DeliverRequest, contact_id: int | None) -> Decision:
        now = request.as_of or datetime.now(UTC)
        where, address = self._address(request)
        suppression = await asyncio.to_thread(
            self.store.suppression_for, where, address, request.message_class.value
        )
        if suppression is not None:
            return Decision(Verdict.suppressed, reason=f"suppressed: {suppression.reason}")
        verdict = Verdict.send
        if request.channel in WHATSAPP_CHANNELS:
            last = await asyncio.to_thread(self.store.last_inbound, "whatsapp", address)
            if not whatsapp_window_open(last, now, self.policy.whatsapp_window):
                if request.template is None:
                    return Decision(
                        Verdict.outside_whatsapp_window,
                        reason="outside_whatsapp_window: no inbound message in the last "
                        f"{self.policy.whatsapp_window} and no approved template configured",
                    )
                verdict = Verdict.send_template
        if request.message_class != MessageClass.marketing:
            return Decision(verdict)
        waits: list[tuple[datetime, str]] = []
        zone = None
        if contact_id is not None:
            zone = await asyncio.to_thread(self.store.contact_timezone, contact_id)
        quiet = quiet_until(
            now,
            zone or self.policy.default_timezone,
            parse_clock(self.policy.quiet_hours_start),
            parse_clock(self.policy.quiet_hours_end),
        )
        if quiet is not None:
            waits.append((quiet, "quiet hours"))
        since = now - self.policy.frequency_window
        sent: list[datetime] = []
        if contact_id is not None:
            sent = await asyncio.to_thread(self.store.marketing_sent_since, contact_id, since)
        capped = frequency_until(sent, now, self.policy.frequency_cap, self.policy.frequency_window)
        if capped is not None:
            waits.append((capped, "frequency cap"))
        if waits:
            until, why = max(waits)
            return Decision(Verdict.wait, not_before=until, reason=why)
        return Decision(verdict)

    @staticmethod
    def _address(request: DeliverRequest) -> tuple[str, str]:
        """The (channel, address) a contact is known by: WhatsApp via Twilio is WhatsApp."""
        channel = address_channel(request.channel.value)
        return channel, normalize_address(channel, request.to)

    def _message(self, request: DeliverRequest, *, use_template: bool) -> OutboundMessage:
        unsubscribe = ""
        if request.channel == ChannelName.email and request.message_class == MessageClass.marketing:
            if self.unsubscribe_url is not None:
                unsubscribe = self.unsubscribe_url(*self._address(request))
        return OutboundMessage(
            channel=request.channel,
            to=request.to,
            idempotency_key=request.idempotency_key,
            text="" if use_template else request.text,
            subject=request.subject,
            html=request.html,
            template=request.template if use_template or not request.text else None,
            interactive=None if use_template else request.interactive,
            data=request.data,
            message_class=request.message_class,
            unsubscribe_url=unsubscribe,
            status_callback=self.status_callback,
        )

    async def _send(self, request: DeliverRequest, message: OutboundMessage) -> DeliveryOutcome:
        key = request.idempotency_key
        channel = self.channels.get(request.channel)
        if channel is None:
            log.info("sandbox %s -> %s: %s", request.channel.value, request.to, message.text[:200])
            await asyncio.to_thread(self.store.mark_outbox, key, OutboxStatus.sandboxed)
            return DeliveryOutcome(status=OutboxStatus.sandboxed)
        await asyncio.to_thread(self.store.mark_outbox, key, OutboxStatus.sending)
        try:
            receipt = await shielded_with_heartbeat(channel.send(message))
        except RecipientOptedOut as error:
            where, address = self._address(request)
            await asyncio.to_thread(
                self.store.suppress, where, address, scope="all",
                reason=str(error), source="provider",
            )  # fmt: skip
            await asyncio.to_thread(
                self.store.mark_outbox, key, OutboxStatus.suppressed, error=str(error)
            )
            return DeliveryOutcome(status=OutboxStatus.suppressed, reason=f"suppressed: {error}")
        except OutsideWindow as error:
            await asyncio.to_thread(
                self.store.mark_outbox, key, OutboxStatus.failed, error=str(error)
            )
            return DeliveryOutcome(status="outside_whatsapp_window", reason=str(error))
        except Unregistered as error:
            await asyncio.to_thread(self.store.forget_device_token, request.to)
            await asyncio.to_thread(
                self.store.mark_outbox, key, OutboxStatus.failed, error=str(error)
            )
            return DeliveryOutcome(
                status=OutboxStatus.failed, reason=f"device token unregistered: {error}"
            )
        except Rejected as error:
            await asyncio.to_thread(
                self.store.mark_outbox, key, OutboxStatus.failed, error=str(error)
            )
            return DeliveryOutcome(status=OutboxStatus.failed, reason=str(error))
        except RetryLater as error:
            if not error.maybe_delivered:  # the provider never took it: sending again is safe
                await asyncio.to_thread(self.store.mark_outbox, key, OutboxStatus.pending)
            raise as_application_error(error) from error
        except ProviderError as error:
            raise as_application_error(error) from error
        row = await asyncio.to_thread(
            self.store.mark_outbox,
            key,
            OutboxStatus.sent,
            provider_message_id=receipt.provider_message_id,
        )
        return DeliveryOutcome(status=row.status, provider_message_id=receipt.provider_message_id)
