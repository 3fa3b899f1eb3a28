"""Everything wrong with a menu definition, at once, each problem with its path.

``problems`` lets the API answer one 422 that names every problem, and ``nudge serve`` refuse
a menus file before it answers anybody. Limits are WhatsApp's documented ones
(``domain.whatsapp``); ids are checked per kind (256 for buttons, 200 for rows), as Meta does.
Only text headers are accepted: menus are also sent as plain text on channels without
interactive messages, where a media header has nothing to show.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterator
from datetime import timedelta
from typing import Any

from domain import limits, whatsapp
from domain.menu_definition import (
    BUILTIN_VALIDATORS,
    MAX_EXPIRY,
    NAME,
    MenuDefinition,
    MenuStep,
    Problem,
    Validator,
    as_dict,
    as_list,
)
from domain.text import placeholders
from domain.user_patterns import pattern_problem

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
EVENT = re.compile(r"[A-Za-z0-9_.:-]+")
_KIND = {"menu": "a menu", "question": "a question", "end": "an end step"}


def problems(definition: MenuDefinition, known_menus: set[str] | None = None) -> list[Problem]:
    """Every rule the definition breaks, each with its path; empty when it is sound.

    ``known_menus`` are the other stored menus a ``next`` may name; None skips that check
    for targets that are not steps (used when a whole file is loaded at once).
    """
    found = _definition_problems(definition)
    for name, step in definition.steps.items():
        found += _step_problems(f"steps.{name}", step, definition, known_menus)
    found += _unreachable_problems(definition)
    found += _placeholder_problems(definition)
    return found


def _definition_problems(definition: MenuDefinition) -> list[Problem]:
    """The definition's own fields: name, keywords, expiry, start."""
    found: list[Problem] = []
    if not NAME.fullmatch(definition.name):
        found.append(
            Problem(
                "name",
                f"{definition.name!r} is not a valid menu name: use 1 to {limits.MENU_NAME} "
                "lowercase letters, "
                "digits, '_' or '-', starting with a letter or digit",
            )
        )
    found += _keyword_problems(definition.trigger_keywords)
    if definition.expiry <= timedelta(0):
        seconds = definition.expiry.total_seconds()
        found.append(Problem("expiry", f"expiry is {seconds:g}s; it must be positive, e.g. 24h"))
    elif definition.expiry > MAX_EXPIRY:
        days = definition.expiry.total_seconds() / 86400
        found.append(
            Problem("expiry", f"expiry is {days:g} days; at most {MAX_EXPIRY.days} days, e.g. 24h")
        )
    if definition.expiry_message and definition.expiry >= whatsapp.CUSTOMER_SERVICE_WINDOW:
        hours = definition.expiry.total_seconds() / 3600
        found.append(
            Problem(
                "expiry_message",
                f"the expiry message can never be sent: with expiry {hours:g}h, WhatsApp's "
                "24-hour window has closed before the conversation expires; set expiry below "
                "24h (e.g. 23h) or remove expiry_message",
            )
        )
    found += [
        Problem(
            f"steps.{name}",
            f"the step name is {len(name)} characters; at most {limits.STEP_NAME}",
        )
        for name in definition.steps
        if len(name) > limits.STEP_NAME
    ]
    if not definition.steps:
        found.append(Problem("steps", "a menu needs at least one step"))
    elif definition.start not in definition.steps:
        found.append(
            Problem(
                "start",
                f"start is {definition.start!r}, which is not a step of this menu "
                f"(steps: {', '.join(definition.steps)})",
            )
        )
    return found


