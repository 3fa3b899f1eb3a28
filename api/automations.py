"""``/v1/automations``: automation rules (``domain.automations``), their runs, and running
one by hand. The body of a rule is the original system's, field for field, so a rule written
for it is accepted unchanged; a rule's ``webhook_secret`` is written, never read back.

Every change to a rule is told to the ``AutomationStarter`` (``rule_changed``): waiting runs
of a rule switched off or deleted end, watches and reminders re-read their rules.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Query, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from pydantic import field_validator as validates
from temporalio.service import RPCError

from automation_starts import AutomationStarter
from dependencies import AdminToken, AutomationsDep, StoreDep, UserToken
from domain import limits
from domain.automation_runs import RunStatus
from domain.automations import (
    TIMER_TRIGGERS,
    TRANSACTIONAL_TYPES,
    Action,
    AutomationRule,
    AutomationType,
    ContactUpdate,
)
from domain.channels import WHATSAPP_CHANNELS, ChannelName, MessageClass
from domain.events import json_size, type_problem
from store.automations import RunView, StoredRule
from store.events import NoContact
from store.repo import Store

router = APIRouter(prefix="/v1/automations", tags=["automations"])

AutomationId = Annotated[int, Path(ge=1, le=limits.RECORD_ID)]
RecordId = Annotated[int, Field(ge=1, le=limits.RECORD_ID)]
FieldName = Annotated[str, StringConstraints(max_length=limits.KEY_NAME)]
UNREACHABLE = (RPCError, OSError, RuntimeError, HTTPException)
"""What the Temporal client raises when the server cannot be reached (``OSError`` covers a
connection timeout); ``HTTPException`` is the connector's own 503."""
NOT_REACHABLE = "Temporal is not reachable; nothing was sent."
RETRY = {"Retry-After": "5"}
RUNS_LISTED = 500
"""Runs of the contact read to find those an event scheduled (``POST /trigger``)."""


# --- what is shown of a rule -----------------------------------------------------------


class RunCounts(BaseModel):
    waiting: int = Field(description="scheduled, or doing their action now")
    sent: int = Field(description="their message went out")
    done: int = Field(description="their contact update or webhook call was made")
    skipped: int = Field(description="not run: switched off, conditions no longer held, too late")
    suppressed: int = Field(description="the send path refused: opted out, outside the window")
    failed: int


class AutomationOut(BaseModel):
    """A stored rule: every field of its body (``webhook_secret`` only as whether it is set)
    and what its runs did."""

    id: int
    name: str
    type: AutomationType
    trigger: str
    delay_hours: int
    delay_days: int
    channel: ChannelName | None
    message_template: str
    conditions: dict[str, Any]
    enabled: bool
    action: Action
    template: str | None
    message_class: MessageClass
    repeat: int
    set: ContactUpdate | None
    webhook_url: str | None
    webhook_secret_set: bool = Field(description="the secret is never shown")
    times_triggered: int = Field(description="runs scheduled, whatever became of them")
    last_triggered: datetime | None = Field(description="when the latest run was scheduled")
    counts: RunCounts
    created_at: datetime
    updated_at: datetime


def automation_out(stored: StoredRule) -> AutomationOut:
    rule, stats = stored.rule, stored.stats
    return AutomationOut(
        id=stored.id,
        **rule.model_dump(mode="json", exclude={"webhook_secret"}),
        webhook_secret_set=rule.webhook_secret is not None,
        times_triggered=stats.times_triggered,
        last_triggered=stats.last_triggered,
        counts=RunCounts(
            waiting=stats.waiting,
            sent=stats.sent,
            done=stats.done,
            skipped=stats.skipped,
            suppressed=stats.suppressed,
            failed=stats.failed,
        ),
        created_at=stored.created_at,
        updated_at=stored.updated_at,
    )


class RunOut(BaseModel):
    id: int
    workflow_id: str
    contact_id: int
    occurrence: str = Field(description="event-42, quiet-<start>-1, booking-7-<time>, manual-...")
    event_id: int | None
    due_at: datetime
    status: RunStatus
    channel: str | None
    message: str | None
    reason: str | None
    created_at: datetime
    finished_at: datetime | None


def run_out(run: RunView) -> RunOut:
    return RunOut(
        id=run.id,
        workflow_id=run.workflow_id,
        contact_id=run.contact_id,
        occurrence=run.occurrence,
        event_id=run.event_id,
        due_at=run.due_at,
        status=run.status,
        channel=run.channel,
        message=run.message,
        reason=run.reason,
        created_at=run.created_at,
        finished_at=run.finished_at,
    )


