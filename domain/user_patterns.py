"""The one place a pattern an operator wrote is compiled and matched: by RE2, never by ``re``.

A menu question's ``{regex: ...}`` is matched against a customer's answer inside the
conversation's workflow task, which holds the interpreter lock. Python's ``re`` backtracks,
so a plausible phone pattern (``\\+?\\d*[ -]?\\d*[ -]?\\d*[ -]?\\d*``) took 21 s on 400 digits
and stalled every conversation on the worker; no guard on the pattern's shape closed every
such hole (atomic groups, possessive and counted repeats slipped past). RE2 matches in time
linear in the answer whatever the pattern, and in memory bounded by ``max_mem``.

The price is RE2's syntax: no backreferences, lookaround, atomic groups or possessive
repeats, which are refused when a menu is saved (``pattern_problem``). ``\\d``, ``\\w``,
``\\s`` and ``\\b`` are ASCII only; ``\\p{L}`` (letters) and ``\\p{Nd}`` (digits) cover every
script.
"""

from __future__ import annotations

import functools
from typing import Any

import re2

from domain.menu_definition import MAX_PATTERN

_OPTIONS = re2.Options()
_OPTIONS.max_mem = 8 << 20  # RE2's default, stated: a pattern needing more is refused
_OPTIONS.longest_match = False  # leftmost-first, as Python's ``re`` and Perl choose
_OPTIONS.log_errors = False  # a refused pattern is reported to the operator, not to stderr

_UNSUPPORTED = "RE2 has no backreferences, lookaround, atomic groups or possessive repeats"
_HINTS = {
    # RE2's error, as it begins -> what an operator used to Python's or Perl's syntax needs.
    "invalid perl operator": _UNSUPPORTED,
    "bad repetition operator": _UNSUPPORTED,
    "invalid escape sequence": "RE2 has no backreferences (\\1) and writes the end as \\z",
    "invalid repetition size": "repeat counts, nested ones multiplied, go up to 1000",
    "pattern too large": "it would compile to too large a program; use smaller repeat counts",
}


def pattern_problem(pattern: str) -> str | None:
    """What is wrong with ``pattern`` as an answer check, in words for the operator; None
    when RE2 compiles it."""
    if not pattern:
        return "the pattern is empty"
    if len(pattern) > MAX_PATTERN:
        return (
            f"the pattern is {len(pattern)} characters; at most {MAX_PATTERN} (it checks one "
            "answer: split a longer check into questions, or use a list of answers)"
        )
    try:
        _compiled(pattern)
    except re2.error as error:
        reason = _reason(error)
        hint = next((f" ({h})" for start, h in _HINTS.items() if reason.startswith(start)), "")
        return f"the pattern {pattern!r} is not valid: {reason}{hint}"
    return None


def fullmatch(pattern: str, text: str) -> bool:
    """Whether the whole of ``text`` matches. A pattern RE2 refuses matches nothing: it is
    refused at save time, and a conversation that started with an older definition must not
    crash on it."""
    try:
        compiled = _compiled(pattern)
    except re2.error:
        return False
    return compiled.fullmatch(text) is not None


@functools.lru_cache(maxsize=128)
def _compiled(pattern: str) -> Any:  # re2 ships no type hints
    """Compiled once per worker: every answer to a question reuses its program."""
    return re2.compile(pattern, _OPTIONS)


def _reason(error: Exception) -> str:
    reason = error.args[0] if error.args else error
    return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
