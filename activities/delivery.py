"""The one send path: policy -> outbox -> channel.

``deliver`` either sends (or sandboxes) the message exactly once, refuses it for a stated
reason (suppressed, outside the WhatsApp window, rejected), or answers "not before T" - the
workflow then sleeps durably until T and asks again (``workflows/delivery.py``).
"""

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

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
from store.delivery import FrequencyCap, FrequencyCapped
from store.repo import FINAL_OUTBOX, OutboxStatus, Store

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

_UNSET_BEFORE = datetime(2000, 1, 1, tzinfo=UTC)
"""An ``activity.info()`` time before this is unset (a protobuf zero, 1970, or a test's)."""
IN_FLIGHT = "the worker stopped while the provider call was in flight"

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
    the same clock the workflow sleeps by, moved on to the attempt's own start when a retry
    runs later (``policy_now``). None means the activity's own clock."""


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
        in_flight_grace: timedelta = timedelta(minutes=2),
    ) -> None:
        """``channels`` maps every channel to its client, or to None for sandbox mode."""
        self.channels = channels
        self.store = store
        self.policy = policy
        self.unsubscribe_url = unsubscribe_url
        self.status_callback = status_callback
        self.in_flight_grace = in_flight_grace

    @activity.defn
    async def deliver(self, request: DeliverRequest) -> DeliveryOutcome:
        """Policy, then the outbox claim (which settles the frequency cap per contact), then
        the provider, called only by the attempt that takes the row from ``pending``."""
        key = request.idempotency_key
        existing = await _db(self.store.get_outbox, key)
        if existing is not None and existing.status != OutboxStatus.pending:
            return await self._as_stored(key)
        request = dataclasses.replace(request, as_of=policy_now(request.as_of))
        contact_id = request.contact_id
        if contact_id is None:
            contact_id = await _db(self.store.contact_for, *self._address(request))
        decision = await self.decide(request, contact_id)
        if decision.verdict == Verdict.wait:
            return DeliveryOutcome(
                status="wait", not_before=decision.not_before, reason=decision.reason
            )
        refused = decision.verdict in (Verdict.suppressed, Verdict.outside_whatsapp_window)
        message = self._message(request, use_template=decision.verdict == Verdict.send_template)
        try:
            row = await _db(
                self.store.claim_outbox,
                key,
                workflow_id=request.workflow_id,
                channel=request.channel.value,
                recipient=request.to,
                body=message.text or (message.template.name if message.template else ""),
                message_class=request.message_class.value,
                contact_id=contact_id,
                cap=None if refused else self._cap(request, contact_id),
            )
        except FrequencyCapped as capped:  # a concurrent send took the last place
            return DeliveryOutcome(
                status="wait", not_before=capped.not_before, reason="frequency cap"
            )
        if row.status != OutboxStatus.pending:
            return await self._as_stored(key)
        if refused:
            status = (
                OutboxStatus.suppressed
                if decision.verdict == Verdict.suppressed
                else OutboxStatus.failed
            )
            if await _db(self.store.take_outbox, key, status, error=decision.reason) is None:
                return await self._as_stored(key)
            return DeliveryOutcome(status=decision.verdict.value, reason=decision.reason)
        return await self._send(request, message)

    @activity.defn
    async def check_contact_policy(self, check: ContactPolicyCheck) -> DeliveryOutcome:
        """May this contact get a message of this class now? For messages that leave through
        another API (helpdesk replies): ``send``, ``suppressed`` (unsubscribed from marketing
        e-mail or opted out everywhere) or ``wait`` with the time to ask again."""
        email = ""
        if check.contact_id is not None:
            contact = await _db(self.store.get_contact, check.contact_id)
            email = (contact.email or "") if contact is not None else ""
        request = DeliverRequest(
            idempotency_key="",
            workflow_id="",
            channel=ChannelName.email,
            to=email,
            message_class=check.message_class,
            as_of=policy_now(check.as_of),
        )
        decision = await self.decide(request, check.contact_id)
        return DeliveryOutcome(
            status=decision.verdict.value, not_before=decision.not_before, reason=decision.reason
        )

    async def decide(self, request: DeliverRequest, contact_id: int | None) -> Decision:
        """The policy's answer at ``request.as_of``. Read-only: for ``deliver`` the frequency
        cap is settled again when the message is claimed (``_cap``)."""
        now = request.as_of or datetime.now(UTC)
        where, address = self._address(request)
        suppression = await _db(
            self.store.suppression_for, where, address, request.message_class.value
        )
        if suppression is not None:
            return Decision(Verdict.suppressed, reason=f"suppressed: {suppression.reason}")
        verdict = Verdict.send
        if request.channel in WHATSAPP_CHANNELS:
            last = await _db(self.store.last_inbound, "whatsapp", address)
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
            zone = await _db(self.store.contact_timezone, contact_id)
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
            sent = await _db(
                self.store.marketing_sent_since,
                contact_id,
                since,
                excluding=request.idempotency_key or None,
            )
        capped = frequency_until(sent, now, self.policy.frequency_cap, self.policy.frequency_window)
        if capped is not None:
            waits.append((capped, "frequency cap"))
        if waits:
            until, why = max(waits)
            return Decision(Verdict.wait, not_before=until, reason=why)
        return Decision(verdict)

    def _cap(self, request: DeliverRequest, contact_id: int | None) -> FrequencyCap | None:
        """The frequency cap for the claim, or None when it does not apply."""
        cap, window = self.policy.frequency_cap, self.policy.frequency_window
        if request.message_class != MessageClass.marketing or contact_id is None or cap <= 0:
            return None
        now = request.as_of or datetime.now(UTC)
        return FrequencyCap(
            contact_id, now - window, lambda times: frequency_until(times, now, cap, window)
        )

    async def _as_stored(self, key: str) -> DeliveryOutcome:
        """The answer when the row is past ``pending`` (an earlier or concurrent attempt got
        to it): a final status is returned as it is; a send in flight is never repeated.

        ``sending`` means an attempt called the provider and has not marked the answer. It
        may be alive but slow (a worker too busy to heartbeat in time makes Temporal start
        this attempt): within ``in_flight_grace`` of its start this attempt steps back and
        is retried later, by when the first has marked what the provider said. Past the
        grace the first attempt died mid-call; these providers take no idempotency key, so
        we cannot ask whether the message arrived, and the row is reported ``unknown``
        rather than risk a second message.
        """
        row = await _db(self.store.get_outbox, key)
        assert row is not None
        started = row.updated_at
        if row.status == OutboxStatus.sending and (
            started is not None and datetime.now(UTC) - started < self.in_flight_grace
        ):
            raise ApplicationError(
                f"outbox row {key}: an earlier attempt is sending it; asking again later",
                type="RetryLater",
            )
        if row.status == OutboxStatus.sending:
            marked = await _db(
                self.store.take_outbox,
                key,
                OutboxStatus.unknown,
                expected=OutboxStatus.sending,
                error=IN_FLIGHT,
            )
            if marked is not None:
                return DeliveryOutcome(status=OutboxStatus.unknown, reason="send interrupted")
            row = await _db(self.store.get_outbox, key)
            assert row is not None
        if row.status in FINAL_OUTBOX:
            return DeliveryOutcome(
                status=row.status,
                provider_message_id=row.provider_message_id,
                reason=row.error or "",
            )
        # Back to pending: the other attempt's provider refused before taking it. Ask again.
        raise ApplicationError(f"outbox row {key} was released meanwhile", type="RetryLater")

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
        """Send only after winning the row from ``pending``: of two attempts running at once,
        the other finds it taken and acts on it as stored."""
        key = request.idempotency_key
        channel = self.channels.get(request.channel)
        if channel is None:
            if await _db(self.store.take_outbox, key, OutboxStatus.sandboxed) is None:
                return await self._as_stored(key)
            log.info("sandbox %s -> %s: %s", request.channel.value, request.to, message.text[:200])
            return DeliveryOutcome(status=OutboxStatus.sandboxed)
        # From taking the row to recording the provider's answer is one unit that a cancel
        # (e.g. a heartbeat timeout of a busy worker) waits for: honoured in between, it
        # would leave the row ``sending`` with nothing sent, or sent with nothing recorded.
        outcome = await shielded_with_heartbeat(self._send_and_record(request, message, channel))
        if outcome is None:
            return await self._as_stored(key)
        return outcome

    async def _send_and_record(
        self, request: DeliverRequest, message: OutboundMessage, channel: Channel
    ) -> DeliveryOutcome | None:
        """None when another attempt took the row first."""
        key = request.idempotency_key
        if await _db(self.store.take_outbox, key, OutboxStatus.sending) is None:
            return None
        try:
            receipt = await channel.send(message)
        except RecipientOptedOut as error:
            where, address = self._address(request)
            await _db(
                self.store.suppress, where, address, scope="all",
                reason=str(error), source="provider",
            )  # fmt: skip
            await _db(self.store.mark_outbox, key, OutboxStatus.suppressed, error=str(error))
            return DeliveryOutcome(status=OutboxStatus.suppressed, reason=f"suppressed: {error}")
        except OutsideWindow as error:
            reason = f"outside_whatsapp_window: {error}"
            await _db(self.store.mark_outbox, key, OutboxStatus.failed, error=reason)
            return DeliveryOutcome(status="outside_whatsapp_window", reason=reason)
        except Unregistered as error:
            await _db(self.store.forget_device_token, request.to)
            await _db(self.store.mark_outbox, key, OutboxStatus.failed, error=str(error))
            return DeliveryOutcome(
                status=OutboxStatus.failed, reason=f"device token unregistered: {error}"
            )
        except Rejected as error:
            await _db(self.store.mark_outbox, key, OutboxStatus.failed, error=str(error))
            return DeliveryOutcome(status=OutboxStatus.failed, reason=str(error))
        except RetryLater as error:
            if not error.maybe_delivered:  # the provider never took it: sending again is safe
                await _db(
                    self.store.take_outbox,
                    key,
                    OutboxStatus.pending,
                    expected=OutboxStatus.sending,
                )
            raise as_application_error(error) from error
        except ProviderError as error:
            raise as_application_error(error) from error
        row = await _db(
            self.store.mark_outbox,
            key,
            OutboxStatus.sent,
            provider_message_id=receipt.provider_message_id,
        )
        return DeliveryOutcome(status=row.status, provider_message_id=receipt.provider_message_id)


