"""``/api/followup``: the original system's follow-up routes (jyotiflow-ai), so its frontend
keeps working against Nudge.

Each route is an alias of a ``/v1`` one: the same store, the same ``FollowupScheduler``, the
same rules (credits reserved, then captured or released; the settings' limits; no SMS to an
e-mail address). Only the shapes are the original's: its bodies, its field names, its
``{success, message, ...}`` answers, its ids as text. Where the original was open or
answered 500, these are not: every route needs a token (401 without one, as on ``/v1``),
and what a caller got wrong is a 4xx with ``detail`` naming the field, in the original's
field names where it has one.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status
from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from api.analytics import A_DATE, DEFAULT_DAYS, MAX_DAYS, SWITCHED_OFF, Moment
from api.followup_settings import SettingsChange, change_settings
from api.moments import UtcMoment
from api.scheduled_followups import contact_of, refused
from dependencies import AdminToken, AnyToken, SchedulerDep, SettingsDep, StoreDep, own_contact_id
from domain import limits
from domain.channels import ChannelName
from domain.scheduled_followups import OPEN_STATUSES, ScheduleStatus, TemplateType, price_of
from domain.templates import MessageTemplate, problems
from domain.text import TEMPLATE, placeholders
from followup_schedules import Refused, ScheduleRequest
from store.analytics import GroupBy
from store.repo import Store
from store.scheduled_followups import ScheduleFilter, ScheduleView
from store.templates import StoredTemplate, TemplateExists

router = APIRouter(
    prefix="/api/followup", tags=["original follow-up routes"], include_in_schema=True
)

EN, TA = "en", "ta"
"""The original's ``content``/``name`` and ``tamil_content``/``tamil_name`` locales."""
MY_FOLLOWUPS = 500
"""The newest follow-ups ``my-followups`` lists (the original listed all of a user's)."""
IGNORED_SETTINGS = ("auto_cancel_after_days", "enable_smart_scheduling")
"""The original's settings Nudge has no use for: accepted on PUT, then ignored."""
SLUG_TRIES = 1000
DIGITS = re.compile(r"[0-9]{1,10}")
NOT_SLUG = re.compile(r"[^a-z0-9]+")
Fields = dict[tuple[str | int, ...], str]
TEMPLATE_FIELDS: Fields = {
    ("variants", EN): "content",
    ("variants", TA): "tamil_content",
    ("variants",): "content",
    ("default_locale",): "content",
    ("titles", EN): "name",
    ("titles", TA): "tamil_name",
}
"""Where a template's fields are in the original's body, to name them in a 422."""
SCHEDULE_FIELDS: Fields = {
    ("variables",): "custom_variables",
    ("template",): "template_id",
    ("contact_id",): "user_email",
}
"""Where the scheduler's fields are in the original's ``FollowUpRequest``."""

KeyName = Annotated[str, StringConstraints(max_length=limits.KEY_NAME)]
VariableName = Annotated[str, StringConstraints(max_length=limits.KEY_NAME)]
OriginalId = Annotated[str, Path(max_length=40)]
"""The original's ids were uuids (text); Nudge's are numbers, given here as text."""


# --- shapes ------------------------------------------------------------------------------


