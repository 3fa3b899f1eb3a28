"""The store's operations, as small synchronous methods (activities run them in a thread).

Every method opens its own short transaction: nothing holds a connection across an HTTP call
or an LLM call, which was what made the original scripts' batch jobs fragile.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from domain import limits
from domain.automation_runs import is_quiet_run
from domain.status import OutboxStatus
from store.analytics import AnalyticsStore
from store.automations import AutomationStore
from store.bookings import BookingStore
from store.credits import CreditStore
from store.db import make_engine, make_sessionmaker
from store.delivery import (
    ContactStore,
    DeliveryStore,
    FrequencyCap,
    FrequencyCapped,
    lock_contact,
    marketing_times,
)
from store.events import EventStore, NoContact
from store.inbound import InboundStore
from store.menus import MenuStore
from store.models import ApiToken, Contact, FollowUp, OutboxMessage, utcnow
from store.scheduled_followups import ScheduleStore
from store.templates import TemplateStore


class Role(StrEnum):
    admin = "admin"
    user = "user"
    contact = "contact"
    """One contact's own token, which a platform embedding Nudge hands to its end user: it
    sees that contact only, and none of the operator's routes."""


@dataclass(frozen=True)
class OutboxRow:
    idempotency_key: str
    workflow_id: str
    channel: str
    recipient: str
    message_class: str
    body: str
    status: OutboxStatus
    provider_message_id: str | None
    error: str | None
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    contact_id: int | None = None
    status_at: datetime | None = None
    updated_at: datetime | None = None
    """When the row last changed: for a ``sending`` row, when its attempt took it."""
    not_before: datetime | None = None
    """A ``held`` row's time to go (kept after the hold, with ``held_reason``)."""
    held_reason: str | None = None

    @classmethod
    def of(cls, row: OutboxMessage) -> OutboxRow:
        return cls(
            idempotency_key=row.idempotency_key,
            workflow_id=row.workflow_id,
            channel=row.channel,
            recipient=row.recipient,
            message_class=row.message_class,
            body=row.body,
            status=OutboxStatus(row.status),
            provider_message_id=row.provider_message_id,
            error=row.error,
            attempts=row.attempts,
            created_at=row.created_at,
            sent_at=row.sent_at,
            contact_id=row.contact_id,
            status_at=row.status_at,
            updated_at=row.updated_at,
            not_before=row.not_before,
            held_reason=row.held_reason,
        )


@dataclass(frozen=True)
class FollowUpRecord:
    workflow_id: str
    run_id: str
    helpdesk: str
    conversation: str
    status: str
    started_at: datetime
    finished_at: datetime
    steps: list[dict[str, Any]] = field(default_factory=list)
    fallback_used: bool = False
    tag_removed: bool = False
    failure_reason: str | None = None
    contact_id: int | None = None
    id: int | None = None

    @classmethod
    def of(cls, row: FollowUp) -> FollowUpRecord:
        return cls(
            id=row.id,
            workflow_id=row.workflow_id,
            run_id=row.run_id,
            helpdesk=row.helpdesk,
            conversation=row.conversation,
            status=row.status,
            started_at=row.started_at,
            finished_at=row.finished_at,
            steps=list(row.steps or []),
            fallback_used=row.fallback_used,
            tag_removed=row.tag_removed,
            failure_reason=row.failure_reason,
            contact_id=row.contact_id,
        )


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    role: Role
    contact_id: int | None = None
    """Set for a ``contact`` token only: the one contact it may see."""


@dataclass(frozen=True)
class TokenRecord:
    """A token as ``nudge token list`` shows it: everything but the secret."""

    id: int
    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    contact_id: int | None = None

    @classmethod
    def of(cls, row: ApiToken) -> TokenRecord:
        return cls(
            id=row.id,
            name=row.name,
            role=Role(row.role),
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            contact_id=row.contact_id,
        )

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


