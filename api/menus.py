"""WhatsApp menu definitions for operators: edit them, and see how customers go through them.

A definition is checked as a whole before it is saved; every problem comes back in one 422,
in FastAPI's own shape (``loc`` from ``body``), so a client handles both kinds of 422 alike.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Callable, Collection, Coroutine, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, StringConstraints, ValidationError, field_validator

from dependencies import AdminToken, StoreDep
from domain import limits, whatsapp
from domain.menu_checks import problems
from domain.menu_definition import BUILTIN_VALIDATORS, NAME, MenuDefinition, MenuStep
from domain.status import SESSION_STATUSES, MenuStatus
from store.menus import MenuSessionView
from store.repo import Store


class MenuRoute(APIRoute):
    """A definition's shape errors (an unknown field, a number where text goes) and the
    problems ``domain.menu_checks`` finds in the rest of it come back in one 422: an
    operator fixing a menu sees everything wrong with it at once, not one layer per try."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def every_problem(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                if request.method not in ("POST", "PUT") or not isinstance(exc.body, dict):
                    raise
                errors = list(exc.errors())
                name = request.path_params.get("name")
                raw = exc.body if name is None else {**exc.body, "name": name}
                errors += await _problems_beside(request.app.state.store, raw, errors)
                raise RequestValidationError(errors, body=exc.body) from None

        return every_problem


router = APIRouter(prefix="/v1/menus", tags=["menus"], route_class=MenuRoute)

_PATH_PART = re.compile(r"\[(\d+)\]|\[[\"']([^\"']*)[\"']\]|([^.\[\]]+)")


StepName = Annotated[str, StringConstraints(max_length=limits.STEP_NAME)]
Keyword = Annotated[str, StringConstraints(max_length=limits.TRIGGER_KEYWORD)]


class MenuStepIn(MenuStep):
    """A step as a request sends it: a value of the wrong kind is one error saying what
    goes there, not one per kind the field could have been."""

    @field_validator("message", mode="before")
    @classmethod
    def _message(cls, value: Any) -> Any:
        if not isinstance(value, str | dict):
            raise ValueError(
                "write the message as text, or as a WhatsApp interactive object "
                '({"type": "button", "body": ..., "action": ...})'
            )
        return value

    @field_validator("next", mode="before")
    @classmethod
    def _next(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, dict):
            raise ValueError("write next as a step's name, or as {reply id: step} for a menu")
        for reply_id, target in value.items():
            if not isinstance(target, str):
                raise ValueError(f"the step after the reply {reply_id!r} must be a step's name")
        return value

    @field_validator("validate_", mode="before")
    @classmethod
    def _validate(cls, value: Any) -> Any:
        checks = ", ".join(BUILTIN_VALIDATORS)
        if value is None or value in BUILTIN_VALIDATORS:
            return value
        if isinstance(value, list) and all(isinstance(answer, str) for answer in value):
            return value
        if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            return value
        if isinstance(value, str):
            raise ValueError(f"{value[:40]!r} is not a built-in check; use {checks}")
        raise ValueError(
            f"write validate as a built-in check ({checks}), a list of accepted answers "
            "or {regex: <pattern>}"
        )


class MenuIn(MenuDefinition):
    """A definition as a request sends it: the fields bounded (what is inside a step is
    bounded by ``domain.menu_checks``), so an oversized field is a 422 naming it."""

    name: str = Field(max_length=limits.MENU_NAME)
    trigger_keywords: list[Keyword] = Field(
        default_factory=list, max_length=limits.MAX_TRIGGER_KEYWORDS
    )
    start: StepName
    expiry_message: str = Field(default="", max_length=whatsapp.TEXT)
    steps: dict[StepName, MenuStepIn]  # type: ignore[assignment]


class MenuReplace(MenuIn):
    """A definition whose name comes from the path (a name in the body must match it)."""

    name: str | None = Field(default=None, max_length=limits.MENU_NAME)  # type: ignore[assignment]


class MenuStatsOut(BaseModel):
    started: int
    active: int
    completed: int
    expired: int
    handed_off: int
    cancelled: int
    moved: int
    drop_off: dict[str, int] = Field(description="expired sessions per the step they stopped at")


@router.get("", response_model=list[MenuDefinition])
async def list_menus(_: AdminToken, store: StoreDep, active: bool | None = None) -> Any:
    """Highest priority first, then by name."""
    menus = await asyncio.to_thread(store.list_menus, active_only=active is True)
    return [menu for menu in menus if active is None or menu.active == active]