class FollowUpRequest(BaseModel):
    """The original's body. Keys it does not know are ignored, as the original did."""

    user_email: str = Field(max_length=limits.ADDRESS)
    """Must be the caller's own with a contact token (404 otherwise)."""
    session_id: str | None = Field(default=None, min_length=1, max_length=limits.SERVICE_SESSION_ID)
    template_id: str = Field(min_length=1, max_length=limits.MESSAGE_TEMPLATE_NAME)
    """A template's id (``"12"``) or its name (``"session-checkin"``)."""
    channel: ChannelName
    scheduled_at: UtcMoment | None = None
    """With its offset; left out: the template's ``send_after`` (a day) from now."""
    custom_variables: dict[KeyName, Any] | None = Field(
        default=None, max_length=limits.MAX_TEMPLATE_VARIABLES
    )
    """Values for the template's placeholders; numbers and the like become text."""
    credits_to_charge: int | None = Field(default=None, ge=0, le=limits.MAX_CREDITS)
    """Left out, or the follow-up's price: a caller cannot set its own (a 422 names it)."""

    @field_validator("custom_variables")
    @classmethod
    def _as_text(cls, given: dict[str, Any] | None) -> dict[str, str] | None:
        if given is None:
            return None
        found: dict[str, str] = {}
        for name, value in given.items():
            if value is None:
                continue  # no value: a placeholder that needs it is named as missing
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            if len(text) > limits.TEMPLATE_VARIABLE:
                raise ValueError(
                    f"{name[:40]}: at most {limits.TEMPLATE_VARIABLE} characters once written "
                    "as text"
                )
            found[name] = text
        return found


class FollowUpResponse(BaseModel):
    success: bool
    message: str
    followup_id: str | None = None
    credits_charged: int = 0
    """What the follow-up costs: reserved now, captured when it is sent."""
    scheduled_at: datetime | None = None


class FollowUpRow(BaseModel):
    """A follow-up with the original's column names."""

    id: str
    user_email: str | None
    session_id: str | None
    template_id: str | None
    channel: str
    scheduled_at: datetime
    status: ScheduleStatus
    credits_charged: int
    """Held for it while it waits; then what was captured (0 once refunded)."""
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime
    template_name: str
    template_tamil_name: str | None


class AdminFollowUpRow(FollowUpRow):
    user_name: str | None


class FollowUpList(BaseModel):
    success: bool = True
    data: list[FollowUpRow]
    count: int


class AdminFollowUpList(BaseModel):
    success: bool = True
    data: list[AdminFollowUpRow]
    count: int


class Done(BaseModel):
    success: bool = True
    message: str


class FollowUpTemplate(BaseModel):
    """The original's template: ``content`` is the English text, ``tamil_content`` the
    Tamil one, ``name`` and ``tamil_name`` their titles. Keys it does not know (``id``,
    ``created_at``...) are ignored, as the original did."""

    name: str = Field(min_length=1, max_length=limits.TEMPLATE_TITLE)
    tamil_name: str | None = Field(default=None, max_length=limits.TEMPLATE_TITLE)
    description: str = Field(max_length=limits.TEMPLATE_TEXT)
    template_type: TemplateType
    channel: ChannelName
    subject: str = Field(max_length=limits.SUBJECT)
    """Kept for e-mail only; dropped on the other channels."""
    content: str = Field(max_length=limits.TEMPLATE_TEXT)
    tamil_content: str | None = Field(default=None, max_length=limits.TEMPLATE_TEXT)
    variables: list[VariableName] = Field(
        default_factory=list, max_length=limits.MAX_TEMPLATE_VARIABLES
    )
    """Read from the texts' ``{{name}}`` placeholders; a name listed here also makes
    ``{name}`` one. A listed name no text uses is dropped."""
    credits_cost: int | None = Field(default=None, ge=0, le=limits.MAX_CREDITS)
    """Left out: the settings' ``default_credits_cost``."""
    is_active: bool = True


class TemplateRow(BaseModel):
    id: str
    name: str
    tamil_name: str | None
    description: str
    template_type: TemplateType
    channel: ChannelName
    subject: str
    content: str
    tamil_content: str | None
    variables: list[str]
    credits_cost: int
    """The template's, or the settings' ``default_credits_cost`` when it names none."""
    is_active: bool
    created_at: datetime
    updated_at: datetime


class TemplateList(BaseModel):
    success: bool = True
    data: list[TemplateRow]
    count: int


class TemplateCreated(Done):
    template_id: str


class TopTemplate(BaseModel):
    name: str
    tamil_name: str | None
    total_sent: int