# --- bodies ------------------------------------------------------------------------------


class ForContact(BaseModel):
    """``contact_id``, or ``lead_id`` (the original's name): exactly one of them."""

    model_config = ConfigDict(extra="forbid")

    contact_id: RecordId | None = None
    lead_id: RecordId | None = Field(default=None, description="the original's contact_id")
    data: dict[FieldName, Any] = Field(
        default_factory=dict,
        description=f"the event's data (conditions' event.<name>, templates' values), "
        f"a JSON object of at most {limits.EVENT_DATA} characters",
    )

    @validates("data")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        if json_size(value) > limits.EVENT_DATA:
            raise ValueError(f"at most {limits.EVENT_DATA} characters as JSON")
        return value

    def contact(self, *more: dict[str, Any]) -> tuple[str, int]:
        """The field that names the contact and its id; or a 422 listing this problem and
        ``more`` (the caller's own)."""
        named = [
            (name, value)
            for name, value in (("contact_id", self.contact_id), ("lead_id", self.lead_id))
            if value is not None
        ]
        errors = list(more)
        if len(named) != 1:
            errors.insert(0, _one_of("contact_id", "lead_id", given=len(named)))
        if errors:
            raise RequestValidationError(errors)
        return named[0]


class TestIn(ForContact):
    dry_run: bool = Field(
        default=True, description="render the message and ask the policy; send nothing"
    )


class TestOut(BaseModel):
    status: RunStatus
    channel: str | None
    text: str
    subject: str
    verdict: str = Field(description="a dry run's policy answer: send, wait (until, why)...")
    reason: str
    writer: str = Field(description="who wrote the text: template, rule, the LLM, fallback")


class TriggerIn(ForContact):
    automation_id: RecordId | None = Field(
        default=None, description="run this rule for the contact (after its delay)"
    )
    trigger: str | None = Field(
        default=None,
        max_length=limits.EVENT_NAME,
        description="raise an event of this type for the contact: every rule it triggers runs",
    )

    @validates("trigger")
    @classmethod
    def _event_type(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = type_problem(value)
        if problem is not None:
            raise ValueError(f"trigger: {problem}")
        if value in TIMER_TRIGGERS:
            raise ValueError(
                f"trigger: no event raises {value} (Nudge schedules it); "
                f"pass the automation_id of a {value} rule to run it for the contact"
            )
        return value


class TriggerOut(BaseModel):
    event_id: int | None = Field(description="the event raised (a trigger), else null")
    workflow_ids: list[str] = Field(description="the runs scheduled")


# --- routes ------------------------------------------------------------------------------


@router.post("", response_model=AutomationOut, status_code=status.HTTP_201_CREATED)
async def create_automation(
    body: AutomationRule, _: AdminToken, store: StoreDep, automations: AutomationsDep
) -> AutomationOut:
    """A rule, as the original system wrote it (its read-only ``id``, ``times_triggered``...
    are ignored). A 422 names each field at fault (``["body", "conditions", "lead_stat"]``)."""
    await _check_template(store, body)
    stored = await asyncio.to_thread(store.create_automation, body)
    await automations.rule_changed(stored.id, stored)
    return automation_out(stored)


@router.get("", response_model=list[AutomationOut])
async def list_automations(
    _: UserToken,
    store: StoreDep,
    trigger: Annotated[str | None, Query(max_length=limits.EVENT_NAME)] = None,
) -> list[AutomationOut]:
    """By id; ``trigger`` keeps the rules of one trigger."""
    found = await asyncio.to_thread(store.list_automations, trigger=trigger)
    return [automation_out(stored) for stored in found]


@router.post("/trigger", response_model=TriggerOut, status_code=status.HTTP_202_ACCEPTED)
async def trigger_automation(
    body: TriggerIn, _: AdminToken, store: StoreDep, automations: AutomationsDep
) -> TriggerOut:
    """Run one rule for a contact (``automation_id``), or raise an event for them
    (``trigger``: every switched-on rule of that type whose conditions hold runs)."""
    given = (body.automation_id is not None) + (body.trigger is not None)
    field, contact_id = body.contact(
        *([_one_of("automation_id", "trigger", given=given)] if given != 1 else [])
    )
    if body.trigger is not None:
        return await _raise(store, automations, body.trigger, field, contact_id, body.data)
    assert body.automation_id is not None
    stored = await _stored(store, body.automation_id)
    if not stored.rule.enabled:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"automation_id: rule {stored.id} is switched off; "
            f'PATCH /v1/automations/{stored.id} {{"enabled": true}} first',
        )
    await _contact(store, field, contact_id)
    await _reach(automations, "nothing was started")
    try:
        workflow_id = await automations.trigger(stored, contact_id, body.data)
    except UNREACHABLE as exc:
        raise _unreachable("the run was scheduled but not started") from exc
    return TriggerOut(event_id=None, workflow_ids=[workflow_id])