@router.post("", response_model=MenuDefinition, status_code=status.HTTP_201_CREATED)
async def create_menu(body: MenuIn, _: AdminToken, store: StoreDep, request: Request) -> Any:
    if await asyncio.to_thread(store.get_menu, body.name) is not None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"name: a menu {body.name!r} exists already; PUT /v1/menus/{body.name} replaces it",
        )
    await _save(store, body)
    _changed(request)
    return body


@router.get("/{name}", response_model=MenuDefinition)
async def get_menu(name: str, _: AdminToken, store: StoreDep) -> Any:
    return await _menu(store, name)


@router.put(
    "/{name}",
    response_model=MenuDefinition,
    responses={201: {"description": "Created", "model": MenuDefinition}},
)
async def replace_menu(
    name: str,
    body: MenuReplace,
    response: Response,
    request: Request,
    _: AdminToken,
    store: StoreDep,
) -> Any:
    """Create the menu, or replace it: 201 when created, 200 when replaced."""
    mismatch: list[dict[str, Any]] = []  # reported with the definition's own problems
    if body.name is not None and body.name != name:
        mismatch.append(
            {
                "loc": ["body", "name"],
                "msg": f"must be {name!r}, the name in the path, or be left out",
                "type": "value_error",
            }
        )
    if not NAME.fullmatch(name):
        raise RequestValidationError(
            [
                {
                    "loc": ["path", "name"],
                    "msg": f"{name!r} is not a menu name: lower-case letters, digits, _ and -",
                    "type": "menu_definition",
                }
            ]
        )
    definition = MenuDefinition.model_validate({**body.model_dump(by_alias=True), "name": name})
    if await _save(store, definition, mismatch):
        response.status_code = status.HTTP_201_CREATED
    _changed(request)
    return definition


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_menu(name: str, _: AdminToken, store: StoreDep, request: Request) -> None:
    """Conversations already running keep the definition they started with."""
    if not await asyncio.to_thread(store.delete_menu, name):
        raise _not_found(name)
    _changed(request)