def _keyword_problems(keywords: list[str]) -> list[Problem]:
    """Blank keywords never match; a repeated one (ignoring case) is an editing slip."""
    found: list[Problem] = []
    if len(keywords) > limits.MAX_TRIGGER_KEYWORDS:
        found.append(
            Problem(
                "trigger_keywords",
                f"{len(keywords)} trigger keywords; at most {limits.MAX_TRIGGER_KEYWORDS}",
            )
        )
    first: dict[str, int] = {}
    for index, keyword in enumerate(keywords):
        path = f"trigger_keywords[{index}]"
        folded = keyword.strip().casefold()
        if len(keyword) > limits.TRIGGER_KEYWORD:
            found.append(
                Problem(
                    path,
                    f"trigger keyword is {len(keyword)} characters; at most "
                    f"{limits.TRIGGER_KEYWORD}",
                )
            )
        elif not folded:
            found.append(Problem(path, "trigger keyword is empty"))
        elif folded in first:
            found.append(
                Problem(
                    path,
                    f"trigger keyword {keyword!r} repeats trigger_keywords[{first[folded]}] "
                    "(case does not matter)",
                )
            )
        else:
            first[folded] = index
    return found


def _step_problems(
    path: str, step: MenuStep, definition: MenuDefinition, known_menus: set[str] | None
) -> list[Problem]:
    found = _message_problems(path, step)
    found += _next_problems(path, step, definition, known_menus)
    found += _answer_problems(path, step)
    found += _end_problems(path, step)
    return found


def _message_problems(path: str, step: MenuStep) -> list[Problem]:
    message = step.message
    if step.kind == "menu" and isinstance(message, dict):
        return _interactive_problems(f"{path}.message", message)
    if isinstance(message, dict):
        return [
            Problem(
                f"{path}.message",
                "an end step sends text; buttons or a list need a next step for each reply, "
                "so make this a menu step (remove end: true)",
            )
        ]
    if step.kind == "question" and not message.strip():
        return [Problem(f"{path}.message", "the question is empty; write what to ask")]
    return []


# --- interactive messages (rules 1-7) -------------------------------------------------------


