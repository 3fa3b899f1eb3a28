"""Business tables: what operators edit and report on. Workflow state is not copied here."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import true as sa_true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from domain import limits


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Store UTC, hand back aware datetimes on SQLite too (it forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("source", "external_id", name="uq_contacts_source_external"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(limits.CHANNEL))
    """Where the contact came from (``reamaze``, ``whatsapp`` ...)."""
    external_id: Mapped[str] = mapped_column(String(limits.ADDRESS))
    name: Mapped[str | None] = mapped_column(String(limits.CONTACT_NAME))
    email: Mapped[str | None] = mapped_column(String(limits.ADDRESS), index=True)
    phone: Mapped[str | None] = mapped_column(String(limits.ADDRESS), index=True)
    timezone: Mapped[str | None] = mapped_column(String(limits.TIMEZONE), nullable=True)
    """IANA zone (``Europe/Paris``); quiet hours are in the contact's own time."""
    locale: Mapped[str | None] = mapped_column(String(limits.LOCALE), nullable=True)
    status: Mapped[str | None] = mapped_column(String(limits.LEAD_STATUS), nullable=True)
    """The lead status, free text of the operator's (``new``, ``contacted``, ``won``)."""
    lead_source: Mapped[str | None] = mapped_column(String(limits.LEAD_SOURCE), nullable=True)
    """Where the lead came from as the operator names it (``facebook_ad``): the API's
    ``source``. Not ``source`` above, which is the channel that first knew the contact."""
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Custom fields, any JSON object (``limits.CUSTOM_FIELDS``)."""
    last_contacted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_exchange_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """The last message to the contact other than a ``no_contact_days`` nudge (or when an
    operator said they were contacted): where the contact's quiet spell begins. With the
    last inbound message (``contact_channels.last_inbound_at``) it is what watches time by."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class FollowUp(Base):
    """The outcome of one finished follow-up sequence (running ones live in Temporal)."""

    __tablename__ = "followups"
    __table_args__ = (UniqueConstraint("workflow_id", "run_id", name="uq_followups_run"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(limits.WORKFLOW_ID), index=True)
    run_id: Mapped[str] = mapped_column(String(limits.RUN_ID))
    helpdesk: Mapped[str] = mapped_column(String(limits.CHANNEL))
    conversation: Mapped[str] = mapped_column(String(limits.WORKFLOW_ID), index=True)
    """A slug (``limits.CONVERSATION_SLUG``), kept as long as the workflow id it is part of."""
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), nullable=True)
    status: Mapped[str] = mapped_column(String(limits.FOLLOWUP_STATUS), index=True)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    fallback_used: Mapped[bool] = mapped_column(Boolean, default=False)
    tag_removed: Mapped[bool] = mapped_column(Boolean, default=False)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class OutboxMessage(Base):
    """One outbound message, written before the provider call and marked after it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(limits.IDEMPOTENCY_KEY), unique=True)
    workflow_id: Mapped[str] = mapped_column(String(limits.WORKFLOW_ID), index=True)
    channel: Mapped[str] = mapped_column(String(limits.CHANNEL), index=True)
    recipient: Mapped[str] = mapped_column(String(limits.ADDRESS))
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id"), nullable=True, index=True
    )
    message_class: Mapped[str] = mapped_column(String(limits.STATUS))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(limits.STATUS), index=True)
    provider_message_id: Mapped[str | None] = mapped_column(
        String(limits.PROVIDER_MESSAGE_ID), nullable=True, index=True
    )
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """When the provider reported the current status (delivered, read, failed)."""
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """While ``held``: when the policy lets it go. Kept once the hold is over, with
    ``held_reason``, so the row says it waited and why."""
    held_reason: Mapped[str | None] = mapped_column(String(limits.HOLD_REASON), nullable=True)
    template_name: Mapped[str | None] = mapped_column(
        String(limits.MESSAGE_TEMPLATE_NAME), nullable=True, index=True
    )
    """The template the message was written from, when it was: analytics' top templates."""


class ApiToken(Base):
    """Bearer tokens, stored as SHA-256 hashes: a leaked database does not leak access.
    Revoked and expired rows are kept, so ``nudge token list`` can say what became of them."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(limits.TOKEN_NAME))
    role: Mapped[str] = mapped_column(String(limits.STATUS))
    token_hash: Mapped[str] = mapped_column(String(limits.TOKEN_HASH), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """To the minute at best: recorded at most once a minute per token (not a write per request)."""
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), nullable=True
    )
    """A ``contact`` token's contact: the only one whose follow-ups and credits it sees."""


