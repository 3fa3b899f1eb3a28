"""Menu definitions: every rule ``problems`` checks, with its exact path, and ``check_answer``.

Each case edits a copy of a sound definition at paths written like the problems' own paths
(``steps.initial.message.action.buttons[0].reply.title``) and lists every problem expected,
in order, so a rule that stops firing, fires twice or names the wrong place fails the test.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from pydantic import ValidationError

from api.menus import problem_loc
from domain.menu_answers import check_answer
from domain.menu_checks import problems, saved_before
from domain.menu_definition import MenuDefinition, MenuStep, Problem
from domain.text import placeholders

SOUND: dict[str, Any] = {
    "name": "main_menu",
    "trigger_keywords": ["hi", "hello", "menu"],
    "priority": 1,
    "start": "initial",
    "steps": {
        "initial": {
            "message": {
                "type": "button",
                "body": {"text": "Welcome! How can we help?"},
                "action": {
                    "buttons": [
                        {"type": "reply", "reply": {"id": "new_order", "title": "New Order"}},
                        {"type": "reply", "reply": {"id": "support", "title": "Support"}},
                    ]
                },
            },
            "next": {"new_order": "ask_qty", "support": "support_end"},
        },
        "ask_qty": {
            "message": "How many plants?",
            "save_as": "qty",
            "validate": "number",
            "error": "Please send a number",
            "next": "order_end",
        },
        "order_end": {
            "message": "Order for {qty} plants noted!",
            "end": True,
            "event": "new_order",
        },
        "support_end": {"message": "An agent will reply soon.", "end": True, "handoff": True},
    },
}

LIST_MESSAGE: dict[str, Any] = {
    "type": "list",
    "header": {"type": "text", "text": "Plant shop"},
    "body": {"text": "What would you like to do?"},
    "footer": {"text": "Reply any time"},
    "action": {
        "button": "Choose",
        "sections": [
            {
                "title": "Orders",
                "rows": [{"id": "new_order", "title": "New Order", "description": "Buy plants"}],
            },
            {"title": "Help", "rows": [{"id": "support", "title": "Support"}]},
        ],
    },
}
AS_LIST: dict[str, Any] = {"steps.initial.message": LIST_MESSAGE}
"""The sound definition with its first menu sent as a list instead of buttons."""

DELETE = object()
BUTTONS = "steps.initial.message.action.buttons"
SECTIONS = "steps.initial.message.action.sections"
UNREACHABLE = "no path from start"
_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _keys(path: str) -> list[str | int]:
    return [name if name else int(index) for name, index in _SEGMENT.findall(path)]


def edited(edits: dict[str, Any], base: dict[str, Any] = SOUND) -> dict[str, Any]:
    """A copy of ``base`` with each path set (or deleted with ``DELETE``), in order."""
    data = copy.deepcopy(base)
    for path, value in edits.items():
        *parents, last = _keys(path)
        container: Any = data
        for key in parents:
            container = container[key]
        if value is DELETE:
            del container[last]
        elif isinstance(last, int) and last == len(container):
            container.append(copy.deepcopy(value))
        else:
            container[last] = copy.deepcopy(value)
    return data


def found(data: dict[str, Any], known_menus: set[str] | None = None) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in problems(MenuDefinition.model_validate(data), known_menus)]


def button(reply_id: str, title: str = "Choice") -> dict[str, Any]:
    return {"type": "reply", "reply": {"id": reply_id, "title": title}}


def rows(*ids: str) -> list[dict[str, Any]]:
    return [{"id": row_id, "title": row_id.title()} for row_id in ids]


def choices(first: str, *others: str) -> dict[str, str]:
    """A menu's next: the first reply goes on to order, the others to support."""
    return {first: "ask_qty", **dict.fromkeys(others, "support_end")}


