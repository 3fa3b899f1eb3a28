"""What a scheduled follow-up does with the store: render its message when its time comes,
record where it is, settle its credits by what the outbox says, read its delivery statuses.

Each is a short store call; the workflow runs them as local activities. Every write is
idempotent (a key from the workflow id, never the run id), so a retry, a replay after a
worker died, or a reset does the same thing once.
"""

from __future__ import annotations

from typing import Any

from temporalio import activity

from activities.heartbeat import db
from domain.channels import ChannelName
from domain.scheduled_followups import (
    PreparedMessage,
    ScheduleUpdate,
    Settled,
    SettleRequest,
    StatusesSeen,
    followup_values,
    message_class_of,
)
from domain.templates import MessageTemplate, TemplateError, approved_template, render
from store.repo import Store
from store.scheduled_followups import ScheduleView
from store.templates import StoredTemplate


class ScheduledFollowUpActivities:
    def __init__(self, store: Store) -> None:
        self.store = store

    def all(self) -> list[Any]:
        return [
            self.prepare_followup,
            self.record_followup,
            self.settle_followup,
            self.followup_statuses,
        ]

    @activity.defn
    async def prepare_followup(self, schedule_id: int) -> PreparedMessage:
        """The message as it goes now: the template as it is now, in the contact's locale,
        to the contact's address on the follow-up's channel; or why it cannot go. The
        follow-up is ``sending`` from here on (moving or cancelling it is refused)."""
        schedule = await db(self.store.begin_sending, schedule_id)
        if schedule is None:
            return PreparedMessage(reason=f"follow-up {schedule_id} is not in the database")
        return await db(self._prepare, schedule)

    def _prepare(self, schedule: ScheduleView) -> PreparedMessage:
        contact = self.store.get_contact(schedule.contact_id)
        if contact is None:
            return PreparedMessage(reason=f"contact {schedule.contact_id} no longer exists")
        stored = self._template(schedule)
        if stored is None:
            return PreparedMessage(reason=f"template {schedule.template_name!r} was deleted")
        channel = ChannelName(schedule.channel)
        to = contact.address_on(channel)
        if to is None:
            return PreparedMessage(reason=f"the contact has no {channel.value} address")
        session = self.store.get_session(schedule.session_id) if schedule.session_id else None
        values = followup_values(
            user_name=contact.name,
            user_email=contact.email,
            timezone=contact.timezone,
            session_completed_at=session.completed_at if session else None,
            service_type=session.service_type if session else None,
            guidance_summary=session.guidance_summary if session else None,
            variables=schedule.variables,
        )
        template = stored.template
        try:
            rendered = render(template, contact.locale, values, channel=channel)
            approved = approved_template(template, channel, values)
        except TemplateError as exc:
            return PreparedMessage(reason=f"template {template.name!r}: {exc}")
        return PreparedMessage(
            to=to,
            text=rendered.text,
            subject=_subject(template, rendered.subject, rendered.locale_used, channel),
            message_class=message_class_of(template.template_type),
            template_name=template.name,
            locale=rendered.locale_used,
            approved=approved,
        )

    def _template(self, schedule: ScheduleView) -> StoredTemplate | None:
        if schedule.template_id is not None:
            return self.store.get_template_by_id(schedule.template_id)
        return None

    @activity.defn
    async def record_followup(self, change: ScheduleUpdate) -> None:
        await db(self.store.record_schedule, change)

    @activity.defn
    async def settle_followup(self, request: SettleRequest) -> Settled:
        return await db(self.store.settle_schedule, request)

    @activity.defn
    async def followup_statuses(self, schedule_id: int) -> StatusesSeen:
        return await db(self.store.schedule_statuses, schedule_id)


def _subject(
    template: MessageTemplate, subject: str | None, locale: str, channel: ChannelName
) -> str:
    """An e-mail's subject: the template's, else its title in that locale, else its name."""
    if channel != ChannelName.email:
        return ""
    return subject or template.titles.get(locale) or template.titles.get("en") or template.name
