"""``/v1/contacts/{id}/tokens``: a token for one contact, made by the operator's platform.

A platform that embeds Nudge hands this token to its end user, whose app then calls Nudge
directly: the token sees that contact only (``dependencies.visible_contact``) and none of
the operator's routes, which answer it 404 as if they did not exist.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Literal

from fastapi import APIRouter, HTTPException, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.contacts import ContactId
from api.moments import UtcMoment
from dependencies import AdminToken, StoreDep
from domain import limits
from domain.durations import Duration
from store.events import NoContact
from store.repo import Role

router = APIRouter(prefix="/v1", tags=["contacts"])


class ContactTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelled field is named, not ignored

    name: str = Field(
        default="",
        max_length=limits.TOKEN_NAME,
        description="a label to recognise the token by; `contact <id>` when none is given",
    )
    expires_in: Duration | None = Field(
        default=None, description="lifetime, e.g. 30d or 12h; after it the token gets 401"
    )
    expires_at: UtcMoment | None = Field(
        default=None, description="when the token stops working (instead of expires_in)"
    )

    @field_validator("expires_in")
    @classmethod
    def _lives(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("a token must live longer than 0s")
        return value

    @model_validator(mode="after")
    def _one_expiry(self) -> ContactTokenIn:
        if self.expires_in is not None and self.expires_at is not None:
            raise ValueError("expires_at: give expires_in or expires_at, not both")
        return self


class ContactTokenOut(BaseModel):
    id: int
    token: str = Field(description="shown once: only its hash is stored")
    role: Literal["contact"]
    contact_id: int
    name: str
    expires_at: datetime | None


@router.post(
    "/contacts/{contact_id}/tokens",
    response_model=ContactTokenOut,
    status_code=status.HTTP_201_CREATED,
)
async def create_contact_token(
    contact_id: ContactId, body: ContactTokenIn, _: AdminToken, store: StoreDep
) -> ContactTokenOut:
    """A new token that sees contact ``contact_id`` only; revoke it with ``nudge token
    revoke``. The token is in this answer and nowhere else."""
    now = datetime.now(UTC)
    expires_at = now + body.expires_in if body.expires_in is not None else body.expires_at
    if expires_at is not None and expires_at <= now:
        raise RequestValidationError(
            [
                {
                    "loc": ["body", "expires_at"],
                    "msg": "expires_at: already passed; give a time in the future",
                    "type": "value_error",
                }
            ]
        )
    try:
        record, token = await asyncio.to_thread(
            store.issue_token,
            Role.contact,
            body.name or f"contact {contact_id}",
            expires_at=expires_at,
            contact_id=contact_id,
        )
    except NoContact as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return ContactTokenOut(
        id=record.id,
        token=token,
        role="contact",
        contact_id=contact_id,
        name=record.name,
        expires_at=record.expires_at,
    )
