"""``POST /v1/sessions/{session_id}/complete``: a consultation ended; its follow-ups follow.

The platform that held the session reports it once it ends. Nudge keeps it (its date,
service type and guidance summary are what follow-up templates say), raises
``session_completed`` for automation rules, and, when ``auto_followup_enabled``, schedules
each active ``session_followup`` template for that service type at its ``send_after``,
paid in credits like any scheduled follow-up. Calling it again for the same session
schedules nothing more: it answers what the first call scheduled.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.moments import UtcMoment
from api.scheduled_followups import ScheduleOut, contact_of, refused, schedule_out
from dependencies import AdminToken, SchedulerDep, SettingsDep, StoreDep
from domain import limits
from followup_schedules import Refused, SessionResult

router = APIRouter(prefix="/v1/sessions", tags=["scheduled follow-ups"])

SessionId = Annotated[str, Path(min_length=1, max_length=limits.SERVICE_SESSION_ID)]


class SessionComplete(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_id: int | None = Field(default=None, ge=1, le=limits.RECORD_ID)
    user_email: str | None = Field(default=None, max_length=limits.ADDRESS)
    service_type: str | None = Field(default=None, min_length=1, max_length=limits.SERVICE_TYPE)
    completed_at: UtcMoment | None = None
    """When it ended, with its offset; now when left out."""
    guidance_summary: str | None = Field(default=None, max_length=limits.TEMPLATE_TEXT)

    @model_validator(mode="after")
    def _one_contact(self) -> SessionComplete:
        if (self.contact_id is None) == (self.user_email is None):
            raise ValueError("give contact_id or user_email (one of them)")
        return self


class Skipped(BaseModel):
    template: str
    reason: str


class SessionOut(BaseModel):
    session_id: str
    contact_id: int
    service_type: str | None
    completed_at: datetime
    scheduled: list[ScheduleOut]
    skipped: list[Skipped]
    """Templates for this session that were not scheduled, and why (the balance, a limit,
    no address on the template's channel, ``auto_followup_enabled`` off)."""


def session_out(result: SessionResult) -> SessionOut:
    return SessionOut(
        session_id=result.session.session_id,
        contact_id=result.session.contact_id,
        service_type=result.session.service_type,
        completed_at=result.session.completed_at,
        scheduled=[schedule_out(view) for view in result.scheduled],
        skipped=[Skipped(template=name, reason=why) for name, why in result.skipped],
    )


@router.post(
    "/{session_id}/complete",
    response_model=SessionOut,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "The session was reported before: nothing more scheduled"}},
)
async def complete_session(
    session_id: SessionId,
    body: SessionComplete,
    response: Response,
    token: AdminToken,
    store: StoreDep,
    settings: SettingsDep,
    scheduler: SchedulerDep,
) -> Any:
    contact_id = await contact_of(store, settings, token, body.contact_id, body.user_email)
    try:
        result = await scheduler.complete_session(
            session_id,
            contact_id=contact_id,
            service_type=body.service_type,
            completed_at=body.completed_at or datetime.now(UTC),
            guidance_summary=body.guidance_summary,
        )
    except Refused as error:
        raise refused(error) from None
    if result.session.contact_id != contact_id:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"session {session_id!r} was reported for another contact",
        )
    if not result.created:
        response.status_code = status.HTTP_200_OK
    return session_out(result)