# (edits, expected problems as (path, a fragment of the message)), one group per rule.
CASES: dict[str, tuple[dict[str, Any], list[tuple[str, str]]]] = {
    # 1. menu message type and body
    "1-type-not-button-or-list": (
        {"steps.initial.message.type": "cta_url"},
        [("steps.initial.message.type", "menu message type is 'cta_url'; use 'button'")],
    ),
    "1-body-missing": (
        {"steps.initial.message.body": DELETE},
        [("steps.initial.message.body", "body is missing")],
    ),
    "1-body-text-empty": (
        {"steps.initial.message.body.text": "  "},
        [("steps.initial.message.body.text", "body text is empty")],
    ),
    # 2. one to three reply buttons
    "2-four-buttons": (
        {
            f"{BUTTONS}[2]": button("care"),
            f"{BUTTONS}[3]": button("refund"),
            "steps.initial.next": choices("new_order", "support", "care", "refund"),
        },
        [(f"{BUTTONS}[3]", "the message has 4 buttons; WhatsApp allows at most 3")],
    ),
    "2-no-buttons": (
        {BUTTONS: [], "steps.initial.next": {}},
        [
            (BUTTONS, "needs 1 to 3 buttons; it has none"),
            ("steps.ask_qty", UNREACHABLE),
            ("steps.order_end", UNREACHABLE),
            ("steps.support_end", UNREACHABLE),
        ],
    ),
    "2-button-type-not-reply": (
        {f"{BUTTONS}[1].type": "url"},
        [(f"{BUTTONS}[1].type", "button type is 'url'; reply buttons have type: reply")],
    ),
    # 3. button titles
    "3-button-title-too-long": (
        {f"{BUTTONS}[0].reply.title": "Order some nice plants!"},
        [
            (
                f"{BUTTONS}[0].reply.title",
                "button title is 23 characters; WhatsApp allows at most 20",
            )
        ],
    ),
    "3-button-title-empty": (
        {f"{BUTTONS}[1].reply.title": ""},
        [(f"{BUTTONS}[1].reply.title", "button title is empty")],
    ),
    "3-button-title-not-text": (
        {f"{BUTTONS}[1].reply.title": True},  # YAML reads a bare Yes as true
        [(f"{BUTTONS}[1].reply.title", "button title must be text, not True; put it in quotes")],
    ),
    # 4. list size, list button, sections
    "4-eleven-rows": (
        {
            **AS_LIST,
            f"{SECTIONS}[0].rows": rows(*(f"r{i}" for i in range(10))),
            "steps.initial.next": choices(*(f"r{i}" for i in range(10)), "support"),
        },
        [
            (
                f"{SECTIONS}[1].rows[0]",
                "the list has 11 rows across its sections; WhatsApp allows at most 10",
            )
        ],
    ),
    "4-eleven-sections": (
        {
            **AS_LIST,
            SECTIONS: [{"title": f"S{i}", "rows": rows(f"s{i}")} for i in range(11)],
            "steps.initial.next": choices(*(f"s{i}" for i in range(11))),
        },
        [
            (f"{SECTIONS}[10]", "the list has 11 sections; WhatsApp allows at most 10"),
            (f"{SECTIONS}[10].rows[0]", "the list has 11 rows"),
        ],
    ),
    "4-no-rows": (
        {**AS_LIST, SECTIONS: [], "steps.initial.next": {}},
        [
            (SECTIONS, "a list needs at least one section with rows"),
            ("steps.ask_qty", UNREACHABLE),
            ("steps.order_end", UNREACHABLE),
            ("steps.support_end", UNREACHABLE),
        ],
    ),
    "4-section-without-rows": (
        {**AS_LIST, f"{SECTIONS}[2]": {"title": "Empty", "rows": []}},
        [(f"{SECTIONS}[2].rows", "a section needs at least one row")],
    ),
    "4-list-button-missing": (
        {**AS_LIST, "steps.initial.message.action.button": DELETE},
        [("steps.initial.message.action.button", "a list needs button: the text of the button")],
    ),
    "4-list-button-too-long": (
        {**AS_LIST, "steps.initial.message.action.button": "Choose what you need!"},
        [
            (
                "steps.initial.message.action.button",
                "list button text is 21 characters; WhatsApp allows at most 20",
            )
        ],
    ),
    "4-section-title-too-long": (
        {**AS_LIST, f"{SECTIONS}[0].title": "Orders and order changes!"},
        [(f"{SECTIONS}[0].title", "section title is 25 characters; WhatsApp allows at most 24")],
    ),
    "4-section-title-needed-with-two-sections": (
        {**AS_LIST, f"{SECTIONS}[1].title": DELETE},
        [(f"{SECTIONS}[1].title", "required when a list has more than one section")],
    ),
    # 5. rows
    "5-row-title-too-long": (
        {**AS_LIST, f"{SECTIONS}[1].rows[0].title": "Talk to a person, please!"},
        [
            (
                f"{SECTIONS}[1].rows[0].title",
                "row title is 25 characters; WhatsApp allows at most 24",
            )
        ],
    ),
    "5-row-description-too-long": (
        {**AS_LIST, f"{SECTIONS}[0].rows[0].description": "x" * 73},
        [
            (
                f"{SECTIONS}[0].rows[0].description",
                "row description is 73 characters; WhatsApp allows at most 72",
            )
        ],
    ),
    # 6. body, header and footer lengths
    "6-body-too-long": (
        {"steps.initial.message.body.text": "x" * 1025},
        [
            (
                "steps.initial.message.body.text",
                "body text is 1025 characters; WhatsApp allows at most 1024",
            )
        ],
    ),
    "6-header-too-long": (
        {**AS_LIST, "steps.initial.message.header.text": "x" * 61},
        [
            (
                "steps.initial.message.header.text",
                "header text is 61 characters; WhatsApp allows at most 60",
            )
        ],
    ),
    "6-header-not-text": (
        {**AS_LIST, "steps.initial.message.header": {"type": "image", "image": {"id": "1"}}},
        [("steps.initial.message.header.type", "only text headers are supported")],
    ),
    "6-footer-too-long": (
        {**AS_LIST, "steps.initial.message.footer.text": "x" * 61},
        [
            (
                "steps.initial.message.footer.text",
                "footer text is 61 characters; WhatsApp allows at most 60",
            )
        ],
    ),
    # 7. reply ids
    "7-button-ids-repeat": (
        {f"{BUTTONS}[1].reply.id": "new_order", "steps.initial.next.support": DELETE},
        [
            (f"{BUTTONS}[1].reply.id", "id 'new_order' is already used by buttons[0]"),
            ("steps.support_end", UNREACHABLE),
        ],
    ),
    "7-row-ids-repeat": (
        {**AS_LIST, f"{SECTIONS}[1].rows[0].id": "new_order", "steps.initial.next.support": DELETE},
        [
            (f"{SECTIONS}[1].rows[0].id", "id 'new_order' is already used by sections[0].rows[0]"),
            ("steps.support_end", UNREACHABLE),
        ],
    ),
    "7-button-id-empty": (
        {f"{BUTTONS}[0].reply.id": "", "steps.initial.next": {"support": "support_end"}},
        [
            (f"{BUTTONS}[0].reply.id", "button id is empty"),
            ("steps.ask_qty", UNREACHABLE),
            ("steps.order_end", UNREACHABLE),
        ],
    ),
    "7-button-id-257": (
        {f"{BUTTONS}[0].reply.id": "b" * 257, "steps.initial.next": choices("b" * 257, "support")},
        [(f"{BUTTONS}[0].reply.id", "button id is 257 characters; WhatsApp allows at most 256")],
    ),
    "7-row-id-201": (
        {
            **AS_LIST,
            f"{SECTIONS}[0].rows[0].id": "r" * 201,
            "steps.initial.next": {"r" * 201: "ask_qty", "support": "support_end"},
        },
        [(f"{SECTIONS}[0].rows[0].id", "row id is 201 characters; WhatsApp allows at most 200")],
    ),
    # 8. next and start
    "8-menu-next-not-a-mapping": (
        {"steps.initial.next": "ask_qty"},
        [
            ("steps.initial.next", "a menu needs next to map each reply id to a step"),
            ("steps.support_end", UNREACHABLE),
        ],
    ),
    "8-menu-next-misses-a-reply": (
        {"steps.initial.next.support": DELETE},
        [
            ("steps.initial.next", "no next step for the reply 'support' ('Support')"),
            ("steps.support_end", UNREACHABLE),
        ],
    ),
    "8-menu-next-names-no-reply": (
        {"steps.initial.next.refund": "support_end"},
        [
            (
                "steps.initial.next.refund",
                "there is no reply with id 'refund' in this message (ids: new_order, support)",
            )
        ],
    ),
    "8-menu-next-empty-target": (
        {"steps.initial.next.support": " ", "steps.support_end": DELETE},
        [("steps.initial.next.support", "the next step is empty")],
    ),
    "8-question-next-is-a-mapping": (
        {"steps.ask_qty.next": {"any": "order_end"}},
        [("steps.ask_qty.next", "a question goes on to one step")],
    ),
    "8-question-without-next": (
        {"steps.ask_qty.next": DELETE},
        [("steps.ask_qty.next", "a question needs next"), ("steps.order_end", UNREACHABLE)],
    ),
    "8-end-with-next": (
        {"steps.order_end.next": "initial"},
        [("steps.order_end.next", "an end step has no next")],
    ),
    "8-question-without-save-as": (
        {"steps.ask_qty.save_as": DELETE, "steps.order_end.message": "Order noted!"},
        [("steps.ask_qty.save_as", "a question needs save_as")],
    ),
    "8-start-not-a-step": (
        {"start": "begin"},
        [("start", "start is 'begin', which is not a step of this menu (steps: initial, ask_qty")],
    ),
    "8-no-steps": ({"steps": {}}, [("steps", "a menu needs at least one step")]),
    # 9. reachability
    "9-unreachable-step": (
        {"steps.orphan": {"message": "Never sent", "end": True}},
        [("steps.orphan", "no path from start 'initial' reaches this step")],
    ),
    # 10. placeholders
    "10-not-saved-on-every-path": (
        {"steps.support_end.message": "An agent will call about your {qty} plants."},
        [("steps.support_end.message", "{qty} may not be known here")],
    ),
    "10-never-saved": (
        {"steps.order_end.message": "Thanks {customer}!"},
        [("steps.order_end.message", "{customer} is never saved")],
    ),
    "10-menu-texts": (
        {
            **AS_LIST,
            "steps.initial.message.header.text": "Hi {first_name}",
            "steps.initial.message.body.text": "Your {qty} plants?",
            "steps.initial.message.footer.text": "{{qty}} is literal, {shop} is not",
        },
        [
            ("steps.initial.message.header.text", "{first_name} is never saved"),
            ("steps.initial.message.body.text", "{qty} may not be known here"),
            ("steps.initial.message.footer.text", "{shop} is never saved"),
        ],
    ),
    "10-literal-braces-are-not-placeholders": (
        {"steps.support_end.message": "Type {{qty}} or {{ qty }} to see {{{{"},
        [],
    ),
    "10-expiry-message": (
        {"expiry": "2h", "expiry_message": "Your order of {qty} plants was not finished."},
        [("expiry_message", "{qty} may not be known: a conversation can expire")],
    ),
    # 11. validate and save_as
    "11-regex-does-not-compile": (
        {"steps.ask_qty.validate": {"regex": "[0-9"}},
        [
            (
                "steps.ask_qty.validate.regex",
                "the pattern '[0-9' is not valid: missing ]: [0-9",
            )
        ],
    ),
    "11-regex-too-long": (
        {"steps.ask_qty.validate": {"regex": "[0-9]" * 41}},
        [("steps.ask_qty.validate.regex", "the pattern is 205 characters; at most 200")],
    ),
    "11-regex-lookbehind-is-not-re2": (
        {"steps.ask_qty.validate": {"regex": "(?<=x)a"}},
        [("steps.ask_qty.validate.regex", "invalid perl operator: (?<= (RE2 has no")],
    ),
    "11-regex-backreference-is-not-re2": (
        {"steps.ask_qty.validate": {"regex": "(a)\\1"}},
        [("steps.ask_qty.validate.regex", "RE2 has no backreferences")],
    ),
    "11-regex-empty": (
        {"steps.ask_qty.validate": {"regex": ""}},
        [("steps.ask_qty.validate.regex", "the pattern is empty")],
    ),
    "11-regex-wrong-key": (
        {"steps.ask_qty.validate": {"pattern": "[0-9]+"}},
        [("steps.ask_qty.validate", "write a pattern check as {regex: <pattern>}")],
    ),
    "11-empty-answer-list": (
        {"steps.ask_qty.validate": []},
        [("steps.ask_qty.validate", "the list of accepted answers is empty")],
    ),
    "11-blank-accepted-answer": (
        {"steps.ask_qty.validate": ["1", " "]},
        [("steps.ask_qty.validate[1]", "accepted answer is empty")],
    ),
    "11-validate-on-an-end-step": (
        {"steps.order_end.validate": "number"},
        [("steps.order_end.validate", "only questions are checked; this step is an end step")],
    ),
    "11-save-as-not-an-identifier": (
        {"steps.ask_qty.save_as": "plant-qty", "steps.order_end.message": "Order noted!"},
        [("steps.ask_qty.save_as", "'plant-qty' is not a valid name")],
    ),
    "11-save-as-on-a-menu": (
        {"steps.initial.save_as": "choice"},
        [("steps.initial.save_as", "only questions save answers; this step is a menu")],
    ),
    # 12. name, trigger keywords, expiry
    "12-name": (
        {"name": "Main Menu"},
        [("name", "'Main Menu' is not a valid menu name")],
    ),
    "12-blank-keyword": (
        {"trigger_keywords": ["hi", "  "]},
        [("trigger_keywords[1]", "trigger keyword is empty")],
    ),
    "12-repeated-keyword": (
        {"trigger_keywords": ["hi", "Menu", " MENU "]},
        [("trigger_keywords[2]", "trigger keyword ' MENU ' repeats trigger_keywords[1]")],
    ),
    "12-expiry-not-positive": (
        {"expiry": "0s"},
        [("expiry", "expiry is 0s; it must be positive")],
    ),
    "12-expiry-too-long": (
        {"expiry": "400d"},
        [("expiry", "expiry is 400 days; at most 30 days")],
    ),
    "12-expiry-message-after-the-whatsapp-window": (
        {"expiry_message": "This chat has closed."},  # the default expiry: 24h
        [("expiry_message", "the expiry message can never be sent: with expiry 24h")],
    ),
    "12-expiry-message-with-a-long-expiry": (
        {"expiry": "3d", "expiry_message": "This chat has closed."},
        [("expiry_message", "with expiry 72h, WhatsApp's 24-hour window has closed")],
    ),
    # 13. events and handoffs
    "13-event-name": (
        {"steps.order_end.event": "new order"},
        [("steps.order_end.event", "event name 'new order' is not valid")],
    ),
    "13-event-empty": (
        {"steps.order_end.event": ""},
        [("steps.order_end.event", "event name is empty")],
    ),
    "13-event-on-a-question": (
        {"steps.ask_qty.event": "asked"},
        [("steps.ask_qty.event", "only end steps emit events; this step is a question")],
    ),
    "13-handoff-on-a-menu": (
        {"steps.initial.handoff": True},
        [("steps.initial.handoff", "only end steps hand off; this step is a menu")],
    ),
    # messages a step sends
    "end-step-with-buttons": (
        {"steps.support_end.message": {"type": "button"}},
        [("steps.support_end.message", "an end step sends text")],
    ),
    "empty-question": (
        {"steps.ask_qty.message": " "},
        [("steps.ask_qty.message", "the question is empty")],
    ),
}