TOKEN_NAME_MAX = 120
"""The ``api_tokens.name`` column's length."""
LAST_USED_RESOLUTION = timedelta(minutes=1)
"""``last_used_at`` is written at most this often per token: enough to tell a live token from
a forgotten one, without turning every API read into a database write."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Store(
    DeliveryStore,
    InboundStore,
    ContactStore,
    MenuStore,
    EventStore,
    TemplateStore,
    AutomationStore,
    BookingStore,
    CreditStore,
    ScheduleStore,
    AnalyticsStore,
):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions: sessionmaker[Session] = make_sessionmaker(engine)

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(make_engine(url))

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    # --- contacts -------------------------------------------------------------------

    def upsert_contact(
        self,
        source: str,
        external_id: str,
        *,
        name: str | None = None,
        email: str | None = None,
        phone: str | None = None,
    ) -> int:
        for _ in range(2):  # a concurrent insert of the same contact wins the race once
            with self.sessions.begin() as session:
                contact = session.scalar(
                    select(Contact).where(
                        Contact.source == source, Contact.external_id == external_id
                    )
                )
                if contact is None:
                    contact = Contact(source=source, external_id=external_id)
                    session.add(contact)
                contact.name = name or contact.name
                contact.email = email or contact.email
                contact.phone = phone or contact.phone
                try:
                    session.flush()
                except IntegrityError:
                    session.rollback()
                    continue
                return contact.id
        raise RuntimeError(f"could not upsert contact {source}:{external_id}")

    # --- outbox ---------------------------------------------------------------------

    def claim_outbox(
        self,
        key: str,
        *,
        workflow_id: str,
        channel: str,
        recipient: str,
        body: str,
        message_class: str,
        contact_id: int | None = None,
        cap: FrequencyCap | None = None,
        template_name: str | None = None,
    ) -> OutboxRow:
        """Insert the row as ``pending`` unless it exists; either way return it as stored.

        The unique key makes this the single decision point: a retried or replayed send finds
        the row of its first attempt and acts on its status instead of sending again.

        With ``cap`` (marketing to a known contact) the contact's other marketing messages
        are counted and the row claimed in one transaction that holds the contact's lock,
        so concurrent sends cannot all take the last place under the cap; a refused claim
        raises ``FrequencyCapped`` with the time to ask again. A row already past
        ``pending`` is returned as it is, uncounted.

        A ``held`` row (``hold_outbox``) is this send waiting out the policy: it counted
        toward no cap, and is claimed like a new row, moved to ``pending`` with the body as
        it is now.
        """
        try:  # the usual case is a new key: insert first, look only when it exists
            with self.sessions.begin() as session:
                if cap is not None:
                    lock_contact(session, cap.contact_id)
                    claimed = session.scalar(
                        select(OutboxMessage).where(OutboxMessage.idempotency_key == key)
                    )
                    unclaimed = (OutboxStatus.pending, OutboxStatus.held)
                    if claimed is not None and claimed.status not in unclaimed:
                        return OutboxRow.of(claimed)
                    times = marketing_times(session, cap.contact_id, cap.since, excluding=key)
                    not_before = cap.until(times)
                    if not_before is not None:
                        raise FrequencyCapped(not_before)
                    if claimed is not None:
                        if claimed.status == OutboxStatus.held:
                            claimed.status, claimed.body = OutboxStatus.pending, body
                            claimed.recipient = recipient
                            session.flush()
                        return OutboxRow.of(claimed)
                row = _new_outbox_row(
                    key,
                    workflow_id,
                    channel,
                    recipient,
                    contact_id,
                    message_class,
                    body,
                    template_name,
                )
                session.add(row)
                session.flush()
                return OutboxRow.of(row)
        except IntegrityError:
            with self.sessions.begin() as session:  # held: claimed by compare-and-set
                taken = session.scalar(
                    update(OutboxMessage)
                    .where(
                        OutboxMessage.idempotency_key == key,
                        OutboxMessage.status == OutboxStatus.held,
                    )
                    .values(status=OutboxStatus.pending, body=body, recipient=recipient)
                    .returning(OutboxMessage)
                    .execution_options(synchronize_session=False)
                )
                if taken is not None:
                    return OutboxRow.of(taken)
            found = self.get_outbox(key)
            assert found is not None
            return found

    def hold_outbox(
        self,
        key: str,
        *,
        workflow_id: str,
        channel: str,
        recipient: str,
        body: str,
        message_class: str,
        not_before: datetime,
        reason: str,
        contact_id: int | None = None,
        template_name: str | None = None,
    ) -> OutboxRow:
        """Record that this send waits until ``not_before`` (quiet hours, the frequency cap):
        a ``held`` row, or the held row brought up to date. A row already claimed is left
        as it is. The send that ends the hold claims the row (``claim_outbox``); until then
        it counts toward no frequency cap."""
        reason = reason[: limits.HOLD_REASON]
        for _ in range(2):  # a concurrent hold or claim of the same key wins the race once
            with self.sessions.begin() as session:
                row = session.scalar(
                    select(OutboxMessage).where(OutboxMessage.idempotency_key == key)
                )
                if row is None:
                    row = _new_outbox_row(
                        key,
                        workflow_id,
                        channel,
                        recipient,
                        contact_id,
                        message_class,
                        body,
                        template_name,
                    )
                    row.status, row.not_before, row.held_reason = (
                        OutboxStatus.held,
                        not_before,
                        reason,
                    )
                    session.add(row)
                elif row.status == OutboxStatus.held:
                    row.not_before, row.held_reason = not_before, reason
                try:
                    session.flush()
                except IntegrityError:
                    session.rollback()
                    continue
                return OutboxRow.of(row)
        found = self.get_outbox(key)
        assert found is not None
        return found

    def get_outbox(self, key: str) -> OutboxRow | None:
        with self.sessions() as session:
            row = session.scalar(select(OutboxMessage).where(OutboxMessage.idempotency_key == key))
            return None if row is None else OutboxRow.of(row)

    def mark_outbox(
        self,
        key: str,
        status: OutboxStatus,
        *,
        provider_message_id: str | None = None,
        error: str | None = None,
    ) -> OutboxRow:
        """Set the row's status whatever it was. Marked ``sent`` with the provider's id, the
        row also takes the furthest status the provider reported before it had that id."""
        row = self._update_outbox(key, status, provider_message_id=provider_message_id, error=error)
        if row is None:
            raise KeyError(key)
        if (
            status == OutboxStatus.sent
            and provider_message_id is not None
            and self.apply_stored_status(provider_message_id)
        ):
            row = self.get_outbox(key)
            assert row is not None
        return row

    def take_outbox(
        self,
        key: str,
        status: OutboxStatus,
        *,
        expected: OutboxStatus = OutboxStatus.pending,
        error: str | None = None,
    ) -> OutboxRow | None:
        """Compare-and-set: move the row from ``expected`` to ``status`` only if it is still
        ``expected``; the row as updated, or None when another attempt moved it first.

        Two attempts of one send can run at once (Temporal starts a second when the first
        looks dead, and the first may still be alive): only the one that takes the row from
        ``pending`` to ``sending`` may call the provider.
        """
        return self._update_outbox(key, status, error=error, expected=expected)

    def _update_outbox(
        self,
        key: str,
        status: OutboxStatus,
        *,
        provider_message_id: str | None = None,
        error: str | None = None,
        expected: OutboxStatus | None = None,
    ) -> OutboxRow | None:
        # One UPDATE ... RETURNING: atomic without a row lock round trip, and cheap on the
        # send path, which marks every message twice.
        values: dict[str, Any] = {"status": status}
        if status == OutboxStatus.sending:
            values["attempts"] = OutboxMessage.attempts + 1
        if provider_message_id is not None:
            values["provider_message_id"] = provider_message_id
        if error is not None:
            values["error"] = error[:4000]
        if status in (OutboxStatus.sent, OutboxStatus.sandboxed):
            values["sent_at"] = func.coalesce(OutboxMessage.sent_at, utcnow())
        query = update(OutboxMessage).where(OutboxMessage.idempotency_key == key)
        if expected is not None:
            query = query.where(OutboxMessage.status == expected)
        with self.sessions.begin() as session:
            row = session.scalar(
                query.values(values)
                .returning(OutboxMessage)
                .execution_options(synchronize_session=False)
            )
            if row is not None and "sent_at" in values and row.contact_id is not None:
                _stamp_contacted(
                    session, row.contact_id, row.sent_at, exchange=not is_quiet_run(row.workflow_id)
                )
            return None if row is None else OutboxRow.of(row)

    def list_outbox(
        self,
        *,
        workflow_id: str | None = None,
        status: str | None = None,
        channel: str | None = None,
        message_class: str | None = None,
        contact_id: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[OutboxRow]:
        query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit).offset(offset)
        for column, value in (
            (OutboxMessage.workflow_id, workflow_id),
            (OutboxMessage.status, status),
            (OutboxMessage.channel, channel),
            (OutboxMessage.message_class, message_class),
            (OutboxMessage.contact_id, contact_id),
        ):
            if value is not None:
                query = query.where(column == value)
        with self.sessions() as session:
            return [OutboxRow.of(row) for row in session.scalars(query)]

    # --- follow-up outcomes -----------------------------------------------------------

    def record_followup(self, record: FollowUpRecord) -> int:
        """Upsert by (workflow id, run id): a retried recording activity writes one row."""
        with self.sessions.begin() as session:
            row = session.scalar(
                select(FollowUp).where(
                    FollowUp.workflow_id == record.workflow_id, FollowUp.run_id == record.run_id
                )
            )
            if row is None:
                row = FollowUp(workflow_id=record.workflow_id, run_id=record.run_id)
                session.add(row)
            row.helpdesk = record.helpdesk
            row.conversation = record.conversation
            row.contact_id = record.contact_id
            row.status = record.status
            row.steps = record.steps
            row.fallback_used = record.fallback_used
            row.tag_removed = record.tag_removed
            row.failure_reason = record.failure_reason
            row.started_at = record.started_at
            row.finished_at = record.finished_at
            session.flush()
            return row.id

    def list_followups(
        self,
        *,
        status: list[str] | None = None,
        conversation: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[FollowUpRecord]:
        query = select(FollowUp).order_by(FollowUp.finished_at.desc(), FollowUp.id.desc())
        if status:
            query = query.where(FollowUp.status.in_(status))
        if conversation:
            query = query.where(FollowUp.conversation == conversation)
        with self.sessions() as session:
            rows = session.scalars(query.limit(limit).offset(offset))
            return [FollowUpRecord.of(row) for row in rows]

    def latest_followups(
        self, helpdesk: str, conversations: list[str]
    ) -> dict[str, FollowUpRecord]:
        """The most recent outcome of each conversation that has one."""
        if not conversations:
            return {}
        query = (
            select(FollowUp)
            .where(FollowUp.helpdesk == helpdesk, FollowUp.conversation.in_(conversations))
            .order_by(FollowUp.finished_at.asc(), FollowUp.id.asc())
        )
        latest: dict[str, FollowUpRecord] = {}
        with self.sessions() as session:
            for row in session.scalars(query):
                latest[row.conversation] = FollowUpRecord.of(row)
        return latest

    # --- API tokens -----------------------------------------------------------------

    def create_token(
        self,
        role: Role,
        name: str = "",
        *,
        expires_at: datetime | None = None,
        contact_id: int | None = None,
    ) -> str:
        """The token itself, which exists only in the caller's hands: the table keeps its hash."""
        _, token = self.issue_token(role, name, expires_at=expires_at, contact_id=contact_id)
        return token

    def issue_token(
        self,
        role: Role,
        name: str = "",
        *,
        expires_at: datetime | None = None,
        contact_id: int | None = None,
    ) -> tuple[TokenRecord, str]:
        """``create_token`` with the stored record beside the token, for a caller that must
        say which token it made (its id) without ever reading the secret back.

        A ``contact`` token names an existing contact (``NoContact`` otherwise); any other
        role names none (``ValueError``), so no admin token is ever scoped by mistake."""
        name = name or f"{role.value} token"
        if len(name) > TOKEN_NAME_MAX:
            raise ValueError(f"name: at most {TOKEN_NAME_MAX} characters, not {len(name)}")
        if expires_at is not None and expires_at.tzinfo is None:
            raise ValueError("expires_at: give a time zone (UTC)")
        if role == Role.contact and contact_id is None:
            raise ValueError("contact_id: a contact token names its contact")
        if role != Role.contact and contact_id is not None:
            raise ValueError(f"contact_id: only a contact token names a contact, not {role.value}")
        token = "ndg_" + secrets.token_urlsafe(32)
        with self.sessions.begin() as session:
            if contact_id is not None and session.get(Contact, contact_id) is None:
                raise NoContact(contact_id)
            row = ApiToken(
                name=name,
                role=role,
                token_hash=hash_token(token),
                expires_at=expires_at,
                contact_id=contact_id,
            )
            session.add(row)
            session.flush()
            return TokenRecord.of(row), token

    def verify_token(self, token: str, *, now: datetime | None = None) -> TokenInfo | None:
        """The token's holder, or None for an unknown, revoked or expired token.

        Runs on every API request, so it only reads; ``last_used_at`` is written when it is
        ``LAST_USED_RESOLUTION`` old, and by a conditional UPDATE, so processes answering the
        same token at once still write it once."""
        now = now or utcnow()
        with self.sessions() as session:
            row = session.scalar(
                select(ApiToken).where(
                    ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None)
                )
            )
        if row is None or (row.expires_at is not None and row.expires_at <= now):
            return None
        stale = now - LAST_USED_RESOLUTION
        if row.last_used_at is None or row.last_used_at < stale:
            with self.sessions.begin() as session:
                session.execute(
                    update(ApiToken)
                    .where(
                        ApiToken.id == row.id,
                        (ApiToken.last_used_at.is_(None)) | (ApiToken.last_used_at < stale),
                    )
                    .values(last_used_at=now)
                )
        return TokenInfo(id=row.id, name=row.name, role=Role(row.role), contact_id=row.contact_id)

    def list_tokens(self) -> list[TokenRecord]:
        with self.sessions() as session:
            rows = session.scalars(select(ApiToken).order_by(ApiToken.id))
            return [TokenRecord.of(row) for row in rows]

    def revoke_token(self, token_id: int, *, now: datetime | None = None) -> TokenRecord | None:
        """The token as it now stands, None when there is no such id. Revoking twice keeps the
        first time: that is when access ended."""
        with self.sessions.begin() as session:
            row = session.get(ApiToken, token_id)
            if row is None:
                return None
            if row.revoked_at is None:
                row.revoked_at = now or utcnow()
            session.flush()
            return TokenRecord.of(row)


def _new_outbox_row(
    key: str,
    workflow_id: str,
    channel: str,
    recipient: str,
    contact_id: int | None,
    message_class: str,
    body: str,
    template_name: str | None = None,
) -> OutboxMessage:
    """A row claimed for sending (``pending``); a hold changes its status before adding it."""
    return OutboxMessage(
        idempotency_key=key,
        workflow_id=workflow_id,
        channel=channel,
        recipient=recipient,
        contact_id=contact_id,
        message_class=message_class,
        body=body,
        status=OutboxStatus.pending,
        attempts=0,
        template_name=template_name,
    )


def _stamp_contacted(
    session: Session, contact_id: int, at: datetime | None, *, exchange: bool
) -> None:
    """A message went to the contact: ``last_contacted_at`` moves to its time (never back),
    and ``last_exchange_at`` too unless it was a no-contact nudge (``exchange`` False)."""
    if at is None:
        return
    columns = [Contact.last_contacted_at, *([Contact.last_exchange_at] if exchange else [])]
    for column in columns:
        session.execute(
            update(Contact)
            .where(Contact.id == contact_id, (column.is_(None)) | (column < at))
            .values({column.key: at})
            .execution_options(synchronize_session=False)
        )
