"""Store operations of automation rules and their runs: a mixin of ``Store``.

A rule is kept whole (its validated body as JSON) with its trigger and switch copied into
indexed columns, so an event finds the rules it triggers with one indexed read. A rule's
counts (``times_triggered``, sent, suppressed, failed ...) are read from its runs, not kept
beside it: a count that is a query cannot drift from what happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.orm import Session

from domain.automation_runs import (
    FINAL_RUN,
    QuietRule,
    RunRecord,
    RunStatus,
    WatchPlan,
    rule_prefix,
)
from domain.automations import AutomationRule
from domain.conditions import ContactFacts, why_not
from domain.events import Trigger
from store.db import insert_new, retrying_conflicts
from store.delivery import ContactView, _contact_view
from store.models import (
    Automation,
    AutomationRun,
    BusinessEvent,
    Contact,
    ContactChannel,
    utcnow,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker


@dataclass(frozen=True)
class RuleStats:
    times_triggered: int = 0
    """Runs scheduled for the rule, whatever became of them."""
    last_triggered: datetime | None = None
    waiting: int = 0
    sent: int = 0
    done: int = 0
    skipped: int = 0
    suppressed: int = 0
    failed: int = 0


@dataclass(frozen=True)
class StoredRule:
    id: int
    rule: AutomationRule
    created_at: datetime
    updated_at: datetime
    stats: RuleStats = RuleStats()

    @classmethod
    def of(cls, row: Automation, stats: RuleStats | None = None) -> StoredRule:
        return cls(
            id=row.id,
            rule=AutomationRule.model_validate(row.rule),
            created_at=row.created_at,
            updated_at=row.updated_at,
            stats=stats or RuleStats(),
        )


@dataclass(frozen=True)
class RunView:
    id: int
    workflow_id: str
    automation_id: int | None
    automation_name: str
    contact_id: int
    occurrence: str
    event_id: int | None
    due_at: datetime
    status: RunStatus
    channel: str | None
    message: str | None
    reason: str | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, row: AutomationRun) -> RunView:
        return cls(
            id=row.id,
            workflow_id=row.workflow_id,
            automation_id=row.automation_id,
            automation_name=row.automation_name,
            contact_id=row.contact_id,
            occurrence=row.occurrence,
            event_id=row.event_id,
            due_at=row.due_at,
            status=RunStatus(row.status),
            channel=row.channel,
            message=row.message,
            reason=row.reason,
            created_at=row.created_at,
            finished_at=row.finished_at,
        )


def facts_of(contact: ContactView) -> ContactFacts:
    """What a rule's conditions read of a contact."""
    return ContactFacts(
        status=contact.status,
        source=contact.lead_source,
        tags=frozenset(contact.tags),
        fields=contact.fields,
    )


def _dump(rule: AutomationRule) -> dict[str, Any]:
    return rule.model_dump(mode="json", exclude_none=True)