@pytest.mark.parametrize(("edits", "expected"), list(CASES.values()), ids=list(CASES))
def test_each_rule_reports_its_path(edits: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    reported = found(edited(edits))
    assert [path for path, _ in reported] == [path for path, _ in expected], reported
    for (path, message), (_, fragment) in zip(reported, expected, strict=True):
        assert fragment in message, f"{path}: {message!r} does not say {fragment!r}"


@pytest.mark.parametrize(
    "data",
    [
        SOUND,
        edited(AS_LIST),
        edited(
            {
                f"{BUTTONS}[2]": button("again", "Start over"),
                "steps.initial.next.again": "main_menu",
            }
        ),
        edited({"expiry": "23h", "expiry_message": "This chat has closed."}),
        edited({"steps.ask_qty.validate": {"regex": "[0-9]" * 40}}),
    ],
    ids=[
        "buttons",
        "list",
        "next-names-this-menu",
        "expiry-message-within-the-window",
        "regex-of-200-characters",
    ],
)
def test_a_sound_definition_has_no_problems(data: dict[str, Any]) -> None:
    assert found(data) == []
    assert found(data, known_menus=set()) == []


def test_every_broken_rule_is_reported_at_once() -> None:
    data = edited(
        {
            "name": "Main Menu",
            "trigger_keywords": ["hi", "HI"],
            f"{BUTTONS}[0].reply.title": "Order some nice plants!",
            f"{BUTTONS}[2]": button("care"),
            f"{BUTTONS}[3]": button("refund"),
            "steps.initial.next": choices("new_order", "support", "refund", "gifts")
            | {"care": "checkout"},
            "steps.ask_qty.validate": {"regex": "(unclosed"},
            "steps.order_end.message": "Order for {qty} plants noted, {name}!",
            "steps.order_end.event": "new order",
            "steps.support_end.next": "initial",
            "steps.orphan": {"message": "Never sent", "end": True},
        }
    )
    assert found(data, known_menus={"other_menu"}) == [
        (
            "name",
            "'Main Menu' is not a valid menu name: use 1 to 64 lowercase letters, digits, '_' or '-', starting with a letter or digit",
        ),
        (
            "trigger_keywords[1]",
            "trigger keyword 'HI' repeats trigger_keywords[0] (case does not matter)",
        ),
        (
            f"{BUTTONS}[3]",
            "the message has 4 buttons; WhatsApp allows at most 3 (use type: list for up to 10 choices)",
        ),
        (f"{BUTTONS}[0].reply.title", "button title is 23 characters; WhatsApp allows at most 20"),
        (
            "steps.initial.next.gifts",
            "there is no reply with id 'gifts' in this message (ids: new_order, support, care, refund)",
        ),
        ("steps.initial.next.care", "'checkout' is neither a step of this menu nor another menu"),
        (
            "steps.ask_qty.validate.regex",
            "the pattern '(unclosed' is not valid: missing ): (unclosed",
        ),
        (
            "steps.order_end.event",
            "event name 'new order' is not valid: use letters, digits and _ . : - (no spaces)",
        ),
        ("steps.support_end.next", "an end step has no next; remove it or remove end: true"),
        (
            "steps.orphan",
            "no path from start 'initial' reaches this step; link it from another step's next or remove it",
        ),
        ("steps.order_end.message", "{name} is never saved: no question has save_as: name"),
    ]


@pytest.mark.parametrize(
    ("known_menus", "expected"),
    [
        (None, []),
        ({"care_menu"}, []),
        (set(), ["steps.initial.next.care"]),
        ({"other_menu"}, ["steps.initial.next.care"]),
    ],
    ids=["file-load-accepts-any-name", "known-menu", "no-menus", "unknown-menu"],
)
def test_next_may_name_another_menu_only_when_it_is_known(
    known_menus: set[str] | None, expected: list[str]
) -> None:
    data = edited({f"{BUTTONS}[2]": button("care"), "steps.initial.next.care": "care_menu"})
    assert [path for path, _ in found(data, known_menus)] == expected


def test_an_unknown_built_in_validator_is_rejected_when_read_and_reported_when_built() -> None:
    with pytest.raises(ValidationError):
        MenuDefinition.model_validate(edited({"steps.ask_qty.validate": "numbr"}))
    definition = MenuDefinition.model_validate(SOUND)
    step = definition.steps["ask_qty"].model_copy(update={"validate_": "numbr"})
    definition.steps["ask_qty"] = step
    assert problems(definition) == [
        Problem(
            "steps.ask_qty.validate",
            "'numbr' is not a built-in check; use number, email, phone, date, a list of "
            "accepted answers or {regex: <pattern>}",
        )
    ]


LOOP: dict[str, Any] = {
    "name": "loop",
    "start": "initial",
    "steps": {
        "initial": {
            "message": {
                "type": "button",
                "body": {"text": "Hi!"},
                "action": {"buttons": [button("order"), button("review", "Review")]},
            },
            "next": {"order": "ask_qty", "review": "confirm"},
        },
        "ask_qty": {"message": "How many?", "save_as": "qty", "next": "confirm"},
        "confirm": {
            "message": {
                "type": "button",
                "body": {"text": "{qty} plants, {name}?"},
                "action": {
                    "buttons": [button("yes", "Yes"), button("change"), button("home", "Home")]
                },
            },
            "next": {"yes": "ask_name", "change": "ask_qty", "home": "initial"},
        },
        "ask_name": {"message": "Your name for {qty} plants?", "save_as": "name", "next": "done"},
        "done": {"message": "Thanks {name}, {qty} plants.", "end": True},
    },
}


def test_placeholders_must_be_saved_on_every_path_through_cycles() -> None:
    """``confirm`` is reached from ``ask_qty`` (qty saved) and straight from ``initial`` (not);
    ``ask_name`` only after ``confirm``; ``done`` only after ``ask_name``; and ``confirm`` and
    ``ask_qty`` form a cycle, as do ``initial`` and ``confirm``."""
    definition = MenuDefinition.model_validate(LOOP)
    assert saved_before(definition) == {
        "initial": frozenset(),
        "ask_qty": frozenset(),
        "confirm": frozenset(),
        "ask_name": frozenset(),
        "done": frozenset({"name"}),
    }
    assert [(p.path, p.message) for p in problems(definition)] == [
        (
            "steps.confirm.message.body.text",
            "{qty} may not be known here: not every way to this step goes through the question with save_as: qty",
        ),
        (
            "steps.confirm.message.body.text",
            "{name} may not be known here: not every way to this step goes through the question with save_as: name",
        ),
        (
            "steps.ask_name.message",
            "{qty} may not be known here: not every way to this step goes through the question with save_as: qty",
        ),
        (
            "steps.done.message",
            "{qty} may not be known here: not every way to this step goes through the question with save_as: qty",
        ),
    ]


def test_a_cycle_entered_after_the_question_keeps_what_it_saved() -> None:
    definition = MenuDefinition.model_validate(
        edited(
            {"steps.initial.next.review": "ask_qty", "steps.confirm.message.body.text": "{qty}?"},
            LOOP,
        )
    )
    assert saved_before(definition)["confirm"] == frozenset({"qty"})
    assert saved_before(definition)["done"] == frozenset({"qty", "name"})
    assert saved_before(definition)["initial"] == frozenset(), "start begins with nothing saved"
    assert problems(definition) == []


def question(validate: Any) -> MenuStep:
    return MenuStep.model_validate(
        {"message": "?", "save_as": "answer", "validate": validate, "next": "done"}
    )


@pytest.mark.parametrize(
    ("validate", "text", "saved"),
    [
        (None, "  Anything at all ", "Anything at all"),
        (None, "   ", None),
        ("number", " 12 ", "12"),
        ("number", "007", "7"),
        ("number", "-3.50", "-3.50"),
        ("number", "+4", "4"),
        ("number", "٤٢", "42"),  # Arabic-Indic digits
        ("number", "twelve", None),
        ("number", "1,5", None),
        ("number", "1e3", None),
        ("email", " Ana.Lopez@Example.COM ", "Ana.Lopez@example.com"),
        ("email", "ana@example", None),
        ("email", "ana lopez@example.com", None),
        ("email", "ana@@example.com", None),
        ("phone", "+34 (612) 345-678", "+34612345678"),
        ("phone", "0612 345 678", "0612345678"),
        ("phone", "12345", None),
        ("phone", "+1234567890123456", None),
        ("phone", "34+612345678", None),
        ("phone", "call me", None),
        ("date", "2026-02-28", "2026-02-28"),
        ("date", "5/3/2026", "2026-03-05"),
        ("date", "05-03-2026", "2026-03-05"),
        ("date", "31/02/2026", None),
        ("date", "05/03-2026", None),
        ("date", "tomorrow", None),
        (["Small", "Crème brûlée"], " small ", "Small"),
        (["Small", "Crème brûlée"], "CREME  BRULEE", "Crème brûlée"),
        (["Small", "Crème brûlée"], "large", None),
        ({"regex": r"[A-Z]{2}\d{4}"}, " AB1234 ", "AB1234"),
        ({"regex": r"[A-Z]{2}\d{4}"}, "AB12345", None),
        ({"regex": "[unclosed"}, "anything", None),
        ({"regex": r"\w+"}, "x" * 1000, "x" * 1000),
        ({"regex": r"\w+"}, "x" * 1001, None),  # longer answers are refused unread
        ({"regex": r"(a+)+$"}, "a" * 1001 + "!", None),  # would backtrack for ever if run
    ],
)
def test_check_answer_accepts_and_normalizes(validate: Any, text: str, saved: str | None) -> None:
    assert check_answer(question(validate), text) == saved


def test_the_expiry_message_problem_is_a_422_at_the_field() -> None:
    definition = MenuDefinition.model_validate(edited({"expiry_message": "Closed."}))
    [problem] = problems(definition)
    assert problem_loc(problem.path) == ["body", "expiry_message"]


def test_placeholders_skip_literal_braces() -> None:
    assert placeholders("{a} {{b}} {c} {a} {{{{ {d}}} { e } {0}") == ["a", "c"]


def test_reply_options_of_any_shape_never_crash() -> None:
    """A conversation may run on a definition nobody checked; it offers what it can read."""
    step = MenuStep.model_validate(
        {
            "message": {
                "type": "button",
                "action": {"buttons": ["oops", {"reply": "oops"}, button("ok", "OK")]},
            }
        }
    )
    assert step.reply_options() == [("", ""), ("", ""), ("ok", "OK")]
    assert MenuStep.model_validate({"message": {"action": "oops"}}).reply_options() == []
    listed = MenuStep.model_validate({"message": edited(AS_LIST)["steps"]["initial"]["message"]})
    assert listed.reply_options() == [("new_order", "New Order"), ("support", "Support")]