class AnalyticsFigures(BaseModel):
    total_sent: int
    total_delivered: int
    total_read: int
    total_failed: int
    total_credits_charged: int
    total_revenue: float
    delivery_rate: float
    """Per cent (0-100) of the messages a real provider took (sandboxed ones never get a
    delivery status), as ``/v1/analytics/messages`` counts them."""
    read_rate: float
    top_templates: list[TopTemplate]


class AnalyticsOut(BaseModel):
    success: bool = True
    data: AnalyticsFigures


class SettingsOut(BaseModel):
    success: bool = True
    data: dict[str, Any]


class OriginalSettings(SettingsChange):
    """The settings to change; those left out keep their values (the original reset them)."""

    auto_cancel_after_days: int | None = Field(default=None, ge=0, le=3650)
    """The original's; Nudge has no use for it: accepted, ignored."""
    enable_smart_scheduling: bool | None = None
    """The original's; Nudge has no use for it: accepted, ignored."""


class SessionCompleted(BaseModel):
    session_id: str = Field(min_length=1, max_length=limits.SERVICE_SESSION_ID)
    user_email: str = Field(max_length=limits.ADDRESS)
    service_type: str = Field(min_length=1, max_length=limits.SERVICE_TYPE)
    completed_at: UtcMoment | None = None
    """With its offset; now when left out."""
    guidance_summary: str | None = Field(default=None, max_length=limits.TEMPLATE_TEXT)


# --- a user's follow-ups -----------------------------------------------------------------


@router.post("/schedule", response_model=FollowUpResponse)
async def schedule_followup(
    body: FollowUpRequest,
    token: AnyToken,
    store: StoreDep,
    settings: SettingsDep,
    scheduler: SchedulerDep,
) -> Any:
    """``POST /v1/scheduled-followups`` in the original's shape: 402 when the balance does
    not cover the price, 422 for an unknown or inactive template or a channel the user has
    no address on, 409 naming a limit."""
    contact_id = await contact_of(store, settings, token, None, body.user_email)
    stored = await asyncio.to_thread(_template_named, store, body.template_id)
    if stored is None:
        raise _refuse(["body", "template_id"], f"no template {body.template_id[:80]!r}")
    if body.credits_to_charge is not None:
        price = await asyncio.to_thread(_price, store, stored)
        if body.credits_to_charge != price:
            raise _refuse(
                ["body", "credits_to_charge"],
                f"this follow-up costs {price} credits (the template's price); leave "
                f"credits_to_charge out or give {price}",
            )
    request = ScheduleRequest(
        contact_id=contact_id,
        template_id=stored.id,
        channel=body.channel,
        scheduled_at=body.scheduled_at,
        session_id=body.session_id,
        variables=dict(body.custom_variables or {}),
    )
    try:
        view, _ = await scheduler.schedule(request)
    except Refused as error:
        raise refused(_in_original_words(error)) from None
    return _scheduled(view)


@router.get("/my-followups", response_model=FollowUpList)
async def my_followups(token: AnyToken, store: StoreDep) -> Any:
    """The caller's own follow-ups, latest scheduled first: a contact token's. An
    operator's token belongs to no user: 403, pointing to ``admin/schedules``."""
    own = own_contact_id(token)
    if own is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "my-followups lists a user's own follow-ups: call it with that user's contact "
            "token (POST /v1/contacts/{id}/tokens); GET /api/followup/admin/schedules lists "
            "everyone's",
        )
    views = await asyncio.to_thread(
        store.list_schedules, ScheduleFilter(contact_id=own), limit=MY_FOLLOWUPS
    )
    rows = await asyncio.to_thread(_rows, store, views)
    return FollowUpList(data=[FollowUpRow.model_validate(row) for row in rows], count=len(rows))


@router.post("/cancel/{followup_id}", response_model=Done)
async def cancel_followup(
    followup_id: OriginalId, token: AnyToken, store: StoreDep, scheduler: SchedulerDep
) -> Any:
    """Cancel a pending follow-up; its credits come back. 404 for another user's (or none),
    409 once it is no longer pending (the original answered 500)."""
    schedule_id = _number(followup_id)
    view = None if schedule_id is None else await asyncio.to_thread(store.get_schedule, schedule_id)
    if view is None or own_contact_id(token) not in (None, view.contact_id):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"followup_id: no follow-up {followup_id[:40]!r}"
        )
    try:
        await scheduler.cancel(view.id)
    except Refused as error:
        raise refused(error) from None
    return Done(message="Follow-up cancelled successfully")


