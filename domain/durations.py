"""Durations as operators write them: ``90s``, ``30m``, ``24h``, ``3d`` (a bare number is seconds).

Settings, menu definitions and API bodies all read them the same way, so nobody guesses a unit.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> timedelta:
    """Read ``90s``/``30m``/``24h``/``3d`` or a bare number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=float(value))
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration; write it like 90s, 30m, 24h or 3d")
    number, unit = match.groups()
    return timedelta(seconds=float(number) * _UNIT_SECONDS[unit.lower()])


def format_duration(value: timedelta) -> str:
    """The shortest way to write ``value`` that ``parse_duration`` reads back: ``1d``, ``90s``."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_duration_list(value: Any) -> list[timedelta]:
    """``30m,24h`` (or a list of durations); at least one."""
    if isinstance(value, str):
        parts = [p for p in (s.strip() for s in value.split(",")) if p]
        if not parts:
            raise ValueError("at least one wait is needed, e.g. 30m,24h")
        return [parse_duration(p) for p in parts]
    return [parse_duration(v) for v in value]


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
"""A pydantic field read by ``parse_duration``."""
