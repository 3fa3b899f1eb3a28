"""Store operations of scheduled follow-ups and completed sessions: a mixin of ``Store``.

A schedule and its reservation are written in one transaction that holds the contact's
lock, after the limits and the balance were checked in it; a follow-up's reservation is
settled once (``settle_schedule``), by what the outbox says happened to its message. So a
credit is never spent twice, nor kept for a message that never left, whichever process
stopped in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select, update

from domain.credits import EntryKind, InsufficientCredits
from domain.scheduled_followups import (
    COUNTED_STATUSES,
    FollowupSettings,
    ScheduleStatus,
    ScheduleUpdate,
    Settled,
    SettleRequest,
    StatusesSeen,
    limit_refusal,
    workflow_id_for,
)
from domain.status import OutboxStatus
from store.credits import NoSuchContact, add_entry, ledger_balance, read_followup_settings
from store.db import insert_new
from store.delivery import lock_contact
from store.models import (
    Contact,
    ContactChannel,
    CreditEntry,
    DeliveryEvent,
    OutboxMessage,
    ScheduledFollowup,
    ServiceSession,
    utcnow,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

SENT_OUTBOX = (OutboxStatus.sent, OutboxStatus.delivered, OutboxStatus.read, OutboxStatus.sandboxed)


class LimitExceeded(Exception):
    """A follow-up that would break one of the settings' limits (the message names it)."""


@dataclass(frozen=True)
class NewSchedule:
    contact_id: int
    template_id: int | None
    template_name: str
    channel: str
    scheduled_at: datetime
    cost: int
    """Credits to reserve (0 when charging is off)."""
    session_id: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    key: str | None = None