# --- templates ---------------------------------------------------------------------------


@router.get("/admin/templates", response_model=TemplateList)
async def list_templates(_: AdminToken, store: StoreDep) -> Any:
    """Every template, newest first, in the original's shape."""
    found = await asyncio.to_thread(store.list_templates)
    default_cost = (await asyncio.to_thread(store.followup_settings)).default_credits_cost
    found.sort(key=lambda stored: (stored.created_at, stored.id), reverse=True)
    rows = [_template_row(stored, default_cost) for stored in found]
    return TemplateList(data=rows, count=len(rows))


@router.post("/admin/templates", response_model=TemplateCreated)
async def create_template(body: FollowUpTemplate, _: AdminToken, store: StoreDep) -> Any:
    """Saved as a Nudge template named after ``name`` (``Session check-in`` becomes
    ``session-check-in``, ``-2`` when taken); ``template_id`` is its id."""
    template = _nudge_template(body, _slug(body.name), kept=None)
    stored = await asyncio.to_thread(_create_unique, store, template)
    return TemplateCreated(message="Template created successfully", template_id=str(stored.id))


@router.put("/admin/templates/{template_id}", response_model=Done)
async def replace_template(
    template_id: OriginalId, body: FollowUpTemplate, _: AdminToken, store: StoreDep
) -> Any:
    """Replace the template's fields; it keeps its Nudge name (what rules call it by), and
    what the original has no field for (other locales, ``send_after``, ``service_types``)."""
    stored = await _template_by_id(store, template_id)
    template = _nudge_template(body, stored.template.name, kept=stored.template)
    await asyncio.to_thread(store.save_template, template)
    return Done(message="Template updated successfully")


@router.delete("/admin/templates/{template_id}", response_model=Done)
async def delete_template(template_id: OriginalId, _: AdminToken, store: StoreDep) -> Any:
    """409 while follow-ups of the template wait to be sent, as on ``/v1/templates``."""
    stored = await _template_by_id(store, template_id)
    waiting = await asyncio.to_thread(store.open_schedules_for_template, stored.id)
    if waiting:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"template_id: {waiting} follow-up(s) of this template are still to be sent; "
            "cancel them or set is_active to false",
        )
    if not await asyncio.to_thread(store.delete_template, stored.template.name):
        raise _template_not_found()
    return Done(message="Template deleted successfully")


# --- what an operator sees ---------------------------------------------------------------


@router.get("/admin/schedules", response_model=AdminFollowUpList)
async def list_schedules(
    _: AdminToken,
    store: StoreDep,
    status_: Annotated[ScheduleStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=limits.MAX_OFFSET)] = 0,
) -> Any:
    """Everyone's follow-ups, latest scheduled first, with the user's name."""
    views = await asyncio.to_thread(
        lambda: store.list_schedules(ScheduleFilter(status=status_), limit=limit, offset=offset)
    )
    rows = await asyncio.to_thread(_rows, store, views)
    return AdminFollowUpList(
        data=[AdminFollowUpRow.model_validate(row) for row in rows], count=len(rows)
    )


def _day_after(value: Any) -> Any:
    """A bare end date counts whole, as the original's ``BETWEEN`` did: up to the next
    midnight (UTC)."""
    if isinstance(value, str) and A_DATE.fullmatch(value):
        try:
            return datetime.combine(date.fromisoformat(value) + timedelta(days=1), time(), UTC)
        except (ValueError, OverflowError) as exc:
            raise ValueError(f"not a date that has a next day: {exc}") from exc
    return value


EndMoment = Annotated[UtcMoment, BeforeValidator(_day_after)]