@router.get("/{automation_id}", response_model=AutomationOut)
async def get_automation(
    automation_id: AutomationId, _: UserToken, store: StoreDep
) -> AutomationOut:
    return automation_out(await _stored(store, automation_id))


@router.patch("/{automation_id}", response_model=AutomationOut)
async def update_automation(
    automation_id: AutomationId,
    body: Annotated[
        dict[str, Any],
        Body(
            description="Only the fields given change (any field of the rule's body); "
            "null clears one. The webhook_secret is kept unless a new one is given.",
            examples=[{"enabled": False}, {"delay_days": 2, "conditions": {"status": "new"}}],
        ),
    ],
    _: AdminToken,
    store: StoreDep,
    automations: AutomationsDep,
) -> AutomationOut:
    """Change the fields given; ``{"enabled": false}`` switches the rule off (its waiting
    runs end). The rule as changed is checked whole: a 422 names each field at fault."""
    stored = await _stored(store, automation_id)
    if not body:
        return automation_out(stored)
    rule = _merged(stored.rule, body)
    if {"template", "channel"} & body.keys():
        await _check_template(store, rule)
    changed = await asyncio.to_thread(store.replace_automation, automation_id, rule)
    if changed is None:
        raise _no_rule(automation_id)
    await automations.rule_changed(automation_id, changed)
    return automation_out(changed)


@router.delete("/{automation_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_automation(
    automation_id: AutomationId, _: AdminToken, store: StoreDep, automations: AutomationsDep
) -> None:
    """The rule; its waiting runs end (their rows stay, for the record)."""
    if not await asyncio.to_thread(store.delete_automation, automation_id):
        raise _no_rule(automation_id)
    await automations.rule_changed(automation_id, None)


@router.post(
    "/{automation_id}/test",
    response_model=TestOut,
    responses={503: {"description": NOT_REACHABLE}},
)
async def test_automation(
    automation_id: AutomationId,
    body: TestIn,
    _: AdminToken,
    store: StoreDep,
    automations: AutomationsDep,
) -> TestOut:
    """Run the rule for the contact now, whatever its delay and even switched off, and wait
    for what it did. With ``dry_run`` (the default) the message is written and the policy
    asked (quiet hours, the cap, opt-outs), and nothing is sent."""
    field, contact_id = body.contact()
    stored = await _stored(store, automation_id)
    await _contact(store, field, contact_id)
    await _reach(automations, "nothing was sent")
    try:
        outcome = await automations.run_now(
            stored, contact_id, dry_run=body.dry_run, data=dict(body.data)
        )
    except TimeoutError as exc:
        raise HTTPException(
            status.HTTP_504_GATEWAY_TIMEOUT,
            "the test run did not finish in time (is a worker running?); "
            + ("nothing was sent" if body.dry_run else "it may still send when a worker takes it"),
        ) from exc
    except UNREACHABLE as exc:
        raise _unreachable("nothing was sent") from exc
    return TestOut(
        status=outcome.status,
        channel=outcome.channel,
        text=outcome.text,
        subject=outcome.subject,
        verdict=outcome.verdict,
        reason=outcome.reason,
        writer=outcome.writer,
    )


@router.get("/{automation_id}/runs", response_model=list[RunOut])
async def list_runs(
    automation_id: AutomationId,
    _: UserToken,
    store: StoreDep,
    status_: Annotated[RunStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=limits.MAX_OFFSET)] = 0,
) -> list[RunOut]:
    """The rule's runs, newest first."""
    await _stored(store, automation_id)
    runs = await asyncio.to_thread(
        store.list_runs,
        automation_id=automation_id,
        status=None if status_ is None else status_.value,
        limit=limit,
        offset=offset,
    )
    return [run_out(run) for run in runs]