def policy_now(as_of: datetime | None) -> datetime:
    """The clock the policy judges by: the later of the workflow's clock when it asked and the
    server's clock when this attempt started.

    Retries reuse the request, and may run hours later (up to ``PROVIDER_PATIENCE``): judged
    by ``as_of`` alone, marketing retried into quiet hours would go out, and the frequency
    window would be read at the wrong time. The server's clock is also the one the
    time-skipping test server moves. Watch out: ``current_attempt_scheduled_time`` is when
    the retry was *scheduled*, right after the failure, before its backoff; ``started_time``
    is when it runs. A local activity's info holds the worker's clock, at its first attempt
    (the server never schedules it), so there the worker's clock now is used.
    """
    if not activity.in_activity():
        return as_of or datetime.now(UTC)
    info = activity.info()
    clock = max(info.current_attempt_scheduled_time, info.started_time)
    if info.is_local or clock < _UNSET_BEFORE:
        clock = datetime.now(UTC)
    return clock if as_of is None else max(as_of, clock)


async def _db(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """A store call in a thread, heartbeating meanwhile: a slow database (a lock wait, a busy
    SQLite) must not look like a dead worker past the 10 s heartbeat timeout, or Temporal
    starts a second attempt while this one is alive."""
    work = asyncio.to_thread(call, *args, **kwargs)
    if not activity.in_activity():  # ``decide`` is also called directly
        return await work
    return await shielded_with_heartbeat(work)
