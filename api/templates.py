"""``/v1/templates``: message templates operators write once and every sender renders the same
way (``domain.templates``). A template with a placeholder nothing declares, or a variable
nothing uses, is refused when saved; ``/render`` shows what a contact would receive."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from dependencies import AdminToken, StoreDep, UserToken
from domain import limits
from domain.templates import (
    TEMPLATE_NAME,
    MessageTemplate,
    MissingVariables,
    TemplateError,
    problems,
    render,
)
from store.repo import Store
from store.templates import StoredTemplate, TemplateExists

router = APIRouter(prefix="/v1/templates", tags=["templates"])

KeyName = Annotated[str, StringConstraints(max_length=limits.KEY_NAME)]
Value = Annotated[str, StringConstraints(max_length=limits.TEMPLATE_VARIABLE)]


class TemplateReplace(MessageTemplate):
    """A template whose name comes from the path (a name in the body must match it)."""

    name: str | None = Field(default=None, max_length=limits.MESSAGE_TEMPLATE_NAME)  # type: ignore[assignment]


class TemplateOut(MessageTemplate):
    id: int
    """What ``template_id`` names (``POST /v1/scheduled-followups``)."""
    created_at: datetime
    updated_at: datetime


class RenderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    locale: str | None = Field(
        default=None,
        max_length=limits.LOCALE,
        description="the contact's locale; the template's default_locale when left out",
    )
    values: dict[KeyName, Value] = Field(
        default_factory=dict, max_length=limits.MAX_TEMPLATE_VARIABLES
    )


class RenderOut(BaseModel):
    subject: str | None
    text: str
    locale_used: str


@router.post("", response_model=TemplateOut, status_code=status.HTTP_201_CREATED)
async def create_template(body: MessageTemplate, _: AdminToken, store: StoreDep) -> Any:
    _refuse_problems(body)
    try:
        stored = await asyncio.to_thread(store.create_template, body)
    except TemplateExists:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"name: a template {body.name!r} exists already; "
            f"PUT /v1/templates/{body.name} replaces it",
        ) from None
    return _out(stored)


@router.get("", response_model=list[TemplateOut])
async def list_templates(_: UserToken, store: StoreDep) -> Any:
    """By name."""
    return [_out(stored) for stored in await asyncio.to_thread(store.list_templates)]


@router.get("/{name}", response_model=TemplateOut)
async def get_template(name: str, _: UserToken, store: StoreDep) -> Any:
    return _out(await _stored(store, name))


@router.put(
    "/{name}",
    response_model=TemplateOut,
    responses={201: {"description": "Created", "model": TemplateOut}},
)
async def replace_template(
    name: str, body: TemplateReplace, response: Response, _: AdminToken, store: StoreDep
) -> Any:
    """Create the template, or replace it: 201 when created, 200 when replaced."""
    errors: list[dict[str, Any]] = []
    if len(name) > limits.MESSAGE_TEMPLATE_NAME or not TEMPLATE_NAME.fullmatch(name):
        errors.append(
            _error(
                ["path", "name"],
                f"{name[:40]!r} is not a template name: at most "
                f"{limits.MESSAGE_TEMPLATE_NAME} lower-case letters, digits, _ and -",
            )
        )
    if body.name is not None and body.name != name:
        errors.append(_error(["body", "name"], f"must be {name[:40]!r}, the name in the path"))
    if errors:
        raise RequestValidationError(errors)
    template = MessageTemplate.model_validate({**body.model_dump(), "name": name})
    _refuse_problems(template)
    stored, created = await asyncio.to_thread(store.save_template, template)
    if created:
        response.status_code = status.HTTP_201_CREATED
    return _out(stored)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_template(name: str, _: AdminToken, store: StoreDep) -> None:
    """409 while scheduled follow-ups of the template wait to be sent: cancel them first,
    or make the template inactive (``is_active: false``) to stop new ones."""
    stored = await _stored(store, name)
    waiting = await asyncio.to_thread(store.open_schedules_for_template, stored.id)
    if waiting:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"name: {waiting} scheduled follow-up(s) of {name!r} are still to be sent; cancel "
            "them or set is_active to false",
        )
    if not await asyncio.to_thread(store.delete_template, name):
        raise _not_found(name)


@router.post("/{name}/render", response_model=RenderOut)
async def render_template(name: str, body: RenderIn, _: UserToken, store: StoreDep) -> Any:
    """What a contact of ``locale`` would receive with these values: the variant is the
    locale's own (``pt-BR``), else its language's (``pt``), else the template's default.
    A placeholder without a value is a 422 naming it, never a raw ``{{name}}`` in the text."""
    stored = await _stored(store, name)
    try:
        rendered = render(stored.template, body.locale, body.values)
    except MissingVariables as exc:
        raise RequestValidationError(
            [
                _error(["body", "values", missing], f"no value for {missing} ({exc.where})")
                for missing in exc.names
            ]
        ) from None
    except TemplateError as exc:
        raise RequestValidationError([_error(["body", "values"], str(exc))]) from None
    return RenderOut(subject=rendered.subject, text=rendered.text, locale_used=rendered.locale_used)


async def _stored(store: Store, name: str) -> StoredTemplate:
    stored = await asyncio.to_thread(store.get_template, name)
    if stored is None:
        raise _not_found(name)
    return stored


def _out(stored: StoredTemplate) -> TemplateOut:
    return TemplateOut(
        **stored.template.model_dump(),
        id=stored.id,
        created_at=stored.created_at,
        updated_at=stored.updated_at,
    )


def _refuse_problems(template: MessageTemplate) -> None:
    """Every problem of the template in one 422, each where it is (``body.variants.ta``)."""
    found = problems(template)
    if found:
        raise RequestValidationError(
            [_error(["body", *problem.loc], problem.message) for problem in found]
        )


def _error(loc: list[str | int], message: str) -> dict[str, Any]:
    return {"loc": loc, "msg": message, "type": "template"}


def _not_found(name: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"name: no template {name[:80]!r}")
