"""The one send path: policy -> outbox -> channel.

``deliver`` either sends (or sandboxes) the message exactly once, refuses it for a stated
reason (suppressed, outside the WhatsApp window, rejected), or answers "not before T" - the
workflow then sleeps durably until T and asks again (``workflows/delivery.py``).
"""

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.failures import as_application_error
from activities.heartbeat import db, shielded_with_heartbeat
from domain.addresses import address_channel, normalize_address
from domain.channels import WHATSAPP_CHANNELS, ChannelName, MessageClass
from domain.delivery import ContactPolicyCheck, DeliverRequest, DeliveryOutcome, PolicyAnswer
from domain.durations import describe_duration
from domain.policy import (
    Decision,
    HoldReason,
    OptOutSource,
    Verdict,
    frequency_until,
    parse_clock,
    quiet_hours_apply,
    quiet_until,
    whatsapp_window_open,
)
from domain.rendering import interactive_text
from domain.status import FINAL_OUTBOX, OutboxStatus, SendStatus
from integrations.channels import (
    Channel,
    OutboundMessage,
    OutsideWindow,
    RecipientOptedOut,
    Reconcilable,
    Unregistered,
)
from integrations.errors import NotFound, ProviderError, Rejected, RetryLater
from settings import PolicySettings
from store.delivery import FrequencyCap, FrequencyCapped
from store.repo import Store

log = logging.getLogger(__name__)

_UNSET_BEFORE = datetime(2000, 1, 1, tzinfo=UTC)
"""An ``activity.info()`` time before this is unset (a protobuf zero, 1970, or a test's)."""
IN_FLIGHT = "the worker stopped while the provider call was in flight"

UnsubscribeUrl = Callable[[str, str], str]
"""(channel, address) -> the signed unsubscribe link put in marketing e-mail."""


@dataclass
class PostReplyInput:
    """What helpdesk follow-ups begun before the one send path ask ``post_reply`` to post."""

    conversation: str
    body: str
    idempotency_key: str
    workflow_id: str
    contact_id: int | None = None


@dataclass
class PostReplyResult:
    status: str
    sent_at: datetime | None


