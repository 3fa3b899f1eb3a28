"""Durations as operators write them: ``90s``, ``30m``, ``24h``, ``3d`` (a bare number is seconds).

Settings, menu definitions and API bodies all read them the same way, so nobody guesses a unit.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


LONGEST = timedelta(days=3650)
"""Ten years: longer is a typo, and a timer that far out would pass the calendar's end."""


def parse_duration(value: Any, longest: timedelta | None = LONGEST) -> timedelta:
    """Read ``90s``/``30m``/``24h``/``3d`` or a bare number of seconds; never negative, at
    most ``longest`` (``None``: what ``timedelta`` holds, for reading back what was once
    accepted, e.g. a definition in a running workflow's history)."""
    limit = longest or timedelta.max
    if isinstance(value, timedelta):
        return _bounded(value, value, limit)
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write it like 90s, 30m, 24h or 3d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration; write it like 90s, 30m, 24h or 3d")
        number, unit = match.groups()
        seconds = float(number) * _UNIT_SECONDS[unit.lower()]
    if not math.isfinite(seconds) or abs(seconds) > limit.total_seconds():
        raise ValueError(f"{value!r} is too long for a duration (at most {limit.days}d)")
    return _bounded(timedelta(seconds=seconds), value, limit)


def _bounded(duration: timedelta, written: Any, limit: timedelta) -> timedelta:
    if duration < timedelta(0):
        raise ValueError(f"{written!r} is negative; a duration is 0s or more")
    if duration > limit:
        raise ValueError(f"{written!r} is too long for a duration (at most {limit.days}d)")
    return duration


_UNITS = (("d", "day", 86400), ("h", "hour", 3600), ("m", "minute", 60))


def format_duration(value: timedelta) -> str:
    """The shortest way to write ``value`` that ``parse_duration`` reads back: ``1d``, ``90s``.

    How the API, the CLI and error messages show a duration (never ``PT24H`` or ``1 day,
    0:00:00``), so what is shown can be written back as it is."""
    if value.microseconds:
        return f"{value.total_seconds():g}s"
    seconds = int(value.total_seconds())
    for unit, _, size in _UNITS:
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def describe_duration(value: timedelta) -> str:
    """``value`` in words for a sentence: ``1 day``, ``12 hours``, ``90 seconds``."""
    if value.microseconds:
        return f"{value.total_seconds():g} seconds"
    seconds = int(value.total_seconds())
    for _, word, size in _UNITS:
        if seconds and seconds % size == 0:
            count = seconds // size
            return f"{count} {word}{'' if count == 1 else 's'}"
    return f"{seconds} second{'' if seconds == 1 else 's'}"


def parse_duration_list(value: Any) -> list[timedelta]:
    """``30m,24h`` (or a list of durations); at least one."""
    if isinstance(value, str):
        parts = [p for p in (s.strip() for s in value.split(",")) if p]
        if not parts:
            raise ValueError("at least one wait is needed, e.g. 30m,24h")
        return [parse_duration(p) for p in parts]
    return [parse_duration(v) for v in value]


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""A pydantic field read by ``parse_duration`` and written back by ``format_duration`` in
JSON (``12h``, where pydantic would write ISO 8601's ``PT12H``)."""