class AutomationStore:
    sessions: sessionmaker[Session]

    # --- rules ----------------------------------------------------------------------

    def create_automation(self, rule: AutomationRule) -> StoredRule:
        with self.sessions.begin() as session:
            row = Automation(
                name=rule.name,
                type=rule.type.value,
                trigger=rule.trigger,
                enabled=rule.enabled,
                rule=_dump(rule),
            )
            session.add(row)
            session.flush()
            return StoredRule.of(row)

    def replace_automation(self, automation_id: int, rule: AutomationRule) -> StoredRule | None:
        """The rule, changed as a whole (``PATCH`` merges and validates before calling)."""
        with self.sessions.begin() as session:
            row = session.get(Automation, automation_id)
            if row is None:
                return None
            row.name, row.type, row.trigger = rule.name, rule.type.value, rule.trigger
            row.enabled, row.rule = rule.enabled, _dump(rule)
            row.updated_at = utcnow()
            session.flush()
            return StoredRule.of(row, _stats(session, [automation_id]).get(automation_id))

    def get_automation(self, automation_id: int) -> StoredRule | None:
        with self.sessions() as session:
            row = session.get(Automation, automation_id)
            if row is None:
                return None
            return StoredRule.of(row, _stats(session, [automation_id]).get(automation_id))

    def list_automations(self, *, trigger: str | None = None) -> list[StoredRule]:
        query = select(Automation).order_by(Automation.id)
        if trigger is not None:
            query = query.where(Automation.trigger == trigger)
        with self.sessions() as session:
            rows = list(session.scalars(query))
            stats = _stats(session, [row.id for row in rows])
            return [StoredRule.of(row, stats.get(row.id)) for row in rows]

    def delete_automation(self, automation_id: int) -> bool:
        with self.sessions.begin() as session:
            result = session.execute(delete(Automation).where(Automation.id == automation_id))
            return cast("CursorResult[Any]", result).rowcount > 0

    def enabled_rules(self, trigger: str) -> list[StoredRule]:
        """The switched-on rules an event of this type (or this timer trigger) runs."""
        query = (
            select(Automation)
            .where(Automation.trigger == trigger, Automation.enabled.is_(True))
            .order_by(Automation.id)
        )
        with self.sessions() as session:
            return [StoredRule.of(row) for row in session.scalars(query)]

    # --- runs -----------------------------------------------------------------------

    def schedule_run(self, record: RunRecord, rule_name: str) -> bool:
        """The run's row, ``waiting`` until ``due_at``; False when it exists already (the
        event was dispatched before: the run is not scheduled twice)."""
        with self.sessions.begin() as session:
            if session.get(Contact, record.contact_id) is None:
                return False
            statement = (
                insert_new(session, AutomationRun, ["workflow_id"])
                .values(**_run_values(record, rule_name), created_at=utcnow())
                .returning(AutomationRun.id)
            )
            return session.connection().scalar(statement) is not None

    def record_run(self, record: RunRecord) -> None:
        """The run's row as its workflow says now: created when a watch or a reminder
        started the run; once it has ended, it stays as it ended."""

        def write(session: Session) -> None:
            row = session.scalar(
                select(AutomationRun).where(AutomationRun.workflow_id == record.workflow_id)
            )
            if row is None:
                if session.get(Contact, record.contact_id) is None:
                    return  # the contact was deleted; nothing to report on
                rule = session.get(Automation, record.rule_id)
                name = rule.name if rule is not None else f"rule {record.rule_id}"
                session.add(AutomationRun(**_run_values(record, name), created_at=utcnow()))
                return
            if row.status in FINAL_RUN:
                return  # the first ending stands (a retried activity, a restarted reminder)
            row.status = record.status.value
            row.due_at = record.due_at
            for name in ("channel", "message", "reason", "finished_at"):
                value = getattr(record, name)
                if value is not None:
                    setattr(row, name, value)

        retrying_conflicts(self.sessions, write)

    def list_runs(
        self,
        *,
        automation_id: int | None = None,
        contact_id: int | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunView]:
        query = select(AutomationRun).order_by(
            AutomationRun.created_at.desc(), AutomationRun.id.desc()
        )
        if automation_id is not None:
            query = query.where(AutomationRun.automation_id == automation_id)
        if contact_id is not None:
            query = query.where(AutomationRun.contact_id == contact_id)
        if status is not None:
            query = query.where(AutomationRun.status == status)
        with self.sessions() as session:
            rows = session.scalars(query.limit(limit).offset(offset))
            return [RunView.of(row) for row in rows]

    def get_run(self, workflow_id: str) -> RunView | None:
        with self.sessions() as session:
            row = session.scalar(
                select(AutomationRun).where(AutomationRun.workflow_id == workflow_id)
            )
            return None if row is None else RunView.of(row)

    def waiting_runs(self, automation_id: int) -> list[str]:
        """The workflow ids of the rule's runs that have not acted yet; found by the rule's
        id in their workflow ids, so also once the rule is deleted (its runs keep their rows
        with no ``automation_id``)."""
        query = select(AutomationRun.workflow_id).where(
            AutomationRun.workflow_id.startswith(rule_prefix(automation_id), autoescape=True),
            AutomationRun.status == RunStatus.waiting,
        )
        with self.sessions() as session:
            return list(session.scalars(query))

    # --- what a run reads -----------------------------------------------------------

    def contact_for_rule(self, contact_id: int) -> ContactView | None:
        with self.sessions() as session:
            row = session.get(Contact, contact_id)
            return None if row is None else _contact_view(session, row)

    def watch_plan(self, contact_id: int) -> WatchPlan:
        """The ``no_contact_days`` rules that apply to the contact now (switched on, their
        conditions holding), and when its quiet spell began: the later of its last exchange
        (``last_exchange_at``: a message to it other than a no-contact nudge) and its last
        inbound message; its creation when there was neither."""
        with self.sessions() as session:
            row = session.get(Contact, contact_id)
            if row is None:
                return WatchPlan(exists=False)
            facts = facts_of(_contact_view(session, row))
            rules = [
                StoredRule.of(rule)
                for rule in session.scalars(
                    select(Automation)
                    .where(
                        Automation.trigger == Trigger.no_contact_days,
                        Automation.enabled.is_(True),
                    )
                    .order_by(Automation.id)
                )
            ]
            inbound = session.scalar(
                select(func.max(ContactChannel.last_inbound_at)).where(
                    ContactChannel.contact_id == contact_id
                )
            )
            contacts = [_aware(m) for m in (row.last_exchange_at, inbound) if m is not None]
            # Never contacted either way: the spell began when the contact was made.
            last = max(contacts) if contacts else _aware(row.created_at)
        return WatchPlan(
            exists=True,
            rules=[
                QuietRule(rule_id=r.id, after=r.rule.delay, repeat=r.rule.repeat)
                for r in rules
                if why_not(r.rule.conditions, facts, {}) is None
            ],
            last_contact=last,
        )

    def contact_ids(self, *, after: int = 0, limit: int = 1000) -> list[int]:
        """Contacts by id, a page at a time: a new quiet rule watches every one."""
        query = select(Contact.id).where(Contact.id > after).order_by(Contact.id).limit(limit)
        with self.sessions() as session:
            return list(session.scalars(query))

    # --- events not yet dispatched --------------------------------------------------

    def undispatched_events(
        self, *, before: datetime | None = None, contact_id: int | None = None, limit: int = 200
    ) -> list[int]:
        """Events (raised before ``before``, of ``contact_id``) whose rules were not started:
        just stored, or the process that stored them stopped first, or they were raised
        where no Temporal client is at hand (an inbound message, a menu's end event)."""
        query = (
            select(BusinessEvent.id)
            .where(BusinessEvent.dispatched_at.is_(None))
            .order_by(BusinessEvent.created_at, BusinessEvent.id)
            .limit(limit)
        )
        if before is not None:
            query = query.where(BusinessEvent.created_at < before)
        if contact_id is not None:
            query = query.where(BusinessEvent.contact_id == contact_id)
        with self.sessions() as session:
            return list(session.scalars(query))

    def mark_dispatched(self, event_id: int) -> None:
        with self.sessions.begin() as session:
            session.execute(
                update(BusinessEvent)
                .where(BusinessEvent.id == event_id)
                .values(dispatched_at=utcnow())
                .execution_options(synchronize_session=False)
            )


