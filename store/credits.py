"""Store operations of the credits ledger and the follow-up settings: a mixin of ``Store``.

Every write that can lower a balance takes the contact's lock first (``lock_contact``) and
adds the ledger up inside that transaction, so concurrent requests are serialised per
contact and the balance never goes below zero, on PostgreSQL and on SQLite alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import case, func, select

from domain.credits import Balance, EntryKind, InsufficientCredits, Movement, balance_of
from domain.scheduled_followups import FollowupSettings
from store.db import insert_new
from store.delivery import lock_contact
from store.models import Contact, CreditEntry, StoredSettings, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

FOLLOWUP_SETTINGS = "followup"
OPERATOR_KEY_PREFIX = "api:"


def operator_key(contact_id: int, key: str) -> str:
    """An operator's idempotency key as stored: one contact's, so the same key given for
    another contact (a platform's "welcome-gift" for each new user) is a new grant, not a
    repeat that answers with the first contact's entry."""
    return f"{OPERATOR_KEY_PREFIX}{contact_id}:{key}"


class NoSuchContact(Exception):
    def __init__(self, contact_id: int) -> None:
        super().__init__(f"no contact {contact_id}")
        self.contact_id = contact_id


@dataclass(frozen=True)
class EntryView:
    id: int
    contact_id: int
    kind: EntryKind
    amount: int
    reason: str
    reference: str | None
    idempotency_key: str
    schedule_id: int | None
    created_at: datetime

    @classmethod
    def of(cls, row: CreditEntry) -> EntryView:
        key = row.idempotency_key
        return cls(
            id=row.id,
            contact_id=row.contact_id,
            kind=EntryKind(row.kind),
            amount=row.amount,
            reason=row.reason,
            reference=row.reference,
            idempotency_key=key.removeprefix(operator_key(row.contact_id, "")),
            schedule_id=row.schedule_id,
            created_at=row.created_at,
        )


def ledger_balance(session: Session, contact_id: int) -> Balance:
    """The contact's balance, added up from its entries in this transaction."""
    # A refund is an ``adjust`` that names its follow-up; grouped by the one expression
    # (PostgreSQL wants the very same one in SELECT and GROUP BY).
    refund = case((CreditEntry.schedule_id.is_(None), 0), else_=1).label("refund")
    rows = session.execute(
        select(CreditEntry.kind, refund, func.sum(CreditEntry.amount))
        .where(CreditEntry.contact_id == contact_id)
        .group_by(CreditEntry.kind, refund)
    )
    return balance_of(
        Movement(EntryKind(kind), int(total or 0), kind == EntryKind.adjust and bool(named))
        for kind, named, total in rows
    )


def add_entry(
    session: Session,
    *,
    contact_id: int,
    kind: EntryKind,
    amount: int,
    reason: str,
    key: str,
    reference: str | None = None,
    schedule_id: int | None = None,
    message_key: str | None = None,
    unit_price: Decimal | None = None,
    currency: str | None = None,
) -> bool:
    """Append an entry unless one with ``key`` is stored; True when it was appended."""
    stored = session.connection().scalar(
        insert_new(session, CreditEntry, ["idempotency_key"])
        .values(
            contact_id=contact_id,
            kind=kind.value,
            amount=amount,
            reason=reason[:255],
            reference=reference,
            idempotency_key=key,
            schedule_id=schedule_id,
            message_key=message_key,
            unit_price=unit_price,
            currency=currency,
            created_at=utcnow(),
        )
        .returning(CreditEntry.id)
    )
    return stored is not None


def read_followup_settings(session: Session) -> FollowupSettings:
    row = session.get(StoredSettings, FOLLOWUP_SETTINGS)
    return FollowupSettings() if row is None else FollowupSettings.model_validate(row.value)


class CreditStore:
    sessions: sessionmaker[Session]

    # --- settings ---------------------------------------------------------------------

    def followup_settings(self) -> FollowupSettings:
        """As stored, or the defaults for what never was."""
        with self.sessions() as session:
            return read_followup_settings(session)

    def save_followup_settings(self, settings: FollowupSettings) -> FollowupSettings:
        with self.sessions.begin() as session:
            value = settings.model_dump(mode="json")
            row = session.get(StoredSettings, FOLLOWUP_SETTINGS, with_for_update=True)
            if row is None:
                session.add(StoredSettings(key=FOLLOWUP_SETTINGS, value=value))
            else:
                row.value = value
            return settings

    # --- the ledger -------------------------------------------------------------------

    def credit_balance(self, contact_id: int) -> Balance:
        with self.sessions() as session:
            return ledger_balance(session, contact_id)

    def credit_entries(
        self, contact_id: int, *, limit: int = 50, before: int | None = None
    ) -> list[EntryView]:
        """Newest first; ``before``: entries older than that entry id (the next page)."""
        query = select(CreditEntry).where(CreditEntry.contact_id == contact_id)
        if before is not None:
            query = query.where(CreditEntry.id < before)
        with self.sessions() as session:
            rows = session.scalars(query.order_by(CreditEntry.id.desc()).limit(limit))
            return [EntryView.of(row) for row in rows]

    def add_credits(
        self,
        contact_id: int,
        kind: EntryKind,
        amount: int,
        *,
        reason: str,
        key: str,
        reference: str | None = None,
    ) -> tuple[EntryView, Balance, bool]:
        """An operator's ``grant`` (amount > 0) or ``adjust`` (either sign), once per
        ``key``: a repeat returns the first entry and False, whatever else it says.
        Raises ``NoSuchContact``, or ``InsufficientCredits`` for an adjustment below zero."""
        if kind not in (EntryKind.grant, EntryKind.adjust):
            raise ValueError(f"{kind} entries are the follow-ups' own")
        stored_key = operator_key(contact_id, key)
        with self.sessions.begin() as session:
            lock_contact(session, contact_id)
            if session.get(Contact, contact_id) is None:
                raise NoSuchContact(contact_id)
            seen = session.scalar(
                select(CreditEntry).where(CreditEntry.idempotency_key == stored_key)
            )
            if seen is not None:
                return EntryView.of(seen), ledger_balance(session, contact_id), False
            balance = ledger_balance(session, contact_id)
            if balance.balance + amount < 0:
                raise InsufficientCredits(balance.balance, -amount)
            add_entry(
                session,
                contact_id=contact_id,
                kind=kind,
                amount=amount,
                reason=reason,
                key=stored_key,
                reference=reference,
            )
            row = session.scalar(
                select(CreditEntry).where(CreditEntry.idempotency_key == stored_key)
            )
            assert row is not None
            return EntryView.of(row), ledger_balance(session, contact_id), True
