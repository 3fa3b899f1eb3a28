"""What automation runs read and do outside their workflows: the rule and the contact as they
are when the run is due, the message rendered for that contact, a contact updated, a webhook
called, the run's row written; and what watches and reminders time themselves by.

A due run asks ``plan_run`` rather than trusting what it was started with: the rule may have
been switched off, changed or deleted, the contact's status may have moved on, in the days
it slept. The original system checked conditions once, when the event came in.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.failures import as_application_error
from domain.automation_runs import (
    BookingPlan,
    BookingStatus,
    MessageDraft,
    RunPlan,
    RunRecord,
    RunStatus,
    WatchPlan,
    WebhookCall,
)
from domain.automations import Action, AutomationRule, AutomationType
from domain.channels import WHATSAPP_CHANNELS, ChannelName, Template
from domain.conditions import why_not
from domain.events import Trigger, merge_fields
from domain.templates import MessageTemplate, TemplateError, approved_template, render
from integrations.errors import ProviderError
from integrations.webhooks import WebhookClient
from store.automations import facts_of
from store.delivery import ContactView
from store.events import FieldsTooLarge, NoContact
from store.repo import Store

_SINGLE_BRACE = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")
"""The original's ``{lead_name}``: each name written so is declared, so one without a value
is refused by name instead of reaching the customer as ``{lead_nmae}``."""

FALLBACKS = {
    AutomationType.lead_followup: "Hi {first_name}, just checking in: is there anything we "
    "can help you with?",
    AutomationType.booking_reminder: "Hi {first_name}, a reminder of your booking on "
    "{booking_time}.",
    AutomationType.confirmation: "Hi {first_name}, thank you: you are all set.",
    AutomationType.post_session: "Hi {first_name}, thank you for today's session. How did it go?",
    AutomationType.crm_update: "Hi {first_name}, just checking in.",
}
"""What is sent when a rule has no text and the LLM is missing or fails."""


BOOKING_TRIGGERS = frozenset(
    {Trigger.booking_created, Trigger.booking_reminder_hours, "booking_rescheduled"}
)
"""Runs for a booking that is still to come: a cancelled or moved one makes them moot."""


PRIVATE_EVENT_DATA = frozenset({"notes"})
"""Event data never shown to the LLM: a booking's notes are the operator's, not the customer's."""


@dataclass
class PlanRequest:
    workflow_id: str
    rule_id: int
    contact_id: int
    trigger: str
    event_data: dict[str, Any] = field(default_factory=dict)
    test: bool = False
    """A test by hand runs a switched-off rule too (to try it before switching it on)."""


@dataclass
class ContactChange:
    contact_id: int
    changes: dict[str, Any]
    """A rule's ``set``: status, fields (merged), tags (added), remove_tags."""


