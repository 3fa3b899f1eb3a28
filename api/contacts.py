"""``/v1/contacts``: the people Nudge messages, with their addresses, time zone and locale,
and, for leads, their status, source, tags and custom fields.

The API's ``source`` is where a lead came from as the operator names it (the
``contacts.lead_source`` column); ``contacts.source`` is the channel that first knew the
contact, which the API does not show."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, HTTPException, Path, Query, status
from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from sqlalchemy.exc import IntegrityError

from api.moments import UtcMoment
from api.next_actions import NextActionOut, next_actions
from dependencies import (
    AdminToken,
    AutomationsDep,
    SettingsDep,
    StoreDep,
    TemporalDep,
    UserToken,
    checked_addresses,
)
from domain import limits
from domain.addresses import address_channel
from domain.channels import ChannelName
from domain.events import json_size
from store.delivery import ContactView
from store.events import DuplicateAddress, FieldsTooLarge, NewLead, NoContact
from workflows.search_attributes import NUDGE_KIND, NUDGE_STATUS

router = APIRouter(prefix="/v1", tags=["contacts"])
RUNNING_LIMIT = 100
"""A contact's running workflows listed at most: a handful is usual (a menu, a follow-up,
a message or two held for the morning)."""


class ContactOut(BaseModel):
    id: int
    name: str | None
    email: str | None
    phone: str | None
    timezone: str | None
    locale: str | None
    channels: list[dict[str, Any]]
    device_tokens: list[str]
    created_at: datetime
    status: str | None = Field(description="the lead status, free text")
    source: str | None = Field(description="where the lead came from, as the operator names it")
    tags: list[str]
    fields: dict[str, Any] = Field(description="custom fields")
    last_contacted_at: datetime | None


def contact_out(view: ContactView) -> dict[str, Any]:
    """A stored contact in the API's words (``lead_source`` is the API's ``source``)."""
    out = dict(view.__dict__)
    out["source"] = out.pop("lead_source")
    return out


Address = Annotated[str, StringConstraints(max_length=limits.ADDRESS)]
DeviceToken = Annotated[str, StringConstraints(max_length=limits.DEVICE_TOKEN)]
ContactId = Annotated[int, Path(ge=1, le=limits.RECORD_ID)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=limits.TAG)]
FieldName = Annotated[str, StringConstraints(max_length=limits.KEY_NAME)]


def check_zone(value: str | None) -> str | None:
    if value is not None:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA time zone like Europe/Paris") from exc
    return value


def check_fields(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and json_size(value) > limits.CUSTOM_FIELDS:
        raise ValueError(f"at most {limits.CUSTOM_FIELDS} characters as JSON")
    return value


class LeadFields(BaseModel):
    """What a lead has beyond its addresses: shared by ``POST`` and ``PATCH``."""

    model_config = ConfigDict(extra="forbid")  # a misspelled field is named, not ignored

    name: str | None = Field(default=None, max_length=limits.CONTACT_NAME)
    email: str | None = Field(default=None, max_length=limits.ADDRESS)
    phone: str | None = Field(default=None, max_length=limits.ADDRESS)
    status: str | None = Field(
        default=None, max_length=limits.LEAD_STATUS, description="lead status, free text"
    )
    source: str | None = Field(
        default=None, max_length=limits.LEAD_SOURCE, description="where the lead came from"
    )
    tags: list[Tag] | None = Field(default=None, max_length=limits.MAX_TAGS)
    fields: dict[FieldName, Any] | None = Field(
        default=None,
        description=f"custom fields: a JSON object, at most {limits.CUSTOM_FIELDS} characters",
    )
    timezone: str | None = Field(
        default=None, max_length=limits.TIMEZONE, description="IANA zone, e.g. Europe/Paris"
    )
    locale: str | None = Field(default=None, max_length=limits.LOCALE)

    _zone = field_validator("timezone")(check_zone)
    _fields = field_validator("fields")(check_fields)


class ContactCreate(LeadFields):
    """A lead: an e-mail address, a phone number or both."""

    last_contacted_at: UtcMoment | None = Field(
        default=None,
        description="when the lead was last contacted before it came here (an import): "
        "no_contact_days rules count from it",
    )


class ContactPatch(LeadFields):
    """Only the fields given change. ``fields`` is merged (RFC 7396): a key set to null is
    removed, the others set; ``"fields": null`` removes them all."""

    last_contacted_at: UtcMoment | None = None


class ContactUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelled field is named, not ignored

    name: str | None = Field(default=None, max_length=limits.CONTACT_NAME)
    email: str | None = Field(default=None, max_length=limits.ADDRESS)
    phone: str | None = Field(default=None, max_length=limits.ADDRESS)
    timezone: str | None = Field(
        default=None, max_length=limits.TIMEZONE, description="IANA zone, e.g. Europe/Paris"
    )
    locale: str | None = Field(default=None, max_length=limits.LOCALE)
    channels: dict[ChannelName, Address] | None = Field(
        default=None, description="channel -> address; replaces the contact's addresses"
    )
    device_tokens: list[DeviceToken] | None = Field(
        default=None, max_length=limits.MAX_DEVICE_TOKENS, description="replaces the FCM tokens"
    )

    _zone = field_validator("timezone")(check_zone)


@router.get("/contacts", response_model=list[ContactOut])
async def list_contacts(
    _: UserToken,
    store: StoreDep,
    q: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=limits.MAX_OFFSET)] = 0,
) -> list[Any]:
    return [
        contact_out(c)
        for c in await asyncio.to_thread(store.list_contacts, query=q, limit=limit, offset=offset)
    ]


@router.get("/contacts/{contact_id}", response_model=ContactOut)
async def get_contact(contact_id: ContactId, _: UserToken, store: StoreDep) -> Any:
    contact = await asyncio.to_thread(store.get_contact, contact_id)
    if contact is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"contact_id: no contact {contact_id}")
    return contact_out(contact)


def _lead_addresses(settings: SettingsDep, body: LeadFields) -> dict[str, str | None]:
    """The e-mail address and phone number given, checked and in our spelling (a 422
    naming each that is wrong); a field given as null stays None."""
    given = {f: getattr(body, f) for f in ("email", "phone") if f in body.model_fields_set}
    checks = [(["body", f], "email" if f == "email" else "sms", a) for f, a in given.items() if a]
    spelled = checked_addresses(settings, checks)
    found: dict[str, str | None] = dict.fromkeys(given)
    found.update({loc[1]: value for (loc, _, _), value in zip(checks, spelled, strict=True)})
    return found


def _conflict(exc: DuplicateAddress) -> HTTPException:
    return HTTPException(
        status.HTTP_409_CONFLICT,
        f"{exc.field_name}: already the address of contact {exc.contact_id}",
        headers={"Location": f"/v1/contacts/{exc.contact_id}"},
    )


@router.post("/contacts", response_model=ContactOut, status_code=status.HTTP_201_CREATED)
async def create_contact(
    body: ContactCreate,
    _: AdminToken,
    store: StoreDep,
    settings: SettingsDep,
    automations: AutomationsDep,
) -> Any:
    """A lead (a ``new_lead`` event). 409 naming the contact an address already belongs to."""
    addresses = _lead_addresses(settings, body)
    if not any(addresses.values()):
        raise RequestValidationError(
            [
                {
                    "loc": ["body", "email"],
                    "msg": "email: give an e-mail address, a phone number or both",
                    "type": "missing",
                }
            ]
        )
    lead = NewLead(
        name=body.name,
        email=addresses.get("email"),
        phone=addresses.get("phone"),
        status=body.status,
        lead_source=body.source,
        tags=body.tags or [],
        fields=body.fields or {},
        timezone=body.timezone,
        locale=body.locale,
        last_contacted_at=body.last_contacted_at.astimezone(UTC)
        if body.last_contacted_at is not None
        else None,
    )
    try:
        contact = await asyncio.to_thread(store.create_lead, lead)
    except DuplicateAddress as exc:
        raise _conflict(exc) from exc
    await automations.dispatch_for(contact.id)
    return contact_out(contact)


@router.patch("/contacts/{contact_id}", response_model=ContactOut)
async def patch_contact(
    contact_id: ContactId,
    body: ContactPatch,
    _: AdminToken,
    store: StoreDep,
    settings: SettingsDep,
    automations: AutomationsDep,
) -> Any:
    """Change only the fields given; a new ``status`` is a ``lead_status_changed`` event
    (``from``, ``to``). 409 when a new address belongs to another contact."""
    changes: dict[str, Any] = body.model_dump(
        exclude_unset=True, exclude={"email", "phone", "fields", "source"}
    )
    changes.update(_lead_addresses(settings, body))
    if "source" in body.model_fields_set:
        changes["lead_source"] = body.source
    if "tags" in changes:
        changes["tags"] = changes["tags"] or []
    if body.last_contacted_at is not None:
        changes["last_contacted_at"] = body.last_contacted_at.astimezone(UTC)
    fields_patch = None
    if "fields" in body.model_fields_set:
        if body.fields is None:
            changes["fields"] = {}
        else:
            fields_patch = body.fields
    try:
        contact = await asyncio.to_thread(
            store.patch_lead, contact_id, changes, fields_patch=fields_patch
        )
    except NoContact as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except DuplicateAddress as exc:
        raise _conflict(exc) from exc
    except FieldsTooLarge as exc:
        raise RequestValidationError(
            [{"loc": ["body", "fields"], "msg": str(exc), "type": "too_long"}]
        ) from exc
    await automations.dispatch_for(contact_id)
    if body.last_contacted_at is not None:
        await automations.contacted(contact_id, body.last_contacted_at)
    elif "status" not in changes:  # a new status is an event, which told the watch
        await automations.contact_changed(contact_id)
    return contact_out(contact)


@router.put("/contacts/{contact_id}", response_model=ContactOut)
async def update_contact(
    contact_id: ContactId,
    body: ContactUpdate,
    _: AdminToken,
    store: StoreDep,
    settings: SettingsDep,
) -> Any:
    fields = body.model_dump(exclude_unset=True, exclude={"channels", "device_tokens"})
    # Every address at once, so one 422 names each that is wrong.
    given = [
        (["body", "channels", channel.value], channel.value, address)
        for channel, address in (body.channels or {}).items()
    ]
    given += [
        (["body", field], channel, fields[field])
        for field, channel in (("email", "email"), ("phone", "sms"))
        if fields.get(field)
    ]
    checked = {
        tuple(loc): spelled
        for (loc, _, _), spelled in zip(given, checked_addresses(settings, given), strict=True)
    }
    fields.update({field: checked[("body", field)] for field in ("email", "phone")
                   if ("body", field) in checked})  # fmt: skip
    channels = (
        {address_channel(c.value): checked[("body", "channels", c.value)] for c in body.channels}
        if body.channels is not None
        else None
    )
    try:
        contact = await asyncio.to_thread(
            store.update_contact,
            contact_id,
            fields=fields,
            channels=channels,
            device_tokens=body.device_tokens,
        )
    except IntegrityError as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "channels/device_tokens: an address or token belongs to another contact",
        ) from exc
    if contact is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"contact_id: no contact {contact_id}")
    return contact_out(contact)


class RunningWork(BaseModel):
    workflow_id: str
    run_id: str | None
    kind: str | None = Field(description="NudgeKind: send_message, helpdesk_followup, menu")
    status: str | None = Field(description="NudgeStatus, e.g. held_until_08:00_quiet_hours")
    started_at: datetime | None
    next_action: NextActionOut | None = Field(
        description="what it does next, when and why; null if it did not answer in time"
    )


@router.get("/contacts/{contact_id}/next", response_model=list[RunningWork])
async def contact_next(
    contact_id: ContactId, _: UserToken, store: StoreDep, client: TemporalDep
) -> list[RunningWork]:
    """The contact's running workflows (by the ``ContactId`` search attribute), each with
    what it will do next. A follow-up carries the contact from its first reading of the
    conversation (after its first wait); a message sent to a bare address, from its first
    hold."""
    if await asyncio.to_thread(store.get_contact, contact_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"contact_id: no contact {contact_id}")
    query = f"ContactId = '{contact_id}' AND ExecutionStatus = 'Running'"
    found: list[RunningWork] = []
    async for execution in client.list_workflows(query, limit=RUNNING_LIMIT):
        attrs = execution.typed_search_attributes
        found.append(
            RunningWork(
                workflow_id=execution.id,
                run_id=execution.run_id,
                kind=attrs.get(NUDGE_KIND),
                status=attrs.get(NUDGE_STATUS),
                started_at=execution.start_time,
                next_action=None,
            )
        )
    actions = await next_actions(client, [(run.workflow_id, run.run_id) for run in found])
    for run, action in zip(found, actions, strict=True):
        run.next_action = action
    return found