def _run_values(record: RunRecord, rule_name: str) -> dict[str, Any]:
    return {
        "workflow_id": record.workflow_id,
        "automation_id": record.rule_id,
        "automation_name": rule_name,
        "contact_id": record.contact_id,
        "occurrence": record.occurrence,
        "event_id": record.event_id,
        "due_at": record.due_at,
        "status": record.status.value,
        "channel": record.channel,
        "message": record.message,
        "reason": record.reason,
        "finished_at": record.finished_at,
    }


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _stats(session: Session, ids: list[int]) -> dict[int, RuleStats]:
    if not ids:
        return {}
    rows = session.execute(
        select(
            AutomationRun.automation_id,
            AutomationRun.status,
            func.count(),
            func.max(AutomationRun.created_at),
        )
        .where(AutomationRun.automation_id.in_(ids))
        .group_by(AutomationRun.automation_id, AutomationRun.status)
    )
    counts: dict[int, dict[str, int]] = {}
    latest: dict[int, datetime] = {}
    for automation_id, status, count, last in rows:
        if automation_id is None:
            continue
        counts.setdefault(automation_id, {})[status] = count
        if last is not None:
            last = _aware(last)
            latest[automation_id] = max(latest.get(automation_id, last), last)
    return {
        automation_id: RuleStats(
            times_triggered=sum(by_status.values()),
            last_triggered=latest.get(automation_id),
            waiting=by_status.get(RunStatus.waiting, 0) + by_status.get(RunStatus.running, 0),
            sent=by_status.get(RunStatus.sent, 0),
            done=by_status.get(RunStatus.done, 0),
            skipped=by_status.get(RunStatus.skipped, 0) + by_status.get(RunStatus.too_late, 0),
            suppressed=by_status.get(RunStatus.suppressed, 0),
            failed=by_status.get(RunStatus.failed, 0),
        )
        for automation_id, by_status in counts.items()
    }
