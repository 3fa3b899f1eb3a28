"""Scheduling paid follow-ups: from a request to a ``ScheduledFollowUp`` workflow.

Everything a request can get wrong is refused here, before anything is stored: an unknown
or inactive template, a channel the contact has no address on (no SMS to an e-mail
address), a placeholder without a value, a time in the past. The store then checks the
limits and the balance and writes the schedule with its reservation in one transaction;
only then is the workflow started. A process that stops in between leaves a schedule
without a workflow, which ``sweep_forever`` starts; one that cannot reach Temporal at all
gives the credits back and says so. Moving and cancelling are updates to the running
workflow, which alone knows whether the message is already on its way.

The HTTP service owns one ``FollowupScheduler`` (``app.state.scheduler``); the ``/v1`` routes
and the original system's ``/api/followup`` routes both call it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from domain.channels import ChannelName
from domain.credits import InsufficientCredits
from domain.scheduled_followups import (
    PAST_GRACE,
    FollowupSettings,
    Reschedule,
    ScheduledFollowUpInput,
    ScheduleStatus,
    SettleRequest,
    followup_values,
    price_of,
    workflow_id_for,
)
from domain.templates import MissingVariables, TemplateError, render
from store.credits import NoSuchContact
from store.delivery import ContactView
from store.events import EventView
from store.repo import Store
from store.scheduled_followups import (
    LimitExceeded,
    NewSchedule,
    ScheduleFilter,
    ScheduleView,
    SessionView,
)
from store.templates import StoredTemplate
from workflows import scheduled_followup
from workflows.scheduled_followup import ScheduledFollowUp

log = logging.getLogger(__name__)

ClientGetter = Callable[[], Awaitable[Client]]
EventDispatch = Callable[[EventView], Awaitable[bool]]
SWEEP_EVERY = timedelta(seconds=5)
SWEEP_GRACE = timedelta(seconds=10)
"""A schedule younger than this is left to the request that stored it."""
STRANDED_EVERY = timedelta(minutes=5)
STRANDED_AFTER = timedelta(minutes=30)
"""A follow-up still pending or sending this long after its time is asked about: its
workflow may have been terminated (the Web UI's Terminate runs no clean-up), which would
leave its credits reserved."""
UPDATE_PATIENCE = timedelta(seconds=15)
"""How long moving or cancelling waits for a worker to take the change: no worker running
is an answer (504) rather than a request that hangs."""


class Refused(Exception):
    """A request that cannot be done as asked: ``status`` is the HTTP status to answer,
    ``loc`` the field at fault (FastAPI's shape), the message a sentence naming it."""

    def __init__(self, status: int, message: str, loc: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.loc = loc
        self.message = message


@dataclass(frozen=True)
class ScheduleRequest:
    contact_id: int
    template: str | None = None
    template_id: int | None = None
    channel: ChannelName | None = None
    scheduled_at: datetime | None = None
    """None: the template's ``send_after`` from now."""
    session_id: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    key: str | None = None
    """``api:{key}`` from a caller; a repeat returns the first schedule."""


@dataclass(frozen=True)
class SessionResult:
    session: SessionView
    created: bool
    scheduled: list[ScheduleView]
    skipped: list[tuple[str, str]]
    """(template, why) of the session's templates that were not scheduled."""


class FollowupScheduler:
    def __init__(
        self,
        store: Store,
        client: ClientGetter,
        task_queue: str,
        *,
        dispatch: EventDispatch | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.task_queue = task_queue
        self.dispatch = dispatch

    # --- scheduling -------------------------------------------------------------------

    async def schedule(
        self, request: ScheduleRequest, *, now: datetime | None = None
    ) -> tuple[ScheduleView, bool]:
        """Store and start one follow-up; True when it was new. Raises ``Refused``."""
        now = now or datetime.now(UTC)
        settings = await asyncio.to_thread(self.store.followup_settings)
        new = await asyncio.to_thread(self._checked, request, settings, now)
        try:
            view, created = await asyncio.to_thread(
                self.store.schedule_followup, new, settings, now=now
            )
        except InsufficientCredits as exc:
            raise Refused(402, str(exc)) from None
        except LimitExceeded as exc:
            raise Refused(409, str(exc)) from None
        except NoSuchContact as exc:
            raise Refused(404, str(exc), ("contact_id",)) from None
        if created or view.started_at is None:
            await self._start_or_give_back(view)
        return view, created

    def _checked(
        self, request: ScheduleRequest, settings: FollowupSettings, now: datetime
    ) -> NewSchedule:
        contact = self.store.get_contact(request.contact_id)
        if contact is None:
            raise Refused(404, f"no contact {request.contact_id}", ("contact_id",))
        stored = self._template(request)
        template = stored.template
        channel = request.channel or template.channel
        if contact.address_on(channel) is None:
            raise Refused(
                422,
                f"contact {contact.id} has no {channel.value} address; "
                "give it one, or choose a channel it has",
                ("channel",),
            )
        session = self.store.get_session(request.session_id) if request.session_id else None
        if session is not None and session.contact_id != contact.id:
            # Its summary would be written into this contact's message, and this contact's
            # follow-ups would count against that session's limit.
            raise Refused(
                409,
                f"session_id: session {session.session_id[:80]!r} was reported for another contact",
                ("session_id",),
            )
        scheduled_at = request.scheduled_at or now + template.send_after
        if scheduled_at < now - PAST_GRACE:
            raise Refused(422, "scheduled_at is in the past", ("scheduled_at",))
        check_render(stored, contact, session, request.variables, channel)
        return NewSchedule(
            contact_id=contact.id,
            template_id=stored.id,
            template_name=template.name,
            channel=channel.value,
            scheduled_at=max(scheduled_at, now),
            cost=price_of(template.credits_cost, settings),
            session_id=request.session_id,
            variables=dict(request.variables),
            key=request.key,
        )

    def _template(self, request: ScheduleRequest) -> StoredTemplate:
        if request.template_id is not None:
            stored = self.store.get_template_by_id(request.template_id)
            loc, named = ("template_id",), str(request.template_id)
        else:
            stored = self.store.get_template(request.template or "")
            loc, named = ("template",), repr(request.template)
        if stored is None:
            raise Refused(422, f"no template {named}", loc)
        if not stored.template.is_active:
            raise Refused(422, f"template {stored.template.name!r} is not active", loc)
        return stored

    async def _start_or_give_back(self, view: ScheduleView) -> None:
        try:
            await self.start(view)
        except (RPCError, OSError, RuntimeError) as exc:
            log.warning("follow-up %s could not be started: %s", view.id, exc)
            await asyncio.to_thread(
                self.store.abandon_schedule,
                view.id,
                "could not be started: Temporal is unreachable",
            )
            raise Refused(
                503, "Temporal is not reachable; nothing was scheduled and no credits were kept"
            ) from exc

    async def start(self, view: ScheduleView) -> None:
        """Start the follow-up's workflow (once: its id is the schedule's) and mark it."""
        client = await self.client()
        request = ScheduledFollowUpInput(
            schedule_id=view.id,
            contact_id=view.contact_id,
            channel=ChannelName(view.channel),
            scheduled_at=view.scheduled_at,
            credits_reserved=view.credits_reserved,
        )
        try:
            await client.start_workflow(
                ScheduledFollowUp.run,
                request,
                task_queue=self.task_queue,
                **scheduled_followup.start_options(request).options(),
            )
        except WorkflowAlreadyStartedError:
            pass
        await asyncio.to_thread(self.store.mark_started, view.id)

    async def sweep_forever(self) -> None:
        """Start the schedules a stopped process stored without starting them; now and
        then, settle those whose workflow was terminated."""
        last_stranded = datetime.min.replace(tzinfo=UTC)
        while True:
            await asyncio.sleep(SWEEP_EVERY.total_seconds())
            try:
                await self.sweep()
                if datetime.now(UTC) - last_stranded >= STRANDED_EVERY:
                    last_stranded = datetime.now(UTC)
                    await self.settle_stranded()
            except Exception as exc:  # logged; the next pass tries again
                log.warning("scheduled follow-ups sweep: %s", exc)

    async def settle_stranded(self, *, now: datetime | None = None) -> int:
        """Settle the follow-ups whose workflow ended without settling (terminated, or
        timed out): by the outbox, as the workflow would have. Returns how many."""
        now = now or datetime.now(UTC)
        views = await asyncio.to_thread(self.store.overdue_schedules, now - STRANDED_AFTER)
        client = await self.client() if views else None
        settled = 0
        for view in views:
            assert client is not None
            try:
                described = await client.get_workflow_handle(view.workflow_id).describe()
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                described = None
            if described is not None and described.status == WorkflowExecutionStatus.RUNNING:
                continue
            ended = "its workflow ended without settling (terminated?)"
            await asyncio.to_thread(
                self.store.settle_schedule,
                SettleRequest(
                    schedule_id=view.id,
                    workflow_id=view.workflow_id,
                    message_key=view.message_key,
                    ending=ScheduleStatus.failed,
                    reason=ended,
                ),
            )
            log.warning("follow-up %s settled by the sweep: %s", view.id, ended)
            settled += 1
        return settled

    async def sweep(self) -> int:
        before = datetime.now(UTC) - SWEEP_GRACE
        views = await asyncio.to_thread(self.store.unstarted_schedules, before)
        for view in views:
            await self.start(view)
        return len(views)

    # --- moving and cancelling -----------------------------------------------------------

    async def reschedule(
        self, schedule_id: int, scheduled_at: datetime, *, now: datetime | None = None
    ) -> ScheduleView:
        now = now or datetime.now(UTC)
        view = await self._pending(schedule_id, "moved")
        if scheduled_at < now - PAST_GRACE:
            raise Refused(422, "scheduled_at is in the past", ("scheduled_at",))
        refusal = await asyncio.to_thread(
            self.store.reschedule_refusal, schedule_id, scheduled_at, now=now
        )
        if refusal is not None:
            raise Refused(409, refusal)
        handle = (await self.client()).get_workflow_handle(view.workflow_id)
        try:
            await asyncio.wait_for(
                handle.execute_update(
                    ScheduledFollowUp.reschedule, Reschedule(max(scheduled_at, now))
                ),
                UPDATE_PATIENCE.total_seconds(),
            )
        except TimeoutError:
            raise _no_worker() from None
        except WorkflowUpdateFailedError as exc:
            raise Refused(409, _update_refusal(exc)) from None
        except RPCError as exc:
            raise _gone(exc) from exc
        return await self._view(schedule_id)

    async def cancel(self, schedule_id: int, reason: str = "cancelled") -> ScheduleView:
        view = await self._pending(schedule_id, "cancelled")
        if view.started_at is None:
            await self.start(view)
        handle = (await self.client()).get_workflow_handle(view.workflow_id)
        try:
            await asyncio.wait_for(
                handle.execute_update(ScheduledFollowUp.cancel, reason),
                UPDATE_PATIENCE.total_seconds(),
            )
        except TimeoutError:
            raise _no_worker() from None
        except WorkflowUpdateFailedError as exc:
            raise Refused(409, _update_refusal(exc)) from None
        except RPCError as exc:
            raise _gone(exc) from exc
        return await self._view(schedule_id)

    async def _pending(self, schedule_id: int, what: str) -> ScheduleView:
        view = await self._view(schedule_id)
        if view.status != ScheduleStatus.pending:
            raise Refused(
                409, f"follow-up {schedule_id} is {view.status.value}; it can no longer be {what}"
            )
        return view

    async def _view(self, schedule_id: int) -> ScheduleView:
        view = await asyncio.to_thread(self.store.get_schedule, schedule_id)
        if view is None:
            raise Refused(404, f"no follow-up {schedule_id}")
        return view

    # --- sessions ----------------------------------------------------------------------

    async def complete_session(
        self,
        session_id: str,
        *,
        contact_id: int,
        service_type: str | None,
        completed_at: datetime,
        guidance_summary: str | None,
        now: datetime | None = None,
    ) -> SessionResult:
        """Keep the session once, raise ``session_completed`` for automation rules, and
        schedule the active ``session_followup`` templates for its service type (when
        ``auto_followup_enabled``) at their ``send_after``. A repeat schedules nothing more:
        it answers the session's follow-ups as they are."""
        now = now or datetime.now(UTC)
        if await asyncio.to_thread(self.store.get_contact, contact_id) is None:
            raise Refused(404, f"contact_id: no contact {contact_id}", ("contact_id",))
        session, created = await asyncio.to_thread(
            lambda: self.store.record_session(
                session_id,
                contact_id=contact_id,
                service_type=service_type,
                completed_at=completed_at,
                guidance_summary=guidance_summary,
            )
        )
        if not created:
            earlier = await asyncio.to_thread(
                lambda: self.store.list_schedules(ScheduleFilter(session_id=session.session_id))
            )
            return SessionResult(session, created, earlier, [])
        await self._raise_completed(session)
        settings = await asyncio.to_thread(self.store.followup_settings)
        scheduled: list[ScheduleView] = []
        skipped: list[tuple[str, str]] = []
        if not settings.auto_followup_enabled:
            return SessionResult(
                session, created, scheduled, [("*", "auto_followup_enabled is off")]
            )
        templates = await asyncio.to_thread(
            self.store.session_followup_templates, session.service_type
        )
        for stored in templates:
            request = ScheduleRequest(
                contact_id=session.contact_id,
                template_id=stored.id,
                scheduled_at=max(session.completed_at + stored.template.send_after, now),
                session_id=session.session_id,
                key=f"session:{session.session_id}:{stored.id}",
            )
            try:
                view, _ = await self.schedule(request, now=now)
            except Refused as refused:
                skipped.append((stored.template.name, refused.message))
                continue
            scheduled.append(view)
        return SessionResult(session, created, scheduled, skipped)

    async def _raise_completed(self, session: SessionView) -> None:
        event, _ = await asyncio.to_thread(
            lambda: self.store.raise_event(
                "session_completed",
                data={"session_id": session.session_id, "service_type": session.service_type},
                contact_id=session.contact_id,
                key=f"session:{session.session_id}",
                now=session.completed_at,
            )
        )
        if self.dispatch is not None:
            await self.dispatch(event)


def check_render(
    stored: StoredTemplate,
    contact: ContactView,
    session: SessionView | None,
    variables: dict[str, str],
    channel: ChannelName,
) -> None:
    """Render the follow-up now as it would be sent, so a missing value is a 422 today,
    not a failed follow-up in three days."""
    values = followup_values(
        user_name=contact.name,
        user_email=contact.email,
        timezone=contact.timezone,
        session_completed_at=session.completed_at if session else None,
        service_type=session.service_type if session else None,
        guidance_summary=session.guidance_summary if session else None,
        variables=variables,
    )
    try:
        render(stored.template, contact.locale, values, channel=channel)
    except MissingVariables as exc:
        names = ", ".join(exc.names)
        raise Refused(
            422,
            f"template {stored.template.name!r} needs {names}, which the contact and session "
            f"do not give; pass them in variables",
            ("variables", exc.names[0]),
        ) from None
    except TemplateError as exc:
        raise Refused(422, f"template {stored.template.name!r}: {exc}", ("template",)) from None


def _update_refusal(error: WorkflowUpdateFailedError) -> str:
    cause = error.cause
    return getattr(cause, "message", None) or str(cause or error)


def _no_worker() -> Refused:
    return Refused(
        504,
        f"no worker took the change within {UPDATE_PATIENCE.seconds} s; it applies when one "
        "does, unless the follow-up is sent first",
    )


def _gone(error: RPCError) -> Refused:
    if error.status == RPCStatusCode.NOT_FOUND:
        return Refused(409, "the follow-up's workflow has ended; it can no longer be changed")
    return Refused(503, "Temporal is not reachable; nothing was changed")


__all__ = ["FollowupScheduler", "Refused", "ScheduleRequest", "SessionResult", "workflow_id_for"]