@router.get("/admin/analytics", response_model=AnalyticsOut)
async def analytics(
    _: AdminToken,
    store: StoreDep,
    start_date: Moment | None = None,
    end_date: EndMoment | None = None,
) -> Any:
    """``/v1/analytics/messages`` added up in the original's keys: dates (a whole day, in
    UTC) or times with their offset, by default the last 30 days; 409 when
    ``enable_analytics`` is false."""
    end = end_date or datetime.now(UTC)
    try:
        start = start_date or end - timedelta(days=DEFAULT_DAYS)
    except OverflowError:
        start = datetime.min.replace(tzinfo=UTC)
    if start >= end:
        raise _refuse(["query", "start_date"], "start_date: must be before end_date")
    if end - start > timedelta(days=MAX_DAYS):
        raise _refuse(
            ["query", "start_date"], f"start_date: at most {MAX_DAYS} days before end_date"
        )
    if not (await asyncio.to_thread(store.followup_settings)).enable_analytics:
        raise HTTPException(status.HTTP_409_CONFLICT, SWITCHED_OFF)
    found = await asyncio.to_thread(store.message_analytics, start, end, GroupBy.template)
    titles = await asyncio.to_thread(
        _titles_by_name, store, [group.key for group in found.top_templates if group.key]
    )
    totals = found.totals
    return AnalyticsOut(
        data=AnalyticsFigures(
            total_sent=totals.sent,
            total_delivered=totals.delivered,
            total_read=totals.read,
            total_failed=totals.failed,
            total_credits_charged=totals.credits_charged,
            total_revenue=float(totals.revenue),
            delivery_rate=round(totals.delivery_rate * 100, 2),
            read_rate=round(totals.read_rate * 100, 2),
            top_templates=[
                TopTemplate(
                    name=titles.get(group.key, {}).get(EN) or group.key,
                    tamil_name=titles.get(group.key, {}).get(TA),
                    total_sent=group.figures.sent,
                )
                for group in found.top_templates
                if group.key
            ],
        )
    )


@router.get("/admin/settings", response_model=SettingsOut)
async def get_settings(_: AdminToken, store: StoreDep) -> Any:
    """The settings as one flat dict (``/v1/followup-settings``'s keys)."""
    current = await asyncio.to_thread(store.followup_settings)
    return SettingsOut(data=current.model_dump(mode="json"))


@router.put("/admin/settings", response_model=Done)
async def put_settings(body: OriginalSettings, _: AdminToken, store: StoreDep) -> Any:
    """Change the keys given; the others keep their values. ``auto_cancel_after_days`` and
    ``enable_smart_scheduling`` are accepted and ignored."""
    await change_settings(store, body.model_dump(exclude_none=True, exclude=set(IGNORED_SETTINGS)))
    return Done(message="Settings updated successfully")


@router.post("/auto/session-complete", response_model=FollowUpResponse)
async def session_complete(
    body: SessionCompleted,
    token: AdminToken,
    store: StoreDep,
    settings: SettingsDep,
    scheduler: SchedulerDep,
) -> Any:
    """``POST /v1/sessions/{id}/complete`` in the original's shape: the first follow-up it
    scheduled, or ``success: false`` with the reason (HTTP 200, as the original) when it
    scheduled none. Unlike the original, it needs an admin token."""
    contact_id = await contact_of(store, settings, token, None, body.user_email)
    try:
        result = await scheduler.complete_session(
            body.session_id,
            contact_id=contact_id,
            service_type=body.service_type,
            completed_at=body.completed_at or datetime.now(UTC),
            guidance_summary=body.guidance_summary,
        )
    except Refused as error:
        raise refused(_in_original_words(error)) from None
    if result.session.contact_id != contact_id:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"session_id: session {body.session_id[:80]!r} was reported for another user",
        )
    if result.scheduled:
        answer = _scheduled(min(result.scheduled, key=lambda view: view.id))
        if not result.created:
            answer.message = "The session was reported before: its follow-up is scheduled"
        return answer
    reasons = "; ".join(f"{name}: {why}" for name, why in result.skipped)
    return FollowUpResponse(success=False, message=reasons or "No follow-up template available")