@router.get("/{name}/sessions", response_model=list[MenuSessionView])
async def list_sessions(
    name: str,
    _: AdminToken,
    store: StoreDep,
    status_: Annotated[MenuStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Any]:
    """Newest first, with what each customer answered (context) and the whole transcript."""
    if status_ is not None and status_ not in SESSION_STATUSES:
        raise RequestValidationError(
            [
                {
                    "loc": ["query", "status"],
                    "msg": f"a session is never {status_.value!r}; it is one of "
                    + ", ".join(s.value for s in SESSION_STATUSES),
                    "type": "enum",
                }
            ]
        )
    await _menu(store, name)
    sessions = await asyncio.to_thread(
        store.list_menu_sessions,
        name,
        status=status_.value if status_ else None,
        limit=limit,
    )
    return [session.__dict__ for session in sessions]


@router.get("/{name}/stats", response_model=MenuStatsOut)
async def menu_stats(name: str, _: AdminToken, store: StoreDep) -> Any:
    await _menu(store, name)
    return (await asyncio.to_thread(store.menu_stats, name)).__dict__


async def _menu(store: Store, name: str) -> MenuDefinition:
    menu = await asyncio.to_thread(store.get_menu, name)
    if menu is None:
        raise _not_found(name)
    return menu


def _keys(definition: MenuDefinition) -> set[str]:
    keys = set(definition.steps)
    for step in definition.steps.values():
        if isinstance(step.next, dict):
            keys.update(step.next)
    return keys


def _changed(request: Request) -> None:
    """The inbound router of this process sees the edit at once (others within seconds)."""
    request.app.state.menu_router.invalidate()


def _not_found(name: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"name: no menu {name!r}")


async def _save(
    store: Store, definition: MenuDefinition, errors: Sequence[dict[str, Any]] = ()
) -> bool:
    """Save when sound (True when created); otherwise a 422 listing every problem (after
    ``errors``, those the route found)."""
    known = await asyncio.to_thread(store.menu_names)
    # In a thread: checking a menu of thousands of steps is CPU work, and the event loop
    # keeps answering everybody else meanwhile.
    errors = [*errors, *await asyncio.to_thread(_errors, definition, known | {definition.name})]
    if errors:
        raise RequestValidationError(errors)
    return await asyncio.to_thread(store.save_menu, definition)


def _errors(definition: MenuDefinition, known_menus: set[str]) -> list[dict[str, Any]]:
    """Every problem of the definition, as FastAPI's own 422 entries."""
    keys = _keys(definition)
    return [
        {
            "loc": problem_loc(problem.path, keys),
            "msg": problem.message,
            "type": "menu_definition",
        }
        for problem in problems(definition, known_menus=known_menus)
    ]


def problem_loc(path: str, keys: Collection[str] = ()) -> list[str | int]:
    """``steps.a.message.action.buttons[3].reply`` -> ``["body", "steps", "a", "message",
    "action", "buttons", 3, "reply"]``.

    ``keys`` are the definition's step names and reply ids: free text that may itself hold
    a ``.`` ("ask.day"), kept whole where the path names them.
    """
    loc: list[str | int] = ["body"]
    rest = path
    while rest:
        key = _key_at(rest, keys, after=loc[-1])
        if key is not None:
            loc.append(key)
            rest = rest[len(key) :].removeprefix(".")
            continue
        match = _PATH_PART.match(rest)
        if match is None:  # a stray separator
            rest = rest[1:]
            continue
        index, quoted, plain = match.groups()
        loc.append(int(index) if index else quoted or plain)
        rest = rest[match.end() :].removeprefix(".")
    return loc


def _key_at(rest: str, keys: Collection[str], *, after: str | int) -> str | None:
    """The longest step name or reply id that ``rest`` starts with, right after ``steps``
    or ``next`` (where the path names one)."""
    if after not in ("steps", "next"):
        return None
    # Only the prefixes that end where a separator follows can be keys: looking those up
    # costs the path's length, not the menu's size (a 4,000-step menu has 4,000 keys).
    ends = [i for i, c in enumerate(rest) if c in ".["] + [len(rest)]
    return next((rest[:end] for end in reversed(ends) if rest[:end] in keys), None)


async def _problems_beside(
    store: Store, raw: dict[str, Any], shape_errors: Sequence[Any]
) -> list[dict[str, Any]]:
    """What ``domain.menu_checks`` finds in a definition that also has shape errors: the
    definition is repaired as far as it can be (a field at fault removed, a message at fault
    blanked), and no problem is reported where a shape error already is."""
    salvaged = _salvage(raw)
    if salvaged is None:
        return []
    definition, blanked = salvaged
    known = await asyncio.to_thread(store.menu_names)
    found = await asyncio.to_thread(_errors, definition, known | {definition.name})
    taken = [list(error["loc"]) for error in shape_errors]
    taken += [["body", "steps", name] for name in blanked]
    return [error for error in found if not any(_overlap(error["loc"], loc) for loc in taken)]


def _overlap(a: list[Any], b: list[Any]) -> bool:
    """One location lies within the other (or they are the same)."""
    size = min(len(a), len(b))
    return a[:size] == b[:size]


OPTIONAL = {"trigger_keywords", "priority", "expiry", "expiry_message", "active"}


def _salvage(raw: dict[str, Any]) -> tuple[MenuDefinition, set[str]] | None:
    """``raw`` made valid by dropping or blanking what is at fault; None when what is at
    fault is what every check needs (the name, ``start``, ``steps``). Also the steps whose
    message was blanked: their own problems would be the blanking's."""
    data = copy.deepcopy(raw)
    blanked: set[str] = set()
    for _ in range(3):  # a repair can uncover an error inside what it kept
        try:
            return MenuDefinition.model_validate(data), blanked
        except ValidationError as exc:
            if not all(_repair(data, list(error["loc"]), blanked) for error in exc.errors()):
                return None
    return None


def _repair(data: dict[str, Any], loc: list[Any], blanked: set[str]) -> bool:
    field = loc[0] if loc else None
    if field in OPTIONAL or field not in MenuDefinition.model_fields:
        data.pop(str(field), None)
        return True
    steps = data.get("steps")
    if field != "steps" or len(loc) < 2 or not isinstance(steps, dict) or loc[1] not in steps:
        return False
    name, step = loc[1], steps[loc[1]]
    if not isinstance(step, dict) or len(loc) < 3:
        steps[name] = {"message": "", "end": True}
        blanked.add(name)
    elif loc[2] == "message":
        step["message"] = {} if isinstance(step.get("next"), dict) else ""
        blanked.add(name)
    else:
        step.pop(str(loc[2]), None)
    return True