class AutomationActivities:
    def __init__(self, store: Store, webhooks: WebhookClient) -> None:
        self.store = store
        self.webhooks = webhooks

    def all(self) -> list[Any]:
        return [
            self.plan_run,
            self.record_run,
            self.update_contact,
            self.call_webhook,
            self.watch_plan,
            self.booking_plan,
        ]

    @activity.defn
    async def record_run(self, record: RunRecord) -> None:
        await asyncio.to_thread(self.store.record_run, record)

    @activity.defn
    async def watch_plan(self, contact_id: int) -> WatchPlan:
        return await asyncio.to_thread(self.store.watch_plan, contact_id)

    @activity.defn
    async def booking_plan(self, booking_id: int) -> BookingPlan:
        return await asyncio.to_thread(self.store.booking_plan, booking_id)

    @activity.defn
    async def plan_run(self, request: PlanRequest) -> RunPlan:
        stored = await asyncio.to_thread(self.store.get_automation, request.rule_id)
        if stored is None:
            return _skip(f"rule {request.rule_id} was deleted")
        rule = stored.rule
        if not rule.enabled and not request.test:
            return _skip(f"rule {request.rule_id} was switched off")
        contact = await asyncio.to_thread(self.store.contact_for_rule, request.contact_id)
        if contact is None:
            return _skip(f"contact {request.contact_id} was deleted")
        problem = why_not(rule.conditions, facts_of(contact), request.event_data)
        if problem is not None:
            return _skip(f"its conditions no longer hold: {problem}")
        moved_on = await self._moved_on(request)
        if moved_on is not None:
            return _skip(moved_on)
        plan = RunPlan(go=True, action=rule.action.value, rule_name=rule.name)
        if rule.action is Action.update_contact:
            changes = rule.set.model_dump(exclude_none=True) if rule.set is not None else {}
            plan.contact_update = changes
            return plan
        if rule.action is Action.webhook:
            assert rule.webhook_url is not None
            plan.webhook = WebhookCall(
                rule_id=stored.id,
                url=rule.webhook_url,
                body=_webhook_body(request, stored.id, rule, contact),
                delivery_id=request.workflow_id,
            )
            return plan
        return await self._message_plan(plan, rule, contact, request)

    async def _moved_on(self, request: PlanRequest) -> str | None:
        """Why what the run answers is over, or None: a booking cancelled, moved or begun
        (its reminder, its confirmation), a quiet spell ended by a message either way."""
        data = request.event_data
        if isinstance(data.get("booking_id"), int) and request.trigger in BOOKING_TRIGGERS:
            booking = await asyncio.to_thread(self.store.get_booking, data["booking_id"])
            if booking is None or booking.status != BookingStatus.booked:
                state = "deleted" if booking is None else booking.status.value
                return f"booking {data['booking_id']} was {state}"
            if request.trigger == Trigger.booking_reminder_hours:
                if booking.starts_at != _moment(data.get("starts_at")):
                    return f"booking {booking.id} was moved"
                if booking.starts_at <= datetime.now(UTC):
                    return f"booking {booking.id} has begun"
        if request.trigger == Trigger.no_contact_days and "quiet_since" in data:
            plan = await asyncio.to_thread(self.store.watch_plan, request.contact_id)
            if plan.last_contact != _moment(data["quiet_since"]):
                return "the contact and the shop exchanged messages since the quiet spell began"
        return None

    async def _message_plan(
        self, plan: RunPlan, rule: AutomationRule, contact: ContactView, request: PlanRequest
    ) -> RunPlan:
        assert rule.channel is not None
        to = contact.address_on(rule.channel)
        if to is None:
            return _skip(f"contact {contact.id} has no {rule.channel.value} address")
        values = template_values(contact, request.event_data)
        draft = MessageDraft(channel=rule.channel, to=to, message_class=rule.message_class)
        try:
            if rule.template is not None:
                stored = await asyncio.to_thread(self.store.get_template, rule.template)
                if stored is None:
                    return _fail(f"template {rule.template!r} no longer exists")
                rendered = render(stored.template, contact.locale, values)
                draft.text, draft.subject = rendered.text, rendered.subject or ""
                if rule.channel in WHATSAPP_CHANNELS:
                    draft.template = _approved(stored.template, rule.channel, values)
            elif rule.message_template:
                rendered = render(inline_template(rule, rule.message_template), None, values)
                draft.text = rendered.text
            else:
                draft.needs_writing = True
                draft.prompt = writing_prompt(rule, contact, request.event_data)
                draft.fallback = render(
                    inline_template(rule, FALLBACKS[rule.type]), None, values
                ).text
        except TemplateError as error:
            return _fail(f"the message cannot be written: {error}")
        if rule.channel == ChannelName.email and not draft.subject:
            draft.subject = rule.name
        plan.draft = draft
        return plan

    @activity.defn
    async def update_contact(self, change: ContactChange) -> str:
        """What changed, in words (the run's message)."""
        changes = dict(change.changes)
        contact = await asyncio.to_thread(self.store.contact_for_rule, change.contact_id)
        if contact is None:
            return f"contact {change.contact_id} was deleted"
        columns: dict[str, Any] = {}
        if "status" in changes:
            columns["status"] = changes["status"]
        added, removed = changes.get("tags", []), set(changes.get("remove_tags", []))
        if added or removed:
            tags = [t for t in contact.tags if t not in removed]
            columns["tags"] = tags + [t for t in added if t not in tags]
        fields_patch = changes.get("fields") or None
        if not columns and fields_patch is None:
            return "nothing to change"
        try:
            await asyncio.to_thread(
                self.store.patch_lead, change.contact_id, columns, fields_patch=fields_patch
            )
        except NoContact:
            return f"contact {change.contact_id} was deleted"
        except FieldsTooLarge as error:
            raise ApplicationError(str(error), type="Rejected", non_retryable=True) from error
        said = [f"{name} set" for name in columns]
        if fields_patch:
            merged = merge_fields(contact.fields, fields_patch)
            said.append(f"fields {', '.join(sorted(k for k in fields_patch if k in merged))} set")
        return "; ".join(said)

    @activity.defn
    async def call_webhook(self, call: WebhookCall) -> int:
        stored = await asyncio.to_thread(self.store.get_automation, call.rule_id)
        if stored is None or stored.rule.webhook_secret is None:
            raise ApplicationError(
                f"rule {call.rule_id} was deleted or lost its webhook secret",
                type="Rejected",
                non_retryable=True,
            )
        secret = stored.rule.webhook_secret
        try:
            return await self.webhooks.post(call.url, secret, call.body, call.delivery_id)
        except ProviderError as error:
            raise as_application_error(error) from error