# --- helpers -----------------------------------------------------------------------------


def _scheduled(view: ScheduleView) -> FollowUpResponse:
    return FollowUpResponse(
        success=True,
        message="Follow-up scheduled successfully",
        followup_id=str(view.id),
        credits_charged=view.credits_reserved,
        scheduled_at=view.scheduled_at,
    )


def _number(given: str) -> int | None:
    """Nudge's id written as text, or None for anything that cannot be one (an original
    uuid, a word): those name nothing here."""
    if not DIGITS.fullmatch(given):
        return None
    number = int(given)
    return number if 1 <= number <= limits.RECORD_ID else None


def _template_named(store: Store, given: str) -> StoredTemplate | None:
    """The template ``template_id`` names: by id when it is a number, else (or when no
    template has that id) by name."""
    number = _number(given)
    found = store.get_template_by_id(number) if number is not None else None
    return found or store.get_template(given)


def _price(store: Store, stored: StoredTemplate) -> int:
    """What scheduling reserves for this template (``FollowupScheduler`` reserves the same)."""
    return price_of(stored.template.credits_cost, store.followup_settings())


def _in_original_words(error: Refused) -> Refused:
    """The scheduler's refusal with the field at fault named as in the original's body."""
    if not error.loc:
        return error
    loc = _original_loc(error.loc, SCHEDULE_FIELDS)
    return Refused(error.status, error.message, tuple(str(part) for part in loc))


def _original_loc(loc: Iterable[str | int], fields: Fields) -> list[str | int]:
    parts = list(loc)
    for length in (2, 1):
        field = fields.get(tuple(parts[:length]))
        if field is not None:
            return [field, *parts[length:]]
    return parts


