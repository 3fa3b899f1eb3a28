"""The one place a customer's answer to a menu question is checked and normalized.

It runs inside the conversation's workflow, so an operator's ``regex`` runs on RE2
(``domain.user_patterns``), in time linear in the answer, and never on a long answer
(``MAX_CHECKED_ANSWER``). The built-in checks below are ours and run on ``re``.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from decimal import Decimal

from domain.menu_definition import MAX_CHECKED_ANSWER, MenuStep
from domain.text import fold_spaces
from domain.user_patterns import fullmatch

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)")
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+")
_PHONE = re.compile(r"\+?\d{7,15}")
_PHONE_SEPARATORS = re.compile(r"[\s().-]")
_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_DAY_FIRST_DATE = re.compile(r"(\d{1,2})([/-])(\d{1,2})\2(\d{4})")


def check_answer(step: MenuStep, text: str) -> str | None:
    """The value to save for a customer's answer to ``step``, or None when it is not accepted.

    Normalizes so that the saved context is uniform whatever the customer typed: numbers
    without leading zeros, phones as digits (``+`` kept), dates as ISO, list answers in the
    definition's own spelling. A blank answer is never accepted. The built-in checks read any
    decimal digits (e.g. Arabic-Indic) as ASCII ones; free text is saved as typed (stripped).
    A ``regex`` check refuses an answer over ``MAX_CHECKED_ANSWER`` characters unread.
    """
    answer = text.strip()
    validator = step.validate_
    if not answer:
        return None
    if validator is None:
        return answer
    if isinstance(validator, list):
        return _one_of(validator, answer)
    if isinstance(validator, dict):
        return _matches(validator.get("regex"), answer)
    return _BUILTIN_CHECKS[validator](_ascii_digits(answer))


def _ascii_digits(text: str) -> str:
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in text)


def _number(answer: str) -> str | None:
    if not _NUMBER.fullmatch(answer):
        return None
    value = Decimal(answer)
    return str(int(value)) if "." not in answer else str(value)


def _email(answer: str) -> str | None:
    if not _EMAIL.fullmatch(answer):
        return None
    local, _, domain = answer.rpartition("@")
    return f"{local}@{domain.lower()}"


def _phone(answer: str) -> str | None:
    compact = _PHONE_SEPARATORS.sub("", answer)
    return compact if _PHONE.fullmatch(compact) else None


def _date(answer: str) -> str | None:
    if iso := _ISO_DATE.fullmatch(answer):
        year, month, day = iso.groups()
    elif day_first := _DAY_FIRST_DATE.fullmatch(answer):
        day, _, month, year = day_first.groups()
    else:
        return None
    try:
        return date(int(year), int(month), int(day)).isoformat()
    except ValueError:
        return None  # 31/02/2025


def _one_of(accepted: list[str], answer: str) -> str | None:
    folded = fold_spaces(answer)
    return next((option for option in accepted if fold_spaces(option) == folded), None)


def _matches(pattern: str | None, answer: str) -> str | None:
    if not pattern or len(answer) > MAX_CHECKED_ANSWER:
        return None
    return answer if fullmatch(pattern, answer) else None


_BUILTIN_CHECKS = {"number": _number, "email": _email, "phone": _phone, "date": _date}