def _moment(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _skip(reason: str) -> RunPlan:
    return RunPlan(go=False, status=RunStatus.skipped, reason=reason)


def _fail(reason: str) -> RunPlan:
    return RunPlan(go=False, status=RunStatus.failed, reason=reason)


def _approved(
    template: MessageTemplate, channel: ChannelName, values: dict[str, str]
) -> Template | None:
    return approved_template(template, channel, values)


def template_values(contact: ContactView, event_data: dict[str, Any]) -> dict[str, str]:
    """What a rule's text may say: the contact (``name``, ``first_name``, the original's
    ``lead_name``, ``status``, ``source``, ``fields.x`` as ``field_x``), the event's data by
    its own names, and a booking's ``booking_time``."""
    name = contact.name or ""
    values: dict[str, str] = {
        "name": name,
        "lead_name": name,
        "first_name": name.split()[0] if name.split() else "there",
        "email": contact.email or "",
        "phone": contact.phone or "",
        "status": contact.status or "",
        "lead_status": contact.status or "",
        "source": contact.lead_source or "",
    }
    for key, value in contact.fields.items():
        if isinstance(value, str | int | float | bool):
            values[f"field_{key}"] = str(value)
    for key, value in event_data.items():
        if isinstance(value, str | int | float | bool) and key not in values:
            values[key] = str(value)
    if isinstance(event_data.get("starts_at"), str):
        values["booking_time"] = _booking_time(event_data["starts_at"], contact.timezone)
    return values


def _booking_time(starts_at: str, zone: str | None) -> str:
    moment = datetime.fromisoformat(starts_at)
    if zone:
        try:
            moment = moment.astimezone(ZoneInfo(zone))
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return f"{moment:%A %d %B at %H:%M} ({moment:%Z})".replace(" ()", "")


def inline_template(rule: AutomationRule, text: str) -> MessageTemplate:
    """A rule's own text as a template: ``{{name}}`` and the original's ``{name}``."""
    assert rule.channel is not None
    declared = sorted(set(_SINGLE_BRACE.findall(text)))
    return MessageTemplate(
        name="rule", channel=rule.channel, variants={"en": text}, variables=declared
    )


def writing_prompt(rule: AutomationRule, contact: ContactView, event_data: dict[str, Any]) -> str:
    """What the LLM is asked for a rule without a text."""
    lines = [
        f"Write a short {rule.channel.value if rule.channel else ''} message from a small "
        f"business to a customer, for the automation '{rule.name}' ({rule.type.value}, "
        f"triggered by {rule.trigger}).",
        "Plain text, friendly, at most three sentences, no placeholders, no subject line.",
        f"Customer's first name: {(contact.name or '').split()[0] if contact.name else '(unknown)'}",
    ]
    if contact.status:
        lines.append(f"Lead status: {contact.status}")
    shown = ", ".join(
        f"{k}: {v}"
        for k, v in event_data.items()
        if v not in (None, "") and k not in PRIVATE_EVENT_DATA
    )
    if shown:
        lines.append(f"What happened: {shown}")
    return "\n".join(lines)


def _webhook_body(
    request: PlanRequest, rule_id: int, rule: AutomationRule, contact: ContactView
) -> dict[str, Any]:
    return {
        "automation": {"id": rule_id, "name": rule.name, "type": rule.type.value},
        "run": request.workflow_id,
        "event": {"type": request.trigger, "data": request.event_data},
        "contact": {
            "id": contact.id,
            "name": contact.name,
            "email": contact.email,
            "phone": contact.phone,
            "status": contact.status,
            "source": contact.lead_source,
            "tags": contact.tags,
            "fields": contact.fields,
        },
    }
