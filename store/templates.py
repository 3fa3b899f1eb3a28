"""Store operations of message templates: a mixin of ``Store``, like ``MenuStore``.

Templates are checked (``domain.templates.problems``) before they reach these methods; what
is read back is the same ``MessageTemplate`` the API was given, ``default_locale`` resolved.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.exc import IntegrityError

from domain.templates import MessageTemplate
from store.db import retrying_conflicts
from store.models import MessageTemplate as TemplateRow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker


class TemplateExists(Exception):
    """A template of that name exists already."""


@dataclass(frozen=True)
class StoredTemplate:
    template: MessageTemplate
    created_at: datetime
    updated_at: datetime
    id: int = 0

    @classmethod
    def of(cls, row: TemplateRow) -> StoredTemplate:
        return cls(
            id=row.id,
            template=MessageTemplate.model_validate(
                {
                    "name": row.name,
                    "channel": row.channel,
                    "subject": row.subject,
                    "variants": row.variants,
                    "variables": row.variables,
                    "default_locale": row.default_locale,
                    "approved": row.approved,
                    "template_type": row.template_type,
                    "credits_cost": row.credits_cost,
                    "is_active": row.is_active,
                    "description": row.description,
                    "titles": row.titles or {},
                    "service_types": row.service_types or [],
                    "send_after": row.send_after,
                }
            ),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


def _write(row: TemplateRow, template: MessageTemplate) -> None:
    dumped = template.model_dump(mode="json")
    row.channel = dumped["channel"]
    row.subject = dumped["subject"]
    row.variants = dumped["variants"]
    row.variables = dumped["variables"]
    row.default_locale = dumped["default_locale"]
    row.approved = dumped["approved"]
    row.template_type = dumped["template_type"]
    row.credits_cost = dumped["credits_cost"]
    row.is_active = dumped["is_active"]
    row.description = dumped["description"]
    row.titles = dumped["titles"]
    row.service_types = dumped["service_types"]
    row.send_after = dumped["send_after"]


class TemplateStore:
    sessions: sessionmaker[Session]

    def create_template(self, template: MessageTemplate) -> StoredTemplate:
        """Raises ``TemplateExists`` when the name is taken (also by a concurrent create)."""
        try:
            with self.sessions.begin() as session:
                row = TemplateRow(name=template.name)
                _write(row, template)
                session.add(row)
                session.flush()
                return StoredTemplate.of(row)
        except IntegrityError as exc:
            raise TemplateExists(template.name) from exc

    def save_template(self, template: MessageTemplate) -> tuple[StoredTemplate, bool]:
        """Create or replace the template of this name; True when it was created."""

        def save(session: Session) -> tuple[StoredTemplate, bool]:
            row = session.scalar(select(TemplateRow).where(TemplateRow.name == template.name))
            created = row is None
            if row is None:
                row = TemplateRow(name=template.name)
                session.add(row)
            _write(row, template)
            session.flush()
            return StoredTemplate.of(row), created

        return retrying_conflicts(self.sessions, save)

    def get_template(self, name: str) -> StoredTemplate | None:
        with self.sessions() as session:
            row = session.scalar(select(TemplateRow).where(TemplateRow.name == name))
            return None if row is None else StoredTemplate.of(row)

    def get_template_by_id(self, template_id: int) -> StoredTemplate | None:
        with self.sessions() as session:
            row = session.get(TemplateRow, template_id)
            return None if row is None else StoredTemplate.of(row)

    def session_followup_templates(self, service_type: str | None) -> list[StoredTemplate]:
        """The active ``session_followup`` templates that follow a session of this service
        type (those naming no service types follow every session), oldest first."""
        with self.sessions() as session:
            rows = session.scalars(
                select(TemplateRow)
                .where(
                    TemplateRow.template_type == "session_followup",
                    TemplateRow.is_active.is_(True),
                )
                .order_by(TemplateRow.id)
            )
            found = [StoredTemplate.of(row) for row in rows]
        return [
            stored
            for stored in found
            if not stored.template.service_types or service_type in stored.template.service_types
        ]

    def list_templates(self) -> list[StoredTemplate]:
        with self.sessions() as session:
            rows = session.scalars(select(TemplateRow).order_by(TemplateRow.name))
            return [StoredTemplate.of(row) for row in rows]

    def delete_template(self, name: str) -> bool:
        with self.sessions.begin() as session:
            result = session.execute(delete(TemplateRow).where(TemplateRow.name == name))
            return cast("CursorResult[Any]", result).rowcount > 0