# --- helpers -----------------------------------------------------------------------------


def _merged(current: AutomationRule, patch: dict[str, Any]) -> AutomationRule:
    """``current`` with ``patch``'s fields, checked whole; a 422 at each field at fault."""
    merged = {**current.model_dump(mode="json"), **patch}
    old_type = current.type.value
    if "type" in patch and patch["type"] != old_type:
        # A default the old type chose (a crm_update's action, a reminder's message class)
        # follows the new type, unless the patch says otherwise.
        old_defaults = _type_defaults(current.type)
        for name in ("action", "message_class"):
            if name not in patch and merged[name] == old_defaults[name]:
                merged[name] = None  # the rule's ``_defaults`` fills it in for the new type
    try:
        return AutomationRule.model_validate(merged)
    except ValidationError as exc:
        errors: list[dict[str, Any]] = []
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            shown = {**error, "loc": ("body", *loc)}
            if not loc or loc[0] == "webhook_secret":
                shown.pop("input", None)  # the stored secret is never shown
            errors.append(shown)
        raise RequestValidationError(errors) from None


def _type_defaults(kind: AutomationType) -> dict[str, str]:
    """What ``AutomationRule`` gives a rule of ``kind`` that says no ``action`` or
    ``message_class``."""
    crm = kind is AutomationType.crm_update
    return {
        "action": (Action.update_contact if crm else Action.send).value,
        "message_class": (
            MessageClass.transactional if kind in TRANSACTIONAL_TYPES else MessageClass.marketing
        ).value,
    }


async def _check_template(store: Store, rule: AutomationRule) -> None:
    """A rule's ``template`` names a stored template written for the rule's channel."""
    if rule.template is None:
        return
    found = await asyncio.to_thread(store.get_template, rule.template)
    if found is None:
        raise _refuse(
            ["body", "template"],
            f"template: no template {rule.template!r}; POST /v1/templates makes one",
        )
    written_for = found.template.channel
    same = written_for == rule.channel or {written_for, rule.channel} <= WHATSAPP_CHANNELS
    if not same:
        on = rule.channel.value if rule.channel is not None else "no channel"
        raise _refuse(
            ["body", "template"],
            f"template: {rule.template!r} is written for {written_for.value}, "
            f"this rule sends on {on}",
        )


async def _raise(
    store: Store,
    automations: AutomationStarter,
    kind: str,
    field: str,
    contact_id: int,
    data: dict[str, Any],
) -> TriggerOut:
    try:
        event, _ = await asyncio.to_thread(
            store.raise_event, kind, data=data, contact_id=contact_id
        )
    except NoContact as exc:
        raise _no_contact(field, contact_id) from exc
    await automations.dispatch(event)  # when it cannot finish now, the sweep does later
    runs = await asyncio.to_thread(store.list_runs, contact_id=contact_id, limit=RUNS_LISTED)
    scheduled = [run.workflow_id for run in reversed(runs) if run.event_id == event.id]
    return TriggerOut(event_id=event.id, workflow_ids=scheduled)


async def _stored(store: Store, automation_id: int) -> StoredRule:
    stored = await asyncio.to_thread(store.get_automation, automation_id)
    if stored is None:
        raise _no_rule(automation_id)
    return stored


async def _contact(store: Store, field: str, contact_id: int) -> None:
    if await asyncio.to_thread(store.get_contact, contact_id) is None:
        raise _no_contact(field, contact_id)


async def _reach(automations: AutomationStarter, nothing: str) -> None:
    """Connect first, so that an unreachable Temporal leaves nothing half done behind."""
    try:
        await automations.client()
    except UNREACHABLE as exc:
        raise _unreachable(nothing) from exc


def _unreachable(what: str) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE, f"Temporal is not reachable; {what}.", headers=RETRY
    )


def _no_rule(automation_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"automation_id: no rule {automation_id}")


def _no_contact(field: str, contact_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{field}: no contact {contact_id}")


def _one_of(first: str, second: str, *, given: int) -> dict[str, Any]:
    which = "not both" if given else "one of them"
    return _error(["body", first], f"{first}: give {first} or {second}, {which}")


def _error(loc: list[str], msg: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": "value_error"}


def _refuse(loc: list[str], msg: str) -> RequestValidationError:
    return RequestValidationError([_error(loc, msg)])