def _text_problems(
    value: Any, path: str, what: str, limit: int, *, required: bool, missing: str = ""
) -> list[Problem]:
    """Checks one text of an interactive message: present when required, text, short enough."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return [Problem(path, missing or f"{what} is empty; write some text")] if required else []
    if not isinstance(value, str):
        return [Problem(path, f"{what} must be text, not {value!r}; put it in quotes")]
    if len(value) > limit:
        return [
            Problem(path, f"{what} is {len(value)} characters; WhatsApp allows at most {limit}")
        ]
    return []


def _part(message: dict[str, Any], key: str, path: str) -> tuple[dict[str, Any], list[Problem]]:
    """An object-valued part (``body``, ``action``, a button...) or the problem of its shape."""
    value = message.get(key)
    if isinstance(value, dict):
        return value, []
    if value is None:
        return {}, [Problem(f"{path}.{key}", f"{key} is missing")]
    return {}, [Problem(f"{path}.{key}", f"{key} must be an object with fields, not {value!r}")]


def _interactive_problems(path: str, message: dict[str, Any]) -> list[Problem]:
    found = _type_problems(path, message)
    found += _texts_problems(path, message)
    action, shape = _part(message, "action", path)
    if shape:
        return found + shape
    if message.get("type") == "button":
        found += _buttons_problems(f"{path}.action", action)
    elif message.get("type") == "list":
        found += _list_problems(f"{path}.action", action)
    return found


def _type_problems(path: str, message: dict[str, Any]) -> list[Problem]:
    kind = message.get("type")
    if kind in ("button", "list"):
        return []
    return [
        Problem(
            f"{path}.type",
            f"menu message type is {kind!r}; use 'button' (up to 3 reply buttons) "
            "or 'list' (up to 10 rows)",
        )
    ]


def _texts_problems(path: str, message: dict[str, Any]) -> list[Problem]:
    """Body (required), header and footer (optional; when present, their text is required)."""
    body, found = _part(message, "body", path)
    if not found:
        found = _text_problems(
            body.get("text"), f"{path}.body.text", "body text", whatsapp.BODY, required=True
        )
    if "header" in message:
        header, shape = _part(message, "header", path)
        found += shape or _header_problems(f"{path}.header", header)
    if "footer" in message:
        footer, shape = _part(message, "footer", path)
        found += shape or _text_problems(
            footer.get("text"), f"{path}.footer.text", "footer text", whatsapp.FOOTER, required=True
        )
    return found


def _header_problems(path: str, header: dict[str, Any]) -> list[Problem]:
    if header.get("type") != "text":
        return [
            Problem(
                f"{path}.type",
                f"header type is {header.get('type')!r}; only text headers are supported "
                "(type: text)",
            )
        ]
    return _text_problems(
        header.get("text"), f"{path}.text", "header text", whatsapp.HEADER, required=True
    )


class _Ids:
    """Reply ids seen so far in one message: each must be unique, so a reply names one step."""

    def __init__(self) -> None:
        self.first: dict[str, str] = {}

    def check(self, value: Any, path: str, where: str, what: str, limit: int) -> list[Problem]:
        found = _text_problems(value, path, what, limit, required=True)
        if found:
            return found
        if value in self.first:
            return [
                Problem(
                    path,
                    f"id {value!r} is already used by {self.first[value]}; "
                    "each choice needs its own id",
                )
            ]
        self.first[value] = where
        return []


def _buttons_problems(path: str, action: dict[str, Any]) -> list[Problem]:
    buttons = action.get("buttons")
    if not isinstance(buttons, list) or not buttons:
        return [Problem(f"{path}.buttons", "a button message needs 1 to 3 buttons; it has none")]
    found: list[Problem] = []
    if len(buttons) > whatsapp.MAX_BUTTONS:
        found.append(
            Problem(
                f"{path}.buttons[{whatsapp.MAX_BUTTONS}]",
                f"the message has {len(buttons)} buttons; WhatsApp allows at most {whatsapp.MAX_BUTTONS} "
                "(use type: list for up to 10 choices)",
            )
        )
    ids = _Ids()
    for index, button in enumerate(buttons):
        found += _button_problems(f"{path}.buttons[{index}]", f"buttons[{index}]", button, ids)
    if "sections" in action:
        found.append(
            Problem(
                f"{path}.sections",
                "a button message has no sections; use type: list to send a list",
            )
        )
    return found


def _button_problems(path: str, where: str, button: Any, ids: _Ids) -> list[Problem]:
    if not isinstance(button, dict):
        return [Problem(path, f"a button must be an object with type and reply, not {button!r}")]
    found: list[Problem] = []
    if button.get("type") != "reply":
        found.append(
            Problem(
                f"{path}.type",
                f"button type is {button.get('type')!r}; reply buttons have type: reply",
            )
        )
    reply, shape = _part(button, "reply", path)
    if shape:
        return found + shape
    found += ids.check(reply.get("id"), f"{path}.reply.id", where, "button id", whatsapp.BUTTON_ID)
    found += _text_problems(
        reply.get("title"),
        f"{path}.reply.title",
        "button title",
        whatsapp.BUTTON_TITLE,
        required=True,
    )
    return found


def _list_problems(path: str, action: dict[str, Any]) -> list[Problem]:
    found = _text_problems(
        action.get("button"),
        f"{path}.button",
        "list button text",
        whatsapp.LIST_BUTTON,
        required=True,
        missing="a list needs button: the text of the button that opens it",
    )
    if "buttons" in action:
        found.append(
            Problem(
                f"{path}.buttons",
                "a list message has no reply buttons; use type: button for buttons",
            )
        )
    sections = action.get("sections")
    if not isinstance(sections, list) or not sections:
        return [*found, Problem(f"{path}.sections", "a list needs at least one section with rows")]
    if len(sections) > whatsapp.MAX_SECTIONS:
        found.append(
            Problem(
                f"{path}.sections[{whatsapp.MAX_SECTIONS}]",
                f"the list has {len(sections)} sections; WhatsApp allows at most {whatsapp.MAX_SECTIONS}",
            )
        )
    return found + _sections_problems(f"{path}.sections", sections)


def _sections_problems(path: str, sections: list[Any]) -> list[Problem]:
    found: list[Problem] = []
    ids = _Ids()
    total = sum(len(as_list(as_dict(section).get("rows"))) for section in sections)
    counted = 0
    for index, section in enumerate(sections):
        where = f"{path}[{index}]"
        if not isinstance(section, dict):
            found.append(Problem(where, f"a section must be an object with rows, not {section!r}"))
            continue
        found += _text_problems(
            section.get("title"),
            f"{where}.title",
            "section title",
            whatsapp.SECTION_TITLE,
            required=len(sections) > 1,
            missing="section title is required when a list has more than one section",
        )
        rows = section.get("rows")
        if not isinstance(rows, list) or not rows:
            found.append(Problem(f"{where}.rows", "a section needs at least one row"))
            continue
        for row_index, row in enumerate(rows):
            counted += 1
            row_path = f"{where}.rows[{row_index}]"
            if counted == whatsapp.MAX_ROWS + 1:
                found.append(
                    Problem(
                        row_path,
                        f"the list has {total} rows across its sections; WhatsApp allows at "
                        f"most {whatsapp.MAX_ROWS}",
                    )
                )
            label = f"sections[{index}].rows[{row_index}]"
            found += _row_problems(row_path, label, row, ids)
    return found


def _row_problems(path: str, where: str, row: Any, ids: _Ids) -> list[Problem]:
    if not isinstance(row, dict):
        return [Problem(path, f"a row must be an object with id and title, not {row!r}")]
    found = ids.check(row.get("id"), f"{path}.id", where, "row id", whatsapp.ROW_ID)
    found += _text_problems(
        row.get("title"), f"{path}.title", "row title", whatsapp.ROW_TITLE, required=True
    )
    found += _text_problems(
        row.get("description"),
        f"{path}.description",
        "row description",
        whatsapp.ROW_DESCRIPTION,
        required=False,
    )
    return found


# --- next and the step graph (rules 8, 9) ---------------------------------------------------


def _next_problems(
    path: str, step: MenuStep, definition: MenuDefinition, known_menus: set[str] | None
) -> list[Problem]:
    if step.kind == "end":
        if step.next is None:
            return []
        return [Problem(f"{path}.next", "an end step has no next; remove it or remove end: true")]
    if step.kind == "question":
        return _question_next_problems(path, step, definition, known_menus)
    return _menu_next_problems(path, step, definition, known_menus)


def _question_next_problems(
    path: str, step: MenuStep, definition: MenuDefinition, known_menus: set[str] | None
) -> list[Problem]:
    if isinstance(step.next, dict):
        return [
            Problem(
                f"{path}.next",
                "a question goes on to one step: write next: <step>, not a choice per reply",
            )
        ]
    if step.next is None:
        return [Problem(f"{path}.next", "a question needs next: the step after the answer")]
    return _target_problems(f"{path}.next", step.next, definition, known_menus)


def _menu_next_problems(
    path: str, step: MenuStep, definition: MenuDefinition, known_menus: set[str] | None
) -> list[Problem]:
    if not isinstance(step.next, dict):
        return [
            Problem(
                f"{path}.next",
                "a menu needs next to map each reply id to a step, e.g. next: {new_order: ask_qty}",
            )
        ]
    options = dict(step.reply_options())
    found = [
        Problem(f"{path}.next", f"no next step for the reply {reply_id!r} ({title!r})")
        for reply_id, title in options.items()
        if reply_id and reply_id not in step.next
    ]
    for reply_id, target in step.next.items():
        if reply_id in options:
            found += _target_problems(f"{path}.next.{reply_id}", target, definition, known_menus)
        else:
            found.append(
                Problem(
                    f"{path}.next.{reply_id}",
                    f"there is no reply with id {reply_id!r} in this message "
                    f"(ids: {', '.join(options) or 'none'})",
                )
            )
    return found


def _target_problems(
    path: str, target: str, definition: MenuDefinition, known_menus: set[str] | None
) -> list[Problem]:
    """A target is a step, this menu itself (start over) or, when known, another menu."""
    if not target.strip():
        return [Problem(path, "the next step is empty; name a step or another menu")]
    if target in definition.steps or target == definition.name:
        return []
    if known_menus is None or target in known_menus:
        return []
    return [Problem(path, f"{target!r} is neither a step of this menu nor another menu")]


def _successors(definition: MenuDefinition, name: str) -> list[str]:
    """Steps of this definition that ``name`` can go to (other menus leave this graph)."""
    return [t for t in definition.steps[name].targets() if t in definition.steps]


def _reachable(definition: MenuDefinition) -> list[str]:
    """Steps reachable from ``start``, in the order a depth-first walk meets them."""
    if definition.start not in definition.steps:
        return []
    seen = {definition.start: None}  # a dict keeps the walk's order, a set's lookups
    pending = [definition.start]
    while pending:
        for target in _successors(definition, pending.pop()):
            if target not in seen:
                seen[target] = None
                pending.append(target)
    return list(seen)


def _unreachable_problems(definition: MenuDefinition) -> list[Problem]:
    reachable = set(_reachable(definition))
    if not reachable:
        return []  # no valid start: already reported, every step would be noise
    return [
        Problem(
            f"steps.{name}",
            f"no path from start {definition.start!r} reaches this step; "
            "link it from another step's next or remove it",
        )
        for name in definition.steps
        if name not in reachable
    ]


# --- answers, ends, placeholders (rules 10-13) ----------------------------------------------


def _answer_problems(path: str, step: MenuStep) -> list[Problem]:
    """``save_as`` and ``validate`` belong to questions (menus and ends save nothing)."""
    found: list[Problem] = []
    if step.kind == "question" and step.save_as is None:
        found.append(
            Problem(f"{path}.save_as", "a question needs save_as: the name to save the answer as")
        )
    elif step.kind != "question" and step.save_as is not None:
        found.append(
            Problem(
                f"{path}.save_as", f"only questions save answers; this step is {_KIND[step.kind]}"
            )
        )
    if step.save_as is not None and not IDENTIFIER.fullmatch(step.save_as):
        found.append(
            Problem(
                f"{path}.save_as",
                f"{step.save_as!r} is not a valid name: use letters, digits and '_', "
                "not starting with a digit (it is written {name} in messages)",
            )
        )
    if step.validate_ is not None:
        if step.kind != "question":
            found.append(
                Problem(
                    f"{path}.validate",
                    f"only questions are checked; this step is {_KIND[step.kind]}",
                )
            )
        found += _validator_problems(f"{path}.validate", step.validate_)
    return found


def _validator_problems(path: str, validator: Validator) -> list[Problem]:
    if isinstance(validator, str):
        if validator in BUILTIN_VALIDATORS:
            return []
        return [
            Problem(
                path,
                f"{validator!r} is not a built-in check; use {', '.join(BUILTIN_VALIDATORS)}, "
                "a list of accepted answers or {regex: <pattern>}",
            )
        ]
    if isinstance(validator, list):
        if not validator:
            return [Problem(path, "the list of accepted answers is empty")]
        return [
            Problem(f"{path}[{index}]", "accepted answer is empty")
            for index, answer in enumerate(validator)
            if not answer.strip()
        ]
    return _regex_problems(path, validator)


def _regex_problems(path: str, validator: dict[str, str]) -> list[Problem]:
    if set(validator) != {"regex"}:
        return [Problem(path, f"write a pattern check as {{regex: <pattern>}}, not {validator!r}")]
    problem = pattern_problem(validator["regex"])
    return [] if problem is None else [Problem(f"{path}.regex", problem)]


def _end_problems(path: str, step: MenuStep) -> list[Problem]:
    """Events and handoffs happen when a conversation ends, so only end steps have them."""
    found: list[Problem] = []
    if step.event is not None:
        if step.kind != "end":
            found.append(
                Problem(
                    f"{path}.event", f"only end steps emit events; this step is {_KIND[step.kind]}"
                )
            )
        if not step.event:
            found.append(Problem(f"{path}.event", "event name is empty; remove event or name it"))
        elif len(step.event) > limits.EVENT_NAME:
            found.append(
                Problem(
                    f"{path}.event",
                    f"event name is {len(step.event)} characters; at most {limits.EVENT_NAME}",
                )
            )
        elif not EVENT.fullmatch(step.event):
            found.append(
                Problem(
                    f"{path}.event",
                    f"event name {step.event!r} is not valid: use letters, digits "
                    "and _ . : - (no spaces)",
                )
            )
    if step.handoff and step.kind != "end":
        found.append(
            Problem(f"{path}.handoff", f"only end steps hand off; this step is {_KIND[step.kind]}")
        )
    return found


def _saves(step: MenuStep) -> frozenset[str]:
    return frozenset([step.save_as]) if step.kind == "question" and step.save_as else frozenset()


def saved_before(definition: MenuDefinition) -> dict[str, frozenset[str]]:
    """For each step reachable from ``start``: the names saved on EVERY path that reaches it."""
    bits, before = _saved_masks(definition)
    return {
        step: frozenset(name for name, bit in bits.items() if known & bit)
        for step, known in before.items()
    }


def _saved_masks(definition: MenuDefinition) -> tuple[dict[str, int], dict[str, int]]:
    """``saved_before`` as bit masks (one bit per saved name, ``bits``), for every step.

    A must-analysis (greatest fixpoint) over the step graph, which may have cycles: each
    step starts with every name, ``start`` with none (a conversation begins, and restarts,
    with nothing saved), and a step keeps only what all of its predecessors pass on. Masks,
    not sets: each visit intersects sets as large as the menu, which made a 4,000-question
    menu take seconds to check.
    """
    bits: dict[str, int] = {}
    for step in definition.steps.values():
        for name in _saves(step):
            bits.setdefault(name, 1 << len(bits))
    reachable = _reachable(definition)
    before = dict.fromkeys(reachable, (1 << len(bits)) - 1)
    if reachable:
        before[definition.start] = 0
    pending = list(reachable)
    while pending:
        name = pending.pop()
        after = before[name]
        for saved in _saves(definition.steps[name]):
            after |= bits[saved]
        for target in _successors(definition, name):
            narrowed = 0 if target == definition.start else before[target] & after
            if narrowed != before[target]:
                before[target] = narrowed
                pending.append(target)
    return bits, before


def _texts(path: str, step: MenuStep) -> Iterator[tuple[str, str]]:
    """(path, text) of every text sent with placeholders filled in."""
    if isinstance(step.message, str):
        yield f"{path}.message", step.message
        return
    for part in ("header", "body", "footer"):
        text = as_dict(step.message.get(part)).get("text")
        if isinstance(text, str):
            yield f"{path}.message.{part}.text", text


def _placeholder_problems(definition: MenuDefinition) -> list[Problem]:
    bits, before = _saved_masks(definition)
    found: list[Problem] = []
    for name, known in before.items():
        for path, text in _texts(f"steps.{name}", definition.steps[name]):
            found += [
                _unknown_placeholder(path, placeholder, bits)
                for placeholder in placeholders(text)
                if not known & bits.get(placeholder, 0)
            ]
    found += [
        Problem(
            "expiry_message",
            f"{{{placeholder}}} may not be known: a conversation can expire before any "
            "answer is saved",
        )
        for placeholder in placeholders(definition.expiry_message)
    ]
    return found


def _unknown_placeholder(path: str, placeholder: str, everything: Container[str]) -> Problem:
    if placeholder in everything:
        return Problem(
            path,
            f"{{{placeholder}}} may not be known here: not every way to this step goes "
            f"through the question with save_as: {placeholder}",
        )
    return Problem(
        path, f"{{{placeholder}}} is never saved: no question has save_as: {placeholder}"
    )
