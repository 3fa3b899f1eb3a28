"""A menu definition: the steps of a WhatsApp menu conversation, as operators write them.

The same model is stored by the API, loaded from ``NUDGE_MENUS__FILE`` and carried into each
``MenuConversation`` run (a running conversation keeps the definition it started with, so an
edit never changes a conversation half-way). A menu step's ``message`` is exactly the WhatsApp
Cloud API ``interactive`` object, so operators can paste Meta's own examples.

What a definition may hold is checked by ``domain.menu_checks.problems``; how a customer's
answer to a question is checked, by ``domain.menu_answers.check_answer``.
"""

# No ``from __future__ import annotations``: these models cross the workflow boundary and
# pydantic resolves their annotations inside the workflow sandbox.

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from domain import limits
from domain.durations import format_duration, parse_duration

DEFAULT_EXPIRY = timedelta(hours=24)
MAX_EXPIRY = timedelta(days=30)
"""A month without a word is not a conversation any more (and keeps timers sane)."""
MAX_PATTERN = 200
"""Characters in a ``regex`` check. Patterns run inside the conversation's workflow task, so
they are kept to what a field check needs (see also ``MAX_CHECKED_ANSWER``)."""
MAX_CHECKED_ANSWER = 1000
"""An answer longer than this fails a ``regex`` check without running the pattern: the time a
backtracking pattern takes grows with the answer, and a blocked workflow task is retried."""
NAME = re.compile(rf"[a-z0-9][a-z0-9_-]{{0,{limits.MENU_NAME - 1}}}")
BUILTIN_VALIDATORS = ("number", "email", "phone", "date")
Validator = Literal["number", "email", "phone", "date"] | list[str] | dict[str, str]
"""A built-in check, a list of accepted answers (one of), or ``{"regex": "..."}``."""


class MenuStep(BaseModel):
    """One of three kinds, told apart by its fields:

    - a menu: ``message`` is an ``interactive`` object (``button`` or ``list``); ``next`` maps
      each reply id to a step of this definition or to another menu by name;
    - a question: ``message`` is text, ``save_as`` names the answer, ``validate`` and
      ``error`` check it, ``next`` is one target;
    - an end: ``end: true``, ``message`` text with ``{saved}`` placeholders, optionally an
      ``event`` emitted with the collected context and ``handoff: true`` for a human.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    message: str | dict[str, Any]
    next: str | dict[str, str] | None = None
    save_as: str | None = None
    validate_: Validator | None = Field(default=None, alias="validate")
    error: str = ""
    end: bool = False
    event: str | None = None
    handoff: bool = False

    @property
    def kind(self) -> Literal["menu", "question", "end"]:
        if self.end:
            return "end"
        if isinstance(self.message, dict):
            return "menu"
        return "question"

    def reply_options(self) -> list[tuple[str, str]]:
        """(id, title) of every button (``button``) or list row (``list``), in order.

        Tolerates any shape: it also runs on definitions that have not been checked yet (a
        conversation must never crash on a malformed menu, it just offers fewer choices).
        """
        if not isinstance(self.message, dict):
            return []
        action = as_dict(self.message.get("action"))
        kind = self.message.get("type")
        options: list[tuple[str, str]] = []
        if kind != "list":
            for button in as_list(action.get("buttons")):
                options.append(_option(as_dict(as_dict(button).get("reply"))))
        if kind != "button":
            for section in as_list(action.get("sections")):
                for row in as_list(as_dict(section).get("rows")):
                    options.append(_option(as_dict(row)))
        return options

    def targets(self) -> list[str]:
        if isinstance(self.next, dict):
            return list(self.next.values())
        return [self.next] if self.next else []


class MenuDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    trigger_keywords: list[str] = Field(default_factory=list)
    priority: int = 0
    start: str
    expiry: timedelta = DEFAULT_EXPIRY
    """Inactivity after which the conversation ends as ``expired`` (sliding)."""
    expiry_message: str = ""
    """Sent on expiry, only while the WhatsApp window is still open; empty sends nothing."""
    active: bool = True
    steps: dict[str, MenuStep]

    @field_validator("expiry", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip() and value.strip()[-1] in "smhd":
            # No ceiling here: the checks refuse over 30 days when a menu is saved, and a
            # definition already in a workflow's history must always read back.
            return parse_duration(value, longest=None)
        return value  # ISO 8601 (``PT24H``): how definitions were written before

    @field_serializer("expiry", when_used="json")
    def _written_as_entered(self, value: timedelta) -> str:
        return format_duration(value)


@dataclass(frozen=True)
class Problem:
    path: str
    """Where, from the definition's root: ``steps.initial.message.action.buttons[3].reply.title``."""
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _option(reply: dict[str, Any]) -> tuple[str, str]:
    return str(reply.get("id", "")), str(reply.get("title", ""))
