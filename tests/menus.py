"""Sample WhatsApp menus the menu tests share, and the small builder for button messages.

``shop_menu`` is the plant shop the conversation, routing and end-to-end tests walk through;
its messages (``WELCOME``, ``PRODUCTS``, ``POTS``) are kept apart so a test can compare what
the customer received with what the menu says. ``visit_menu`` is the menu the HTTP API tests
send as JSON. Tests that need a menu of another shape (the store's, the definition checks')
build their own next to the tests that use it.
"""

from __future__ import annotations

from typing import Any

from domain.menu_definition import MenuDefinition


def buttons(text: str, *options: tuple[str, str]) -> dict[str, Any]:
    """A WhatsApp reply-button message: ``text`` and one button per ``(id, title)``."""
    return {
        "type": "button",
        "body": {"text": text},
        "action": {
            "buttons": [{"type": "reply", "reply": {"id": i, "title": t}} for i, t in options]
        },
    }


PRODUCTS: dict[str, Any] = {
    "type": "list",
    "header": {"type": "text", "text": "Our plants"},
    "body": {"text": "Which plant would you like?"},
    "footer": {"text": "Prices include delivery"},
    "action": {
        "button": "See plants",
        "sections": [
            {
                "title": "Indoor",
                "rows": [
                    {"id": "monstera", "title": "Monstera", "description": "Big leaves"},
                    {"id": "fern", "title": "Fern"},
                ],
            },
            {"title": "Outdoor", "rows": [{"id": "cactus", "title": "Cactus"}]},
        ],
    },
}
"""The shop's second level: a list message with two sections."""
WELCOME = buttons("Welcome! How can we help?", ("order", "New Order"), ("support", "Support"))
"""The shop's first message, sent when a trigger keyword starts the menu."""
POTS = buttons("Which pot size?", ("small", "Small pot"), ("large", "Large pot"))
"""The shop's third level, after a plant is chosen."""


def shop_menu(**changes: Any) -> MenuDefinition:
    """Three menu levels (buttons, list, buttons), a question with validation, two ends.

    ``changes`` replace top-level fields (``name``, ``expiry``, ``trigger_keywords``...)."""
    raw: dict[str, Any] = {
        "name": "main_menu",
        "trigger_keywords": ["hi", "hello", "menu"],
        "priority": 1,
        "start": "initial",
        "steps": {
            "initial": {"message": WELCOME, "next": {"order": "products", "support": "agent"}},
            "products": {
                "message": PRODUCTS,
                "next": {"monstera": "pot", "fern": "pot", "cactus": "pot"},
            },
            "pot": {"message": POTS, "next": {"small": "ask_qty", "large": "ask_qty"}},
            "ask_qty": {
                "message": "How many plants?",
                "save_as": "qty",
                "validate": "number",
                "error": "Please send a number",
                "next": "done",
            },
            "done": {"message": "Order for {qty} plants noted!", "end": True, "event": "new_order"},
            "agent": {"message": "An agent will reply soon.", "end": True, "handoff": True},
        },
    }
    return MenuDefinition.model_validate(raw | changes)


def visit_menu(name: str = "main_menu", **changes: Any) -> dict[str, Any]:
    """A sound menu as JSON, the way the API takes it: a button menu, a date question, two
    ends, and an expiry with its message. ``changes`` replace top-level fields; the result
    is a fresh dict each time, so a test may edit it."""
    menu: dict[str, Any] = {
        "name": name,
        "trigger_keywords": ["menu", "hi"],
        "priority": 0,
        "start": "initial",
        "expiry": "23h",
        "expiry_message": "This chat has closed; write menu to start again.",
        "steps": {
            "initial": {
                "message": buttons(
                    "Hello! How can we help?", ("book", "Book a visit"), ("human", "Talk to us")
                ),
                "next": {"book": "ask_day", "human": "handoff"},
            },
            "ask_day": {
                "message": "Which day suits you?",
                "save_as": "day",
                "validate": "date",
                "error": "Please write a date like 2026-12-01.",
                "next": "booked",
            },
            "booked": {"message": "See you on {day}.", "end": True, "event": "visit_booked"},
            "handoff": {"message": "Someone will answer soon.", "end": True, "handoff": True},
        },
    }
    menu.update(changes)
    return menu


def question_chain(questions: int) -> dict[str, Any]:
    """A sound menu of ``questions`` questions in a row, each message naming the answer
    before it: every step adds a saved name, the worst case for ``saved_before``."""
    steps: dict[str, Any] = {
        f"q{i}": {
            "message": f"{{a{i - 1}}}, and?" if i else "First?",
            "save_as": f"a{i}",
            "validate": {"regex": r"\d{1,5}"},
            "next": f"q{i + 1}",
        }
        for i in range(questions)
    }
    steps[f"q{questions}"] = {"message": "Thanks, {a0}.", "end": True}
    return {"name": "chain", "start": "q0", "steps": steps}