class ContactChannel(Base):
    """One address of a contact on one channel, and when the contact last wrote from it
    (the WhatsApp 24-hour window runs from that moment)."""

    __tablename__ = "contact_channels"
    __table_args__ = (
        UniqueConstraint("channel", "address", name="uq_contact_channels_address"),
        Index("ix_contact_channels_address_only", "address"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(limits.CHANNEL))
    address: Mapped[str] = mapped_column(String(limits.ADDRESS))
    last_inbound_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DeviceToken(Base):
    __tablename__ = "device_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    token: Mapped[str] = mapped_column(String(limits.DEVICE_TOKEN), unique=True)
    platform: Mapped[str | None] = mapped_column(String(limits.STATUS), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Suppression(Base):
    """An address that must not be messaged on a channel: all messages, or marketing only."""

    __tablename__ = "suppressions"
    __table_args__ = (
        UniqueConstraint("channel", "address", "scope", "source", name="uq_suppressions_source"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(limits.CHANNEL))
    address: Mapped[str] = mapped_column(String(limits.ADDRESS), index=True)
    scope: Mapped[str] = mapped_column(String(limits.STATUS))
    """``all`` (STOP, provider opt-out) or ``marketing`` (an e-mail unsubscribe link)."""
    reason: Mapped[str] = mapped_column(String(limits.SUPPRESSION_REASON))
    source: Mapped[str] = mapped_column(String(limits.CHANNEL))
    """What created it (``domain.policy.OptOutSource``), which decides what lifts it; one
    row per source, so lifting a contact's own STOP leaves an operator's suppression."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InboundMessage(Base):
    """Every message a contact sent us, once (providers retry webhooks)."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        UniqueConstraint("channel", "provider_message_id", name="uq_inbound_provider_id"),
        Index("ix_inbound_unrouted", "routed_at", "route_channel", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(limits.CHANNEL))
    provider_message_id: Mapped[str] = mapped_column(String(limits.PROVIDER_MESSAGE_ID))
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id"), nullable=True, index=True
    )
    address: Mapped[str] = mapped_column(String(limits.ADDRESS))
    body: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(limits.MESSAGE_KIND), default="text")
    reply_id: Mapped[str | None] = mapped_column(String(limits.REPLY_ID), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    route_channel: Mapped[str | None] = mapped_column(String(limits.CHANNEL), nullable=True)
    """The conversation channel this message is routed to (``whatsapp``, ``whatsapp_twilio``);
    None for messages no conversation takes (SMS)."""
    routed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """Set once the message reached its conversation (or was answered by the fallback)."""
    route_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """When a process last took the routing on: a lease, so one message is routed by one
    process at a time, and taken again once the lease runs out unrouted."""
    route_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class DeliveryEvent(Base):
    """A provider status for one outbound message, once per (message, status)."""

    __tablename__ = "delivery_events"
    __table_args__ = (
        UniqueConstraint("provider", "provider_message_id", "status", name="uq_delivery_event"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(limits.CHANNEL))
    provider_message_id: Mapped[str] = mapped_column(String(limits.PROVIDER_MESSAGE_ID), index=True)
    status: Mapped[str] = mapped_column(String(limits.STATUS))
    error_code: Mapped[str | None] = mapped_column(String(limits.ERROR_CODE), nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Menu(Base):
    """A WhatsApp menu definition, as the API and the menus file save it."""

    __tablename__ = "menus"

    name: Mapped[str] = mapped_column(String(limits.MENU_NAME), primary_key=True)
    definition: Mapped[str] = mapped_column(Text)
    """JSON text of ``MenuDefinition.model_dump(mode="json", by_alias=True)``."""
    priority: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class MenuSession(Base):
    """One customer's pass through one menu: its outcome and transcript, for reports."""

    __tablename__ = "menu_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(String(limits.SESSION_ID), unique=True)
    """``{workflow_id}:{run_id}`` of the ``MenuConversation`` run."""
    workflow_id: Mapped[str] = mapped_column(String(limits.WORKFLOW_ID), index=True)
    menu: Mapped[str] = mapped_column(String(limits.MENU_NAME), index=True)
    channel: Mapped[str] = mapped_column(String(limits.CHANNEL))
    address: Mapped[str] = mapped_column(String(limits.ADDRESS))
    status: Mapped[str] = mapped_column(String(limits.STATUS))
    """``active``, ``completed``, ``expired``, ``handed_off``, ``cancelled``, ``moved``."""
    last_step: Mapped[str | None] = mapped_column(String(limits.STEP_NAME), nullable=True)
    context: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    transcript: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class BusinessEvent(Base):
    """Something that happened to a contact, once per idempotency key: a menu's ``event``,
    a new lead, a status change, a message received, an outside system's event
    (``POST /v1/events``). Automation rules read these; ``name`` is the API's ``type``."""

    __tablename__ = "business_events"
    __table_args__ = (
        Index("ix_business_events_contact", "contact_id", "created_at"),
        Index("ix_business_events_undispatched", "dispatched_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(limits.IDEMPOTENCY_KEY), unique=True)
    name: Mapped[str] = mapped_column(String(limits.EVENT_NAME), index=True)
    source: Mapped[str] = mapped_column(String(limits.EVENT_SOURCE))
    """Who emitted it: ``menu:main_menu``, ``api``, ``inbound:whatsapp``."""
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), nullable=True
    )
    channel: Mapped[str | None] = mapped_column(String(limits.CHANNEL), nullable=True)
    address: Mapped[str | None] = mapped_column(String(limits.ADDRESS), nullable=True)
    """The channel and address it came by, when it came by one (a menu, a message)."""
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The API's ``data``."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """When it happened."""
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """When the automation rules it triggers were started; None until then (a process that
    stopped in between leaves it for the next dispatch pass)."""


class FallbackReply(Base):
    """When a contact last got the fallback auto-reply (at most one per period)."""

    __tablename__ = "fallback_replies"

    channel: Mapped[str] = mapped_column(String(limits.CHANNEL), primary_key=True)
    address: Mapped[str] = mapped_column(String(limits.ADDRESS), primary_key=True)
    last_sent_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MessageTemplate(Base):
    """A message template (``domain.templates.MessageTemplate``): a text per locale, the
    variables it declares, and the approved WhatsApp templates that stand in for it."""

    __tablename__ = "templates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(limits.MESSAGE_TEMPLATE_NAME), unique=True)
    channel: Mapped[str] = mapped_column(String(limits.CHANNEL))
    subject: Mapped[str | None] = mapped_column(String(limits.SUBJECT), nullable=True)
    variants: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    """``{"en": "...", "ta": "..."}``."""
    variables: Mapped[list[str]] = mapped_column(JSON, default=list)
    default_locale: Mapped[str] = mapped_column(String(limits.LOCALE))
    approved: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """``{"whatsapp": {"name": ..., "language": ..., "parameters": [...]}}``."""
    template_type: Mapped[str] = mapped_column(
        String(limits.TEMPLATE_TYPE), default="custom", server_default="custom"
    )
    credits_cost: Mapped[int | None] = mapped_column(Integer, nullable=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=sa_true())
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    titles: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    service_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    send_after: Mapped[str] = mapped_column(
        String(limits.DURATION_TEXT), default="1d", server_default="1d"
    )
    """As written (``3d``), for ``session_followup`` templates."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Automation(Base):
    """An automation rule (``domain.automations.AutomationRule``), kept whole in ``rule``;
    ``trigger`` and ``enabled`` are copied out so an event finds its rules by index."""

    __tablename__ = "automations"
    __table_args__ = (Index("ix_automations_trigger", "trigger", "enabled"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(limits.AUTOMATION_NAME))
    type: Mapped[str] = mapped_column(String(limits.AUTOMATION_TYPE))
    trigger: Mapped[str] = mapped_column(String(limits.EVENT_NAME))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    rule: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The rule as validated, its webhook secret included (the API never shows it)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class AutomationRun(Base):
    """One run of a rule for one contact: written when it is scheduled (``waiting``, with its
    due time), finished by its workflow with what it did and why. A rule's counts and a
    contact's activity read these rows; the run's state while it waits lives in Temporal."""

    __tablename__ = "automation_runs"
    __table_args__ = (
        Index("ix_automation_runs_automation", "automation_id", "created_at"),
        Index("ix_automation_runs_contact", "contact_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(limits.WORKFLOW_ID), unique=True)
    automation_id: Mapped[int | None] = mapped_column(
        ForeignKey("automations.id", ondelete="SET NULL"), nullable=True
    )
    automation_name: Mapped[str] = mapped_column(String(limits.AUTOMATION_NAME))
    """Kept when the rule is deleted: a contact's activity still says what ran."""
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    occurrence: Mapped[str] = mapped_column(String(limits.RUN_OCCURRENCE))
    event_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(limits.STATUS), index=True)
    channel: Mapped[str | None] = mapped_column(String(limits.CHANNEL), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Booking(Base):
    """A contact's appointment: what ``booking_reminder_hours`` rules count back from."""

    __tablename__ = "bookings"
    __table_args__ = (Index("ix_bookings_contact", "contact_id", "starts_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    timezone: Mapped[str | None] = mapped_column(String(limits.TIMEZONE), nullable=True)
    """The zone ``starts_at`` was given in (from its offset), for the reminder's wording."""
    service: Mapped[str | None] = mapped_column(String(limits.BOOKING_SERVICE), nullable=True)
    location: Mapped[str | None] = mapped_column(String(limits.BOOKING_LOCATION), nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(limits.STATUS))
    """``booked``, ``cancelled`` or ``completed``."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class CreditEntry(Base):
    """One movement of a contact's credits (``domain.credits.EntryKind``). Append-only: the
    balance is what the entries add up to, and is never stored beside them."""

    __tablename__ = "credit_entries"
    __table_args__ = (Index("ix_credit_entries_contact", "contact_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(limits.CREDIT_KIND))
    amount: Mapped[int] = mapped_column(Integer)
    """Positive, but for an ``adjust`` that takes credits away."""
    reason: Mapped[str] = mapped_column(String(limits.CREDIT_REASON))
    reference: Mapped[str | None] = mapped_column(String(limits.CREDIT_REFERENCE), nullable=True)
    idempotency_key: Mapped[str] = mapped_column(String(limits.IDEMPOTENCY_KEY), unique=True)
    schedule_id: Mapped[int | None] = mapped_column(
        ForeignKey("scheduled_followups.id", ondelete="SET NULL"), nullable=True, index=True
    )
    """The scheduled follow-up it reserves, settles or refunds."""
    message_key: Mapped[str | None] = mapped_column(
        String(limits.IDEMPOTENCY_KEY), nullable=True, index=True
    )
    """A capture's or refund's message (the outbox row's key): what analytics join on."""
    unit_price: Mapped[Decimal | None] = mapped_column(Numeric(18, 4), nullable=True)
    """A capture's price of one credit when it was taken (revenue does not move when the
    price changes later)."""
    currency: Mapped[str | None] = mapped_column(String(limits.CURRENCY), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ScheduledFollowup(Base):
    """A follow-up scheduled for one contact at one time, from a template, paid in credits.
    Its waiting lives in its workflow (``scheduled:{id}``); this row is what the API lists
    and what the workflow records as it goes."""

    __tablename__ = "scheduled_followups"
    __table_args__ = (
        Index("ix_scheduled_followups_contact", "contact_id", "scheduled_at"),
        Index("ix_scheduled_followups_unstarted", "started_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str | None] = mapped_column(
        String(limits.IDEMPOTENCY_KEY), nullable=True, unique=True
    )
    """``api:{key}`` from a caller, ``session:{session}:{template id}`` from a completed
    session: a repeated request finds the follow-up it scheduled."""
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    template_id: Mapped[int | None] = mapped_column(
        ForeignKey("templates.id", ondelete="SET NULL"), nullable=True, index=True
    )
    template_name: Mapped[str] = mapped_column(String(limits.MESSAGE_TEMPLATE_NAME))
    """Kept when the template is deleted: the schedule still says what it was."""
    channel: Mapped[str] = mapped_column(String(limits.CHANNEL))
    session_id: Mapped[str | None] = mapped_column(
        String(limits.SERVICE_SESSION_ID), nullable=True, index=True
    )
    scheduled_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    status: Mapped[str] = mapped_column(String(limits.SCHEDULE_STATUS), index=True)
    variables: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    credits_reserved: Mapped[int] = mapped_column(Integer, default=0)
    credits_charged: Mapped[int] = mapped_column(Integer, default=0)
    message_key: Mapped[str] = mapped_column(String(limits.IDEMPOTENCY_KEY))
    """The outbox key its message is sent under (``scheduled:{id}:send``)."""
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """When its workflow was started; None until then (a process that stopped in between
    leaves it for the next sweep)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ServiceSession(Base):
    """A consultation the business held with a contact, as ``POST /v1/sessions/{id}/complete``
    reported it: what its follow-ups say (``session_date``, ``guidance_summary``) and the
    mark that they were scheduled once."""

    __tablename__ = "service_sessions"

    session_id: Mapped[str] = mapped_column(String(limits.SERVICE_SESSION_ID), primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    service_type: Mapped[str | None] = mapped_column(String(limits.SERVICE_TYPE), nullable=True)
    completed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    guidance_summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StoredSettings(Base):
    """A group of settings operators edit through the API (``followup``), as JSON."""

    __tablename__ = "stored_settings"

    key: Mapped[str] = mapped_column(String(limits.SETTING_KEY), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