def _refuse(loc: list[str | int], message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": loc, "msg": message, "type": "followup"}])


def _rows(store: Store, views: list[ScheduleView]) -> list[dict[str, Any]]:
    """The follow-ups as the original's rows, with their user's and template's names."""
    contacts = {cid: store.get_contact(cid) for cid in {view.contact_id for view in views}}
    templates = {
        tid: store.get_template_by_id(tid)
        for tid in {view.template_id for view in views if view.template_id is not None}
    }
    rows = []
    for view in views:
        contact = contacts.get(view.contact_id)
        stored = templates.get(view.template_id) if view.template_id is not None else None
        titles = stored.template.titles if stored is not None else {}
        held = view.status in OPEN_STATUSES
        rows.append(
            {
                "id": str(view.id),
                "user_email": contact.email if contact else None,
                "user_name": contact.name if contact else None,
                "session_id": view.session_id,
                "template_id": None if view.template_id is None else str(view.template_id),
                "channel": view.channel,
                "scheduled_at": view.scheduled_at,
                "status": view.status,
                "credits_charged": view.credits_reserved if held else view.credits_charged,
                "sent_at": view.sent_at,
                "delivered_at": view.delivered_at,
                "read_at": view.read_at,
                "failure_reason": view.failure_reason,
                "created_at": view.created_at,
                "updated_at": view.updated_at,
                "template_name": titles.get(EN) or view.template_name,
                "template_tamil_name": titles.get(TA),
            }
        )
    return rows


def _titles_by_name(store: Store, names: list[str]) -> dict[str, dict[str, str]]:
    found = {name: store.get_template(name) for name in names}
    return {name: stored.template.titles for name, stored in found.items() if stored is not None}


def _slug(name: str) -> str:
    """``Session Check-in!`` -> ``session-check-in``; ``template`` when nothing is left (a
    name in Tamil script only)."""
    slug = NOT_SLUG.sub("-", name.lower()).strip("-")
    return slug[: limits.MESSAGE_TEMPLATE_NAME].strip("-") or "template"


def _create_unique(store: Store, template: MessageTemplate) -> StoredTemplate:
    """Create the template under its name, or the first free ``name-2``, ``name-3``..."""
    for n in range(1, SLUG_TRIES + 1):
        suffix = "" if n == 1 else f"-{n}"
        base = template.name[: limits.MESSAGE_TEMPLATE_NAME - len(suffix)].rstrip("-")
        name = base + suffix
        if store.get_template(name) is not None:
            continue
        try:
            return store.create_template(template.model_copy(update={"name": name}))
        except TemplateExists:  # taken meanwhile
            continue
    raise HTTPException(
        status.HTTP_409_CONFLICT, f"name: {SLUG_TRIES} templates are named like this one already"
    )


def _nudge_template(
    body: FollowUpTemplate, name: str, *, kept: MessageTemplate | None
) -> MessageTemplate:
    """The original's template as Nudge's, or a 422 naming the original's fields. Its
    variables are the placeholders its texts use (Nudge refuses a declared name no text
    uses, and a placeholder nobody declared); what the original has no field for is
    ``kept``'s."""
    variants = {EN: body.content}
    titles = {EN: body.name}
    if body.tamil_content and body.tamil_content.strip():
        variants[TA] = body.tamil_content
    if body.tamil_name and body.tamil_name.strip():
        titles[TA] = body.tamil_name
    if kept is not None:
        variants |= {k: v for k, v in kept.variants.items() if k not in (EN, TA)}
        titles |= {k: v for k, v in kept.titles.items() if k not in (EN, TA)}
    subject = body.subject if body.channel == ChannelName.email else None
    approved = kept.approved if kept is not None and kept.channel == body.channel else {}
    listed = set(body.variables)
    texts = [*([subject] if subject is not None else []), *variants.values()]
    used = [each for text in texts for each in placeholders(text, TEMPLATE, listed)]
    used += [each for one in approved.values() for each in one.parameters]
    fields: dict[str, Any] = {
        "name": name,
        "channel": body.channel,
        "subject": subject,
        "variants": variants,
        "variables": list(dict.fromkeys(used)),
        "template_type": body.template_type,
        "credits_cost": body.credits_cost,
        "is_active": body.is_active,
        "description": body.description,
        "titles": titles,
        "approved": approved,
    }
    if kept is not None:
        fields |= {"service_types": kept.service_types, "send_after": kept.send_after}
        if kept.default_locale in variants:
            fields["default_locale"] = kept.default_locale
    try:
        template = MessageTemplate.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(
            [
                {
                    "loc": ["body", *_original_loc(e["loc"], TEMPLATE_FIELDS)],
                    "msg": e["msg"],
                    "type": e["type"],
                }
                for e in exc.errors()
            ]
        ) from None
    found = problems(template)
    if found:
        raise RequestValidationError(
            [
                {
                    "loc": ["body", *_original_loc(p.loc, TEMPLATE_FIELDS)],
                    "msg": p.message,
                    "type": "template",
                }
                for p in found
            ]
        )
    return template


def _template_row(stored: StoredTemplate, default_cost: int) -> TemplateRow:
    template = stored.template
    return TemplateRow(
        id=str(stored.id),
        name=template.titles.get(EN) or template.name,
        tamil_name=template.titles.get(TA),
        description=template.description or "",
        template_type=template.template_type,
        channel=template.channel,
        subject=template.subject or "",
        content=template.variants.get(EN) or template.variants.get(template.default_locale, ""),
        tamil_content=template.variants.get(TA),
        variables=template.variables,
        credits_cost=default_cost if template.credits_cost is None else template.credits_cost,
        is_active=template.is_active,
        created_at=stored.created_at,
        updated_at=stored.updated_at,
    )


async def _template_by_id(store: Store, template_id: str) -> StoredTemplate:
    number = _number(template_id)
    stored = None if number is None else await asyncio.to_thread(store.get_template_by_id, number)
    if stored is None:
        raise _template_not_found()
    return stored


def _template_not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, "template_id: Template not found")
