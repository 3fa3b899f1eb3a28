"""Store operations of WhatsApp menus: definitions, sessions, business events, fallback replies.

A mixin of ``Store``, like ``DeliveryStore``. The ``MenuConversation`` workflow calls these
through activities, which Temporal retries: every write here can run twice and leave one row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from domain.addresses import address_channel
from domain.menu_definition import MenuDefinition
from domain.status import SESSION_STATUSES, MenuStatus
from store.db import lock_for_writing, retrying_conflicts
from store.models import BusinessEvent, ContactChannel, FallbackReply, Menu, MenuSession

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker


@dataclass(frozen=True)
class MenuSessionView:
    id: int
    session_id: str
    workflow_id: str
    menu: str
    channel: str
    address: str
    status: str
    last_step: str | None
    context: dict[str, str]
    transcript: list[dict[str, str]]
    started_at: datetime
    ended_at: datetime | None

    @classmethod
    def of(cls, row: MenuSession) -> MenuSessionView:
        return cls(
            id=row.id,
            session_id=row.session_id,
            workflow_id=row.workflow_id,
            menu=row.menu,
            channel=row.channel,
            address=row.address,
            status=row.status,
            last_step=row.last_step,
            context=dict(row.context or {}),
            transcript=list(row.transcript or []),
            started_at=row.started_at,
            ended_at=row.ended_at,
        )


@dataclass(frozen=True)
class MenuStats:
    started: int = 0
    active: int = 0
    completed: int = 0
    expired: int = 0
    handed_off: int = 0
    cancelled: int = 0
    moved: int = 0
    drop_off: dict[str, int] = field(default_factory=dict)
    """Expired sessions per the step they stopped at: where customers give up."""


class MenuStore:
    sessions: sessionmaker[Session]

    # --- definitions ------------------------------------------------------------------

    def save_menu(self, definition: MenuDefinition) -> bool:
        """Create or replace the menu of this name; True when it was created."""
        text = json.dumps(definition.model_dump(mode="json", by_alias=True))

        def save(session: Session) -> bool:
            row = session.get(Menu, definition.name)
            created = row is None
            if row is None:
                row = Menu(name=definition.name)
                session.add(row)
            row.definition = text
            row.priority = definition.priority
            row.active = definition.active
            return created

        return retrying_conflicts(self.sessions, save)

    def get_menu(self, name: str) -> MenuDefinition | None:
        with self.sessions() as session:
            text = session.scalar(select(Menu.definition).where(Menu.name == name))
        return None if text is None else MenuDefinition.model_validate(json.loads(text))

    def list_menus(self, *, active_only: bool = False) -> list[MenuDefinition]:
        """Highest priority first (the order trigger keywords are matched in), then by name."""
        query = select(Menu.definition).order_by(Menu.priority.desc(), Menu.name)
        if active_only:
            query = query.where(Menu.active.is_(True))
        with self.sessions() as session:
            texts = list(session.scalars(query))
        return [MenuDefinition.model_validate(json.loads(text)) for text in texts]

    def delete_menu(self, name: str) -> bool:
        with self.sessions.begin() as session:
            result = session.execute(delete(Menu).where(Menu.name == name))
            return _rowcount(result) > 0

    def menu_names(self) -> set[str]:
        with self.sessions() as session:
            return set(session.scalars(select(Menu.name)))

    # --- sessions ---------------------------------------------------------------------

    def start_menu_session(
        self,
        session_id: str,
        *,
        workflow_id: str,
        menu: str,
        channel: str,
        address: str,
        started_at: datetime,
    ) -> None:
        """Record the session as ``active``; a second call with the same id does nothing."""
        try:
            with self.sessions.begin() as session:
                if _session_row(session, session_id) is not None:
                    return
                session.add(
                    MenuSession(
                        session_id=session_id,
                        workflow_id=workflow_id,
                        menu=menu,
                        channel=channel,
                        address=address,
                        status="active",
                        context={},
                        transcript=[],
                        started_at=started_at,
                    )
                )
        except IntegrityError:
            pass  # a concurrent retry recorded it first

    def end_menu_session(
        self,
        session_id: str,
        *,
        status: str,
        last_step: str | None,
        context: dict[str, str],
        transcript: list[dict[str, str]],
        ended_at: datetime,
    ) -> None:
        """Record the outcome once (a session already ended keeps its first outcome), except
        that a handed-off session, recorded when the bot stepped aside, gets the rest of its
        transcript when the conversation finally ends.

        When the start was never recorded, the row is made here from what the session id
        says (``menu:{channel}:{address}:{id of the message that began it}``); its menu is then unknown (empty).
        """
        if status not in SESSION_STATUSES or status == MenuStatus.active:
            raise ValueError(f"status: {status!r} is not an ending of a menu session")

        def end(session: Session) -> None:
            lock_for_writing(session)
            row = _session_row(session, session_id, for_update=True)
            if row is None:
                row = _session_from_id(session_id, transcript, ended_at)
                session.add(row)
            elif row.ended_at is not None and not (row.status == status == "handed_off"):
                return
            row.status = status
            row.last_step = last_step
            row.context = dict(context)
            row.transcript = list(transcript)
            row.ended_at = ended_at

        retrying_conflicts(self.sessions, end)

    def list_menu_sessions(
        self, menu: str, *, status: str | None = None, limit: int = 100
    ) -> list[MenuSessionView]:
        query = (
            select(MenuSession)
            .where(MenuSession.menu == menu)
            .order_by(MenuSession.started_at.desc(), MenuSession.id.desc())
            .limit(limit)
        )
        if status is not None:
            query = query.where(MenuSession.status == status)
        with self.sessions() as session:
            return [MenuSessionView.of(row) for row in session.scalars(query)]

    def menu_stats(self, menu: str) -> MenuStats:
        with self.sessions() as session:
            by_status: dict[str, int] = {
                status: count
                for status, count in session.execute(
                    select(MenuSession.status, func.count())
                    .where(MenuSession.menu == menu)
                    .group_by(MenuSession.status)
                )
            }
            drop_off: dict[str, int] = {
                (step or ""): count
                for step, count in session.execute(
                    select(MenuSession.last_step, func.count())
                    .where(MenuSession.menu == menu, MenuSession.status == "expired")
                    .group_by(MenuSession.last_step)
                )
            }
        return MenuStats(
            started=sum(by_status.values()),
            active=by_status.get("active", 0),
            completed=by_status.get("completed", 0),
            expired=by_status.get("expired", 0),
            handed_off=by_status.get("handed_off", 0),
            cancelled=by_status.get("cancelled", 0),
            moved=by_status.get("moved", 0),
            drop_off=dict(sorted(drop_off.items(), key=lambda item: (-item[1], item[0]))),
        )

    # --- business events --------------------------------------------------------------

    def record_event(
        self,
        idempotency_key: str,
        *,
        name: str,
        source: str,
        channel: str,
        address: str,
        payload: dict[str, Any],
        created_at: datetime,
    ) -> bool:
        """Keep the event once; False (and nothing written) for a key already recorded. The
        event belongs to the contact known by the address on its channel."""
        try:
            with self.sessions.begin() as session:
                contact_id = session.scalar(
                    select(ContactChannel.contact_id).where(
                        ContactChannel.channel == address_channel(channel),
                        ContactChannel.address == address,
                    )
                )
                session.add(
                    BusinessEvent(
                        idempotency_key=idempotency_key,
                        name=name,
                        source=source,
                        contact_id=contact_id,
                        channel=channel,
                        address=address,
                        payload=payload,
                        created_at=created_at,
                    )
                )
            return True
        except IntegrityError:
            return False

    # --- fallback auto-reply ----------------------------------------------------------

    def claim_fallback(
        self, channel: str, address: str, *, now: datetime, period: timedelta
    ) -> bool:
        """True (and ``now`` recorded) only when the contact got no fallback within ``period``.

        The decision is one conditional UPDATE, or the INSERT of the contact's first row:
        of two concurrent claims, the database lets exactly one change the row.
        """
        if now.tzinfo is None:
            raise ValueError("now: a timezone-aware datetime is needed")
        now = now.astimezone(UTC)
        where = (FallbackReply.channel == channel, FallbackReply.address == address)
        for _ in range(3):
            with self.sessions.begin() as session:
                result = session.execute(
                    update(FallbackReply)
                    .where(*where, FallbackReply.last_sent_at <= now - period)
                    .values(last_sent_at=now)
                    .execution_options(synchronize_session=False)
                )
                if _rowcount(result) == 1:
                    return True
                if session.scalar(select(FallbackReply.last_sent_at).where(*where)) is not None:
                    return False
            try:
                with self.sessions.begin() as session:
                    session.add(FallbackReply(channel=channel, address=address, last_sent_at=now))
                return True
            except IntegrityError:
                continue  # another claim inserted the first row: decide again against it
        raise RuntimeError(f"could not decide the fallback reply to {channel}:{address}")


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def _session_row(
    session: Session, session_id: str, *, for_update: bool = False
) -> MenuSession | None:
    query = select(MenuSession).where(MenuSession.session_id == session_id)
    if for_update:
        query = query.with_for_update()
    return session.scalar(query)


def _session_from_id(
    session_id: str, transcript: list[dict[str, str]], ended_at: datetime
) -> MenuSession:
    workflow_id, _, _run_id = session_id.rpartition(":")
    kind, _, rest = workflow_id.partition(":")
    channel, _, address = rest.partition(":")
    if kind != "menu" or not address:
        channel, address = "", ""
    started_at = ended_at
    if transcript:
        try:
            started_at = datetime.fromisoformat(transcript[0]["at"])
        except (KeyError, ValueError):
            pass
        if started_at.tzinfo is None:
            started_at = started_at.replace(tzinfo=UTC)
    return MenuSession(
        session_id=session_id,
        workflow_id=workflow_id or session_id,
        menu="",
        channel=channel,
        address=address,
        status="active",
        context={},
        transcript=[],
        started_at=started_at,
    )