class DeliveryActivities:
    def __init__(
        self,
        channels: dict[ChannelName, Channel | None],
        store: Store,
        policy: PolicySettings,
        *,
        unsubscribe_url: UnsubscribeUrl | None = None,
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
        existing = await db(self.store.get_outbox, key)
        unclaimed = (OutboxStatus.pending, OutboxStatus.held)
        if existing is not None and existing.status not in unclaimed:
            return await self._as_stored(request)
        request = dataclasses.replace(request, as_of=policy_now(request.as_of))
        contact_id = request.contact_id
        if contact_id is None:
            contact_id = await db(self.store.contact_for, *self._address(request))
        decision = await self.decide(request, contact_id, count_cap=False)
        if decision.verdict == Verdict.wait and decision.not_before is not None:
            return await self._hold(
                request, contact_id, decision.not_before, decision.reason, decision.timezone
            )
        refused = decision.verdict in (Verdict.suppressed, Verdict.outside_whatsapp_window)
        message = self._message(request, use_template=decision.verdict == Verdict.send_template)
        try:
            row = await db(
                self.store.claim_outbox,
                key,
                workflow_id=request.workflow_id,
                channel=request.channel.value,
                recipient=request.to,
                body=outbox_body(message),
                message_class=request.message_class.value,
                contact_id=contact_id,
                cap=None if refused else self._cap(request, contact_id),
                template_name=request.template_name,
            )
        except FrequencyCapped as capped:  # a concurrent send took the last place
            return await self._hold(
                request, contact_id, capped.not_before, HoldReason.frequency_cap, decision.timezone
            )
        if row.status != OutboxStatus.pending:
            return await self._as_stored(request)
        if refused:
            status = (
                OutboxStatus.suppressed
                if decision.verdict == Verdict.suppressed
                else OutboxStatus.failed
            )
            if await db(self.store.take_outbox, key, status, error=decision.reason) is None:
                return await self._as_stored(request)
            return DeliveryOutcome(SendStatus(decision.verdict.value), reason=decision.reason)
        return await self._send(request, message)

    async def _hold(
        self,
        request: DeliverRequest,
        contact_id: int | None,
        not_before: datetime,
        reason: str,
        timezone: str,
    ) -> DeliveryOutcome:
        """Not now: the outbox row says ``held`` until when and why (``GET /v1/outbox``),
        under the same key, so the send that ends the hold claims this row."""
        await db(
            self.store.hold_outbox,
            request.idempotency_key,
            workflow_id=request.workflow_id,
            channel=request.channel.value,
            recipient=request.to,
            body=outbox_body(self._message(request, use_template=False)),
            message_class=request.message_class.value,
            not_before=not_before,
            reason=reason,
            contact_id=contact_id,
            template_name=request.template_name,
        )
        return DeliveryOutcome(
            SendStatus.wait,
            not_before=not_before,
            reason=reason,
            timezone=timezone,
            contact_id=contact_id,
        )

    @activity.defn
    async def check_contact_policy(self, check: ContactPolicyCheck) -> PolicyAnswer:
        """May this contact get a message of this class now, by e-mail or in a helpdesk reply?
        Asked before a message is written: ``send``, ``suppressed`` (unsubscribed from
        marketing e-mail or opted out everywhere) or ``wait`` with the time to ask again.
        ``deliver`` decides again when the message is ready."""
        request = DeliverRequest(  # a helpdesk reply: the contact's e-mail opt-outs apply
            idempotency_key="",
            workflow_id="",
            channel=ChannelName.reamaze,
            to="",
            message_class=check.message_class,
            as_of=policy_now(check.as_of),
        )
        decision = await self.decide(request, check.contact_id)
        return PolicyAnswer(
            decision.verdict, decision.not_before, decision.reason, timezone=decision.timezone
        )

    @activity.defn(name="post_reply")
    async def post_helpdesk_reply(self, request: PostReplyInput) -> PostReplyResult:
        """The send path under the name helpdesk follow-ups begun before it existed still
        schedule (``HelpdeskFollowUp`` keeps their path for replay): their replies take the
        same policy, outbox and channel as every other message."""
        outcome = await self.deliver(
            DeliverRequest(
                idempotency_key=request.idempotency_key,
                workflow_id=request.workflow_id,
                channel=ChannelName.reamaze,
                to=request.conversation,
                text=request.body,
                message_class=MessageClass.marketing,
                contact_id=request.contact_id,
            )
        )
        if outcome.status == SendStatus.wait:  # those runs cannot wait; their retry does
            delay = (outcome.not_before or datetime.now(UTC)) - datetime.now(UTC)
            raise ApplicationError(
                f"held: {outcome.reason}",
                type="RetryLater",
                next_retry_delay=max(delay, timedelta(seconds=1)),
            )
        if outcome.status in (SendStatus.failed, SendStatus.outside_whatsapp_window):
            raise ApplicationError(
                outcome.reason or "send failed",
                type="ConversationGone" if outcome.gone else "Rejected",
                non_retryable=True,
            )
        return PostReplyResult(status=outcome.status.value, sent_at=outcome.sent_at)

    async def decide(
        self, request: DeliverRequest, contact_id: int | None, *, count_cap: bool = True
    ) -> Decision:
        """The policy's answer at ``request.as_of``, from facts read in one round trip.
        ``deliver`` passes ``count_cap=False``: the outbox claim counts the frequency cap
        itself, atomically, so counting it here too would only cost a query."""
        now = request.as_of or datetime.now(UTC)
        marketing = request.message_class == MessageClass.marketing
        channel, address = self._address(request)
        facts = await db(
            self.store.policy_facts,
            [(channel, address)],
            request.message_class.value,
            contact_id=contact_id,
            # A helpdesk reply reaches the customer by e-mail: their e-mail opt-outs apply.
            contact_email=request.channel == ChannelName.reamaze,
            whatsapp_address=address if request.channel in WHATSAPP_CHANNELS else None,
            marketing_since=now - self.policy.frequency_window if marketing and count_cap else None,
            excluding=request.idempotency_key or None,
        )
        if facts.suppression is not None:
            return Decision(Verdict.suppressed, reason=f"suppressed: {facts.suppression.reason}")
        verdict = Verdict.send
        if request.channel in WHATSAPP_CHANNELS:
            if not whatsapp_window_open(facts.last_inbound, now, self.policy.whatsapp_window):
                if request.template is None:
                    return Decision(
                        Verdict.outside_whatsapp_window,
                        reason="outside_whatsapp_window: no inbound message in the last "
                        f"{describe_duration(self.policy.whatsapp_window)} and no approved "
                        "template configured",
                    )
                verdict = Verdict.send_template
        if not marketing:
            return Decision(verdict)
        zone = facts.timezone or self.policy.default_timezone
        waits: list[tuple[datetime, HoldReason]] = []
        if quiet_hours_apply(request.channel, self.policy.quiet_hours_channels):
            quiet = quiet_until(
                now,
                zone,
                parse_clock(self.policy.quiet_hours_start),
                parse_clock(self.policy.quiet_hours_end),
            )
            if quiet is not None:
                waits.append((quiet, HoldReason.quiet_hours))
        capped = frequency_until(
            facts.marketing_times, now, self.policy.frequency_cap, self.policy.frequency_window
        )
        if capped is not None:
            waits.append((capped, HoldReason.frequency_cap))
        if waits:
            until, why = max(waits)
            return Decision(Verdict.wait, not_before=until, reason=why, timezone=zone)
        return Decision(verdict, timezone=zone)

    def _cap(self, request: DeliverRequest, contact_id: int | None) -> FrequencyCap | None:
        """The frequency cap for the claim, or None when it does not apply."""
        cap, window = self.policy.frequency_cap, self.policy.frequency_window
        if request.message_class != MessageClass.marketing or contact_id is None or cap <= 0:
            return None
        now = request.as_of or datetime.now(UTC)
        return FrequencyCap(
            contact_id, now - window, lambda times: frequency_until(times, now, cap, window)
        )

    async def _as_stored(self, request: DeliverRequest) -> DeliveryOutcome:
        """The answer when the row is past ``pending`` (an earlier or concurrent attempt got
        to it): a final status is returned as it is; a send in flight is never repeated blind.

        ``sending`` means an attempt called the provider and has not marked the answer. A
        provider that can be asked (``Reconcilable``) is asked at once: if it has the
        message, it was sent. Otherwise the attempt may be alive but slow (a worker too busy
        to heartbeat in time makes Temporal start this attempt): within ``in_flight_grace``
        of its start this attempt steps back and is retried later, by when the first has
        marked what the provider said. Past the grace the first attempt died mid-call: a
        provider that was asked and has nothing gets the message again; the others take no
        idempotency key, so the row is reported ``unknown`` rather than risk a second message.
        """
        key = request.idempotency_key
        row = await db(self.store.get_outbox, key)
        assert row is not None
        channel = self.channels.get(request.channel)
        if row.status == OutboxStatus.sending and isinstance(channel, Reconcilable):
            found = await self._reconcile(channel, request)
            if found is not None:
                return found
        started = row.updated_at
        if row.status == OutboxStatus.sending and (
            started is not None and datetime.now(UTC) - started < self.in_flight_grace
        ):
            raise ApplicationError(
                f"outbox row {key}: an earlier attempt is sending it; asking again later",
                type="RetryLater",
            )
        if row.status == OutboxStatus.sending and isinstance(channel, Reconcilable):
            # The provider does not have it and its sender is gone: send it again.
            await db(self.store.take_outbox, key, OutboxStatus.pending, expected=row.status)
            raise ApplicationError(f"outbox row {key}: not at the provider", type="RetryLater")
        if row.status == OutboxStatus.sending:
            marked = await db(
                self.store.take_outbox,
                key,
                OutboxStatus.unknown,
                expected=OutboxStatus.sending,
                error=IN_FLIGHT,
            )
            if marked is not None:
                return DeliveryOutcome(SendStatus.unknown, reason="send interrupted")
            row = await db(self.store.get_outbox, key)
            assert row is not None
        if row.status in FINAL_OUTBOX:
            return DeliveryOutcome(
                SendStatus(row.status.value),
                provider_message_id=row.provider_message_id,
                reason=row.error or "",
                sent_at=row.sent_at,
            )
        # Back to pending: the other attempt's provider refused before taking it. Ask again.
        raise ApplicationError(f"outbox row {key} was released meanwhile", type="RetryLater")

    async def _reconcile(
        self, channel: Reconcilable, request: DeliverRequest
    ) -> DeliveryOutcome | None:
        """The outcome when the provider has the message (it is then marked sent), else None."""
        message = self._message(request, use_template=False)
        try:
            receipt = await shielded_with_heartbeat(channel.find_sent(message))
        except ProviderError as error:
            raise as_application_error(error) from error
        if receipt is None:
            return None
        marked = await db(
            self.store.mark_outbox,
            request.idempotency_key,
            OutboxStatus.sent,
            provider_message_id=receipt.provider_message_id,
        )
        log.info("outbox row %s was at the provider already: marked sent", request.idempotency_key)
        return DeliveryOutcome(
            SendStatus(marked.status.value),
            provider_message_id=receipt.provider_message_id,
            sent_at=marked.sent_at,
        )

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
            row = await db(self.store.take_outbox, key, OutboxStatus.sandboxed)
            if row is None:
                return await self._as_stored(request)
            log.info("sandbox %s -> %s: %s", request.channel.value, request.to, row.body[:2000])
            return DeliveryOutcome(SendStatus.sandboxed, sent_at=row.sent_at)
        # From taking the row to recording the provider's answer is one unit that a cancel
        # (e.g. a heartbeat timeout of a busy worker) waits for: honoured in between, it
        # would leave the row ``sending`` with nothing sent, or sent with nothing recorded.
        outcome = await shielded_with_heartbeat(self._send_and_record(request, message, channel))
        if outcome is None:
            return await self._as_stored(request)
        return outcome

    async def _send_and_record(
        self, request: DeliverRequest, message: OutboundMessage, channel: Channel
    ) -> DeliveryOutcome | None:
        """None when another attempt took the row first."""
        key = request.idempotency_key
        if await db(self.store.take_outbox, key, OutboxStatus.sending) is None:
            return None
        try:
            receipt = await channel.send(message)
        except RecipientOptedOut as error:
            where, address = self._address(request)
            await db(
                self.store.suppress, where, address, scope="all",
                reason=str(error), source=OptOutSource.provider_block,
            )  # fmt: skip
            await db(self.store.mark_outbox, key, OutboxStatus.suppressed, error=str(error))
            return DeliveryOutcome(SendStatus.suppressed, reason=f"suppressed: {error}")
        except OutsideWindow as error:
            reason = f"outside_whatsapp_window: {error}"
            await db(self.store.mark_outbox, key, OutboxStatus.failed, error=reason)
            return DeliveryOutcome(SendStatus.outside_whatsapp_window, reason=reason)
        except Unregistered as error:
            await db(self.store.forget_device_token, request.to)
            await db(self.store.mark_outbox, key, OutboxStatus.failed, error=str(error))
            return DeliveryOutcome(
                SendStatus.failed, reason=f"device token unregistered: {error}", gone=True
            )
        except Rejected as error:
            await db(self.store.mark_outbox, key, OutboxStatus.failed, error=str(error))
            return DeliveryOutcome(
                SendStatus.failed, reason=str(error), gone=isinstance(error, NotFound)
            )
        except RetryLater as error:
            if not error.maybe_delivered:  # the provider never took it: sending again is safe
                await db(
                    self.store.take_outbox,
                    key,
                    OutboxStatus.pending,
                    expected=OutboxStatus.sending,
                )
            raise as_application_error(error) from error
        except ProviderError as error:
            raise as_application_error(error) from error
        row = await db(
            self.store.mark_outbox,
            key,
            OutboxStatus.sent,
            provider_message_id=receipt.provider_message_id,
        )
        return DeliveryOutcome(
            SendStatus(row.status.value),
            provider_message_id=receipt.provider_message_id,
            sent_at=row.sent_at,
        )


def outbox_body(message: OutboundMessage) -> str:
    """What the outbox (and the sandbox log) shows of a message: an interactive menu as text
    with its options and their ids (the channel sends the interactive object, not the text),
    else the text, else the template's name. Never empty for a menu."""
    if message.interactive is not None:
        return interactive_text(message.interactive, with_ids=True)
    return message.text or (message.template.name if message.template else "")


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