@dataclass(frozen=True)
class ScheduleView:
    id: int
    workflow_id: str
    contact_id: int
    template_id: int | None
    template_name: str
    channel: str
    session_id: str | None
    scheduled_at: datetime
    status: ScheduleStatus
    variables: dict[str, str]
    credits_reserved: int
    credits_charged: int
    message_key: str
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None
    failure_reason: str | None
    started_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: ScheduledFollowup) -> ScheduleView:
        return cls(
            id=row.id,
            workflow_id=workflow_id_for(row.id),
            contact_id=row.contact_id,
            template_id=row.template_id,
            template_name=row.template_name,
            channel=row.channel,
            session_id=row.session_id,
            scheduled_at=row.scheduled_at,
            status=ScheduleStatus(row.status),
            variables=dict(row.variables or {}),
            credits_reserved=row.credits_reserved,
            credits_charged=row.credits_charged,
            message_key=row.message_key,
            sent_at=row.sent_at,
            delivered_at=row.delivered_at,
            read_at=row.read_at,
            failure_reason=row.failure_reason,
            started_at=row.started_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@dataclass(frozen=True)
class SessionView:
    session_id: str
    contact_id: int
    service_type: str | None
    completed_at: datetime
    guidance_summary: str | None

    @classmethod
    def of(cls, row: ServiceSession) -> SessionView:
        return cls(
            session_id=row.session_id,
            contact_id=row.contact_id,
            service_type=row.service_type,
            completed_at=row.completed_at,
            guidance_summary=row.guidance_summary,
        )


@dataclass(frozen=True)
class ScheduleFilter:
    contact_id: int | None = None
    status: ScheduleStatus | None = None
    template: str | None = None
    channel: str | None = None
    session_id: str | None = None
    scheduled_from: datetime | None = None
    scheduled_to: datetime | None = None


def _neighbours(
    session: Session, contact_id: int, at: datetime, gap: timedelta, excluding: int | None
) -> list[datetime]:
    if gap <= timedelta(0):
        return []
    query = select(ScheduledFollowup.scheduled_at).where(
        ScheduledFollowup.contact_id == contact_id,
        ScheduledFollowup.status.in_([s.value for s in COUNTED_STATUSES]),
        ScheduledFollowup.scheduled_at > at - gap,
        ScheduledFollowup.scheduled_at < at + gap,
    )
    if excluding is not None:
        query = query.where(ScheduledFollowup.id != excluding)
    return list(session.scalars(query))


def _in_session(session: Session, session_id: str | None) -> int:
    if session_id is None:
        return 0
    return int(
        session.scalar(
            select(func.count()).where(
                ScheduledFollowup.session_id == session_id,
                ScheduledFollowup.status.in_([s.value for s in COUNTED_STATUSES]),
            )
        )
        or 0
    )


class ScheduleStore:
    sessions: sessionmaker[Session]

    def schedule_followup(
        self, new: NewSchedule, settings: FollowupSettings, *, now: datetime | None = None
    ) -> tuple[ScheduleView, bool]:
        """Check the limits and the balance, then store the schedule and reserve its cost,
        all under the contact's lock. With ``new.key``, a repeat returns the first schedule
        and False. Raises ``LimitExceeded``, ``InsufficientCredits``, ``NoSuchContact``."""
        now = now or utcnow()
        with self.sessions.begin() as session:
            lock_contact(session, new.contact_id)
            if new.key is not None:
                seen = session.scalar(
                    select(ScheduledFollowup).where(ScheduledFollowup.idempotency_key == new.key)
                )
                if seen is not None:
                    return ScheduleView.of(seen), False
            if session.get(Contact, new.contact_id) is None:
                raise NoSuchContact(new.contact_id)
            refusal = limit_refusal(
                settings,
                scheduled_at=new.scheduled_at,
                now=now,
                in_session=_in_session(session, new.session_id),
                neighbours=_neighbours(
                    session,
                    new.contact_id,
                    new.scheduled_at,
                    timedelta(hours=settings.min_interval_hours),
                    None,
                ),
            )
            if refusal is not None:
                raise LimitExceeded(refusal)
            if new.cost > 0:
                balance = ledger_balance(session, new.contact_id).balance
                if balance < new.cost:
                    raise InsufficientCredits(balance, new.cost)
            row = ScheduledFollowup(
                idempotency_key=new.key,
                contact_id=new.contact_id,
                template_id=new.template_id,
                template_name=new.template_name,
                channel=new.channel,
                session_id=new.session_id,
                scheduled_at=new.scheduled_at,
                status=ScheduleStatus.pending.value,
                variables=new.variables,
                credits_reserved=new.cost,
                credits_charged=0,
                message_key="",
            )
            session.add(row)
            session.flush()
            workflow_id = workflow_id_for(row.id)
            row.message_key = f"{workflow_id}:send"
            if new.cost > 0:
                add_entry(
                    session,
                    contact_id=new.contact_id,
                    kind=EntryKind.reserve,
                    amount=new.cost,
                    reason=f"reserved for follow-up {row.id} ({new.template_name})",
                    key=f"{workflow_id}:reserve",
                    reference=workflow_id,
                    schedule_id=row.id,
                )
            session.flush()
            return ScheduleView.of(row), True

    def reschedule_refusal(
        self, schedule_id: int, scheduled_at: datetime, *, now: datetime | None = None
    ) -> str | None:
        """Why the follow-up may not move to ``scheduled_at`` (a limit, named), or None."""
        now = now or utcnow()
        with self.sessions() as session:
            row = session.get(ScheduledFollowup, schedule_id)
            if row is None:
                return "no such follow-up"
            settings = read_followup_settings(session)
            return limit_refusal(
                settings,
                scheduled_at=scheduled_at,
                now=now,
                in_session=0,
                neighbours=_neighbours(
                    session,
                    row.contact_id,
                    scheduled_at,
                    timedelta(hours=settings.min_interval_hours),
                    schedule_id,
                ),
            )

    def get_schedule(self, schedule_id: int) -> ScheduleView | None:
        with self.sessions() as session:
            row = session.get(ScheduledFollowup, schedule_id)
            return None if row is None else ScheduleView.of(row)

    def list_schedules(
        self, where: ScheduleFilter, *, limit: int = 100, offset: int = 0
    ) -> list[ScheduleView]:
        """Latest scheduled time first."""
        query = select(ScheduledFollowup)
        if where.contact_id is not None:
            query = query.where(ScheduledFollowup.contact_id == where.contact_id)
        if where.status is not None:
            query = query.where(ScheduledFollowup.status == where.status.value)
        if where.template is not None:
            query = query.where(ScheduledFollowup.template_name == where.template)
        if where.channel is not None:
            query = query.where(ScheduledFollowup.channel == where.channel)
        if where.session_id is not None:
            query = query.where(ScheduledFollowup.session_id == where.session_id)
        if where.scheduled_from is not None:
            query = query.where(ScheduledFollowup.scheduled_at >= where.scheduled_from)
        if where.scheduled_to is not None:
            query = query.where(ScheduledFollowup.scheduled_at < where.scheduled_to)
        query = query.order_by(ScheduledFollowup.scheduled_at.desc(), ScheduledFollowup.id.desc())
        with self.sessions() as session:
            rows = session.scalars(query.limit(limit).offset(offset))
            return [ScheduleView.of(row) for row in rows]

    def unstarted_schedules(self, created_before: datetime, limit: int = 100) -> list[ScheduleView]:
        """Pending schedules whose workflow was never started (the process that stored them
        stopped first), oldest first."""
        with self.sessions() as session:
            rows = session.scalars(
                select(ScheduledFollowup)
                .where(
                    ScheduledFollowup.started_at.is_(None),
                    ScheduledFollowup.created_at < created_before,
                    ScheduledFollowup.status == ScheduleStatus.pending.value,
                )
                .order_by(ScheduledFollowup.created_at)
                .limit(limit)
            )
            return [ScheduleView.of(row) for row in rows]

    def overdue_schedules(self, due_before: datetime, limit: int = 100) -> list[ScheduleView]:
        """Started schedules still pending or sending long after their time: those whose
        workflow may have been terminated (a run ends in its workflow, never here)."""
        with self.sessions() as session:
            rows = session.scalars(
                select(ScheduledFollowup)
                .where(
                    ScheduledFollowup.status.in_(
                        [ScheduleStatus.pending.value, ScheduleStatus.sending.value]
                    ),
                    ScheduledFollowup.started_at.is_not(None),
                    ScheduledFollowup.scheduled_at < due_before,
                )
                .order_by(ScheduledFollowup.scheduled_at)
                .limit(limit)
            )
            return [ScheduleView.of(row) for row in rows]

    def mark_started(self, schedule_id: int, *, at: datetime | None = None) -> None:
        with self.sessions.begin() as session:
            session.execute(
                update(ScheduledFollowup)
                .where(ScheduledFollowup.id == schedule_id, ScheduledFollowup.started_at.is_(None))
                .values(started_at=at or utcnow())
            )

    def begin_sending(self, schedule_id: int) -> ScheduleView | None:
        """Its time came: ``pending`` becomes ``sending`` (and stays whatever else it is),
        and the schedule is read as it is now, in one transaction."""
        with self.sessions.begin() as session:
            session.execute(
                update(ScheduledFollowup)
                .where(
                    ScheduledFollowup.id == schedule_id,
                    ScheduledFollowup.status == ScheduleStatus.pending.value,
                )
                .values(status=ScheduleStatus.sending.value, updated_at=utcnow())
            )
            row = session.get(ScheduledFollowup, schedule_id)
            return None if row is None else ScheduleView.of(row)

    def record_schedule(self, change: ScheduleUpdate) -> ScheduleView | None:
        """The workflow's word on where the follow-up is: its status (never back from a
        final one), a new time, a failure's reason."""
        with self.sessions.begin() as session:
            row = session.get(ScheduledFollowup, change.schedule_id, with_for_update=True)
            if row is None:
                return None
            if change.scheduled_at is not None:
                row.scheduled_at = change.scheduled_at
            if change.status is not None and row.status in (
                ScheduleStatus.pending,
                ScheduleStatus.sending,
            ):
                row.status = change.status.value
            if change.failure_reason is not None:
                row.failure_reason = change.failure_reason
            session.flush()
            return ScheduleView.of(row)

    def abandon_schedule(self, schedule_id: int, reason: str) -> None:
        """A schedule whose workflow could not be started: failed, its credits released."""
        contact_id = self._contact_of(schedule_id)
        if contact_id is None:
            return
        with self.sessions.begin() as session:
            lock_contact(session, contact_id)
            row = session.get(ScheduledFollowup, schedule_id, populate_existing=True)
            assert row is not None
            if row.status != ScheduleStatus.pending or row.started_at is not None:
                return
            _release(session, row, reason)
            row.status = ScheduleStatus.failed.value
            row.failure_reason = reason

    def settle_schedule(self, request: SettleRequest) -> Settled:
        """Settle the follow-up's reservation once, by its message's outbox row: sent (or
        sandboxed) -> captured; otherwise released, or captured where the settings keep
        credits for that ending (``refund_on_cancel``, ``refund_on_failure``). A repeat
        returns what the first settled."""
        contact_id = self._contact_of(request.schedule_id)
        if contact_id is None:
            return Settled(status=request.ending, credits_charged=0, reason="no such follow-up")
        with self.sessions.begin() as session:
            lock_contact(session, contact_id)
            row = session.get(ScheduledFollowup, request.schedule_id, populate_existing=True)
            assert row is not None
            settlement_key = f"{request.workflow_id}:settle"
            settled = session.scalar(
                select(CreditEntry.id).where(CreditEntry.idempotency_key == settlement_key)
            )
            if settled is not None or row.status not in (
                ScheduleStatus.pending,
                ScheduleStatus.sending,
            ):
                return Settled(
                    status=ScheduleStatus(row.status),
                    credits_charged=row.credits_charged,
                    reason=row.failure_reason or "",
                    sent_at=row.sent_at,
                )
            settings = read_followup_settings(session)
            outbox = session.scalar(
                select(OutboxMessage).where(OutboxMessage.idempotency_key == request.message_key)
            )
            if outbox is not None and outbox.status in SENT_OUTBOX:
                _capture(session, row, settings, settlement_key, request.message_key, "sent")
                row.status = ScheduleStatus.sent.value
                row.sent_at = outbox.sent_at or outbox.updated_at
                return Settled(ScheduleStatus.sent, row.credits_charged, sent_at=row.sent_at)
            ending, reason = request.ending, request.reason
            if outbox is not None and outbox.status in (
                OutboxStatus.unknown,
                OutboxStatus.sending,
            ):
                ending = ScheduleStatus.failed
                reason = (
                    "the worker stopped during the provider call; whether it arrived is unknown"
                )
            refund = (
                settings.refund_on_cancel
                if ending == ScheduleStatus.cancelled
                else settings.refund_on_failure
            )
            if refund:
                _release(session, row, reason or ending.value, key=settlement_key)
            else:
                why = (
                    "refund_on_cancel"
                    if ending == ScheduleStatus.cancelled
                    else "refund_on_failure"
                )
                _capture(
                    session, row, settings, settlement_key, None, f"{ending.value}; {why} is off"
                )
            row.status = ending.value
            row.failure_reason = reason or None
            return Settled(ending, row.credits_charged, reason=reason)

    def schedule_statuses(self, schedule_id: int) -> StatusesSeen:
        """Bring the follow-up up to its message's reported statuses (delivered, read, or a
        failure after sending, refunded where ``refund_on_failure``), and say where it is."""
        contact_id = self._contact_of(schedule_id)
        if contact_id is None:
            return StatusesSeen(status=ScheduleStatus.failed)
        with self.sessions.begin() as session:
            lock_contact(session, contact_id)
            row = session.get(ScheduledFollowup, schedule_id, populate_existing=True)
            assert row is not None
            outbox = session.scalar(
                select(OutboxMessage).where(OutboxMessage.idempotency_key == row.message_key)
            )
            if outbox is None or outbox.provider_message_id is None:
                return _seen(row)
            times = dict(
                session.execute(
                    select(DeliveryEvent.status, func.min(DeliveryEvent.occurred_at))
                    .where(DeliveryEvent.provider_message_id == outbox.provider_message_id)
                    .group_by(DeliveryEvent.status)
                ).all()
            )
            read_at = times.get(OutboxStatus.read.value)
            delivered_at = times.get(OutboxStatus.delivered.value) or read_at
            if delivered_at is not None and row.delivered_at is None:
                row.delivered_at = delivered_at
            if read_at is not None and row.read_at is None:
                row.read_at = read_at
            if row.status in (ScheduleStatus.sent, ScheduleStatus.delivered, ScheduleStatus.read):
                if outbox.status == OutboxStatus.failed and row.read_at is None:
                    row.status = ScheduleStatus.failed.value
                    row.failure_reason = outbox.error or "the provider reported it failed"
                    settings = read_followup_settings(session)
                    if settings.refund_on_failure and row.credits_charged > 0:
                        add_entry(
                            session,
                            contact_id=row.contact_id,
                            kind=EntryKind.adjust,
                            amount=row.credits_charged,
                            reason=f"refund: follow-up {row.id} was not delivered",
                            key=f"{workflow_id_for(row.id)}:refund",
                            reference=workflow_id_for(row.id),
                            schedule_id=row.id,
                            message_key=row.message_key,
                        )
                        row.credits_charged = 0
                elif row.read_at is not None:
                    row.status = ScheduleStatus.read.value
                elif row.delivered_at is not None:
                    row.status = ScheduleStatus.delivered.value
            session.flush()
            return _seen(row)

    def contact_by_email(self, email: str) -> int | None:
        """The contact known by this e-mail address (the original system's users are known
        by theirs), or None: never created here, a follow-up needs credits first."""
        with self.sessions() as session:
            found = session.scalar(
                select(Contact.id).where(Contact.email == email).order_by(Contact.id).limit(1)
            )
            if found is None:
                found = session.scalar(
                    select(ContactChannel.contact_id).where(
                        ContactChannel.channel == "email", ContactChannel.address == email
                    )
                )
            return found

    def open_schedules_for_template(self, template_id: int) -> int:
        """Follow-ups of this template still to be sent: the template may not go meanwhile."""
        with self.sessions() as session:
            return int(
                session.scalar(
                    select(func.count()).where(
                        ScheduledFollowup.template_id == template_id,
                        ScheduledFollowup.status.in_(["pending", "sending"]),
                    )
                )
                or 0
            )

    def _contact_of(self, schedule_id: int) -> int | None:
        """Read before a transaction that locks the contact (the lock comes first in it)."""
        with self.sessions() as session:
            return session.scalar(
                select(ScheduledFollowup.contact_id).where(ScheduledFollowup.id == schedule_id)
            )

    # --- sessions -----------------------------------------------------------------------

    def record_session(
        self,
        session_id: str,
        *,
        contact_id: int,
        service_type: str | None,
        completed_at: datetime,
        guidance_summary: str | None,
    ) -> tuple[SessionView, bool]:
        """Keep a completed session once: a repeat returns the first and False."""
        with self.sessions.begin() as session:
            inserted = session.connection().scalar(
                insert_new(session, ServiceSession, ["session_id"])
                .values(
                    session_id=session_id,
                    contact_id=contact_id,
                    service_type=service_type,
                    completed_at=completed_at,
                    guidance_summary=guidance_summary,
                    created_at=utcnow(),
                )
                .returning(ServiceSession.session_id)
            )
            row = session.get(ServiceSession, session_id, populate_existing=True)
            assert row is not None
            return SessionView.of(row), inserted is not None

    def get_session(self, session_id: str) -> SessionView | None:
        with self.sessions() as session:
            row = session.get(ServiceSession, session_id)
            return None if row is None else SessionView.of(row)


def _seen(row: ScheduledFollowup) -> StatusesSeen:
    refunded = row.status == ScheduleStatus.failed and row.credits_charged == 0
    return StatusesSeen(
        status=ScheduleStatus(row.status),
        delivered_at=row.delivered_at,
        read_at=row.read_at,
        credits_charged=row.credits_charged,
        refunded=refunded,
    )


def _release(
    session: Session, row: ScheduledFollowup, reason: str, *, key: str | None = None
) -> None:
    workflow_id = workflow_id_for(row.id)
    if row.credits_reserved > 0:
        add_entry(
            session,
            contact_id=row.contact_id,
            kind=EntryKind.release,
            amount=row.credits_reserved,
            reason=f"released: follow-up {row.id} {reason}",
            key=key or f"{workflow_id}:settle",
            reference=workflow_id,
            schedule_id=row.id,
        )
    row.credits_charged = 0


def _capture(
    session: Session,
    row: ScheduledFollowup,
    settings: FollowupSettings,
    key: str,
    message_key: str | None,
    why: str,
) -> None:
    workflow_id = workflow_id_for(row.id)
    if row.credits_reserved > 0:
        add_entry(
            session,
            contact_id=row.contact_id,
            kind=EntryKind.capture,
            amount=row.credits_reserved,
            reason=f"follow-up {row.id} {why}",
            key=key,
            reference=workflow_id,
            schedule_id=row.id,
            message_key=message_key or row.message_key,
            unit_price=settings.credit_price,
            currency=settings.currency,
        )
    row.credits_charged = row.credits_reserved
