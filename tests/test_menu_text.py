"""Placeholder filling (domain/text.py) and trigger keywords (domain/menu_matching.py)."""

from __future__ import annotations

from domain.menu_checks import problems
from domain.menu_definition import MenuDefinition
from domain.menu_matching import trigger_score
from domain.text import fill


def test_fill_keeps_the_customers_answer_as_typed() -> None:
    """``fill`` un-escapes ``{{``/``}}`` *after* substituting the answers, so braces inside
    a customer's saved answer are rewritten too: an order reference "AB{{12}}" typed by the
    customer is echoed back as "AB{12}" (and stored events/transcripts disagree with what
    the customer sees). Only the operator's template should be un-escaped.

    Right: "Your reference: AB{{12}}".
    """
    assert fill("Your reference: {ref}", {"ref": "AB{{12}}"}) == "Your reference: AB{{12}}"


def test_a_trigger_keyword_that_can_never_match_is_refused() -> None:
    """``_keyword_problems`` only refuses blank keywords. A keyword without any word
    character - the wave emoji many WhatsApp shops use as "hello" - passes validation and
    is saved, but ``words("👋")`` is empty and ``trigger_score`` never matches it: the menu
    silently never starts, even when the customer sends exactly "👋".

    Right: either such a keyword matches the same message, or saving it is a 422 naming
    ``trigger_keywords[0]``.
    """
    menu = MenuDefinition.model_validate(
        {
            "name": "wave",
            "trigger_keywords": ["👋"],
            "start": "bye",
            "steps": {"bye": {"message": "Hello!", "end": True}},
        }
    )
    refused = [p.path for p in problems(menu)]
    assert trigger_score(menu.trigger_keywords, "👋") > 0 or "trigger_keywords[0]" in refused
