"""Operators' answer patterns run on RE2: every bypass of the old nested-repeat guard is either
refused when the menu is saved, naming the field, or matched in time linear in the answer.

No test here races a clock against Python's ``re``: the patterns below take years on ``re``
for a 1,000-character answer, so a generous bound tells the two engines apart without
flaking, and ``re`` is made to fail outright wherever a user pattern is matched.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from domain.menu_answers import check_answer
from domain.menu_checks import problems
from domain.menu_definition import MAX_CHECKED_ANSWER, MenuDefinition, MenuStep
from domain.user_patterns import fullmatch, pattern_problem
from tests.menu_rig import Rig, text
from tests.menus import shop_menu

PHONE = r"\+?\d*[ -]?\d*[ -]?\d*[ -]?\d*"
"""From the issue: 21 s on Python's ``re`` for 400 digits and a trailing letter."""


def asking(pattern: str) -> dict[str, Any]:
    """A sound one-question menu whose answer is checked by ``pattern``."""
    return {
        "name": "ask",
        "start": "ask_code",
        "steps": {
            "ask_code": {
                "message": "Your code?",
                "save_as": "code",
                "validate": {"regex": pattern},
                "next": "done",
            },
            "done": {"message": "Thanks, {code}.", "end": True},
        },
    }


def question(pattern: str) -> MenuStep:
    return MenuStep.model_validate({"message": "?", "save_as": "x", "validate": {"regex": pattern}})


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("(?>a+)+b", "atomic groups"),
        ("a++b", "possessive repeats"),
        ("(?:a{1,60}){1,60}b", "repeat counts, nested ones multiplied, go up to 1000"),
        ("(?<=x)a", "lookaround"),
        (r"(a)\1", "backreferences"),
    ],
    ids=["atomic-group", "possessive", "counted-nested", "lookbehind", "backreference"],
)
def test_patterns_re2_cannot_run_are_refused_at_save_time_at_their_field(
    pattern: str, says: str
) -> None:
    [problem] = problems(MenuDefinition.model_validate(asking(pattern)), known_menus=set())
    assert problem.path == "steps.ask_code.validate.regex"
    assert problem.message.startswith(f"the pattern {pattern!r} is not valid: ")
    assert says in problem.message


def test_a_refused_pattern_in_an_older_definition_accepts_no_answer_and_never_raises() -> None:
    """A conversation that started before the upgrade keeps its definition; it must not crash."""
    assert check_answer(question("(?>a+)+b"), "aaab") is None
    assert fullmatch("[unclosed", "[unclosed") is False


def test_the_phone_pattern_is_accepted_and_answers_at_once() -> None:
    assert pattern_problem(PHONE) is None
    started = time.perf_counter()
    assert check_answer(question(PHONE), "1" * 400 + "x") is None
    assert check_answer(question(PHONE), "+34 600 123 456") == "+34 600 123 456"
    assert time.perf_counter() - started < 1, "Python's re took 21 s on the first answer"


@pytest.mark.parametrize(
    "pattern",
    [PHONE, r"(a+)+$", r"(a|aa)*b", r"(\d*)*x", r"^([A-Za-z]+\s?)+$", r"(?:a{1,30}){1,30}b"],
)
def test_nested_repeats_match_the_longest_answer_in_linear_time(pattern: str) -> None:
    """Each of these backtracks for longer than the universe's age on ``re`` with this answer;
    RE2 reads it once. Nested repeats, refused before, are therefore accepted now."""
    assert pattern_problem(pattern) is None
    answer = "1" * (MAX_CHECKED_ANSWER // 2) + "a" * (MAX_CHECKED_ANSWER // 2 - 1) + "!"
    started = time.perf_counter()
    assert check_answer(question(pattern), answer) is None
    assert time.perf_counter() - started < 1


def test_no_user_pattern_reaches_pythons_re(monkeypatch: pytest.MonkeyPatch) -> None:
    """``re`` compiles every pattern it is given through ``re._compile``; nothing may call it
    while a customer's answer is checked against an operator's pattern."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"Python's re was asked to compile {args[0]!r}")

    monkeypatch.setattr(re, "_compile", refuse)
    assert check_answer(question(r"[A-Z]{2}\d{4}"), "AB1234") == "AB1234"
    assert check_answer(question(r"(?i)yes|no"), "NO") == "NO"
    assert problems(MenuDefinition.model_validate(asking(PHONE)), known_menus=set()) == []


@pytest.mark.parametrize(
    ("pattern", "answer", "matches"),
    [
        (r"\d{4}", "1234", True),
        (r"\d{4}", "12345", False),  # the whole answer, not a prefix
        (r"a|ab", "ab", True),  # anchored at both ends, not leftmost-first then checked
        (r"(?i)yes", "YES", True),
        (r"\d+", "١٢٣", False),  # RE2's \d is ASCII ...
        (r"\p{Nd}+", "١٢٣", True),  # ... \p{Nd} is any script's digits
        (r"[\p{L} ]+", "José María", True),
        (r".+", "two\nlines", False),  # . does not cross a line, as in re
    ],
)
def test_re2_semantics_are_the_documented_ones(pattern: str, answer: str, matches: bool) -> None:
    assert fullmatch(pattern, answer) is matches


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("", "the pattern is empty"),
        ("[0-9]" * 41, "the pattern is 205 characters; at most 200"),
        (r"[\p{L}\p{N}_]{1,500}", "too large a program"),
        (r"a\Z", r"writes the end as \z"),
    ],
)
def test_other_patterns_refused_say_why(pattern: str, says: str) -> None:
    problem = pattern_problem(pattern)
    assert problem is not None and says in problem


async def test_a_conversation_checks_answers_on_re2_inside_the_workflow_sandbox(rig: Rig) -> None:
    """The check runs in the workflow, where ``re2`` (a C extension) is passed through."""
    menu = shop_menu().model_dump(by_alias=True)
    menu["steps"]["ask_qty"]["validate"] = {"regex": PHONE}
    rig.store.save_menu(MenuDefinition.model_validate(menu))

    assert await rig.say("hi") == "trigger:main_menu"
    await rig.replies(1)
    await rig.exchange("New Order", "order")
    await rig.exchange("fern")
    assert text(await rig.exchange("Large pot", "large")) == "How many plants?"
    assert text(await rig.exchange("1" * 400 + "x")) == "Please send a number"
    assert text(await rig.exchange("12")) == "Order for 12 plants noted!"
    assert (await rig.result()).context == {"qty": "12"}
