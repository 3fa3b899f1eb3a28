"""A moment the API is given: with its offset (a time without one is refused), kept in UTC.

Converting is checked here, where a 422 can name the field: ``0001-01-01T00:30+01:00`` is a
valid time with an offset whose UTC is before year 1, which Python cannot hold.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("out of range once in UTC: give a time from year 1 to 9999") from exc


UtcMoment = Annotated[AwareDatetime, AfterValidator(_in_utc)]
"""An aware datetime, in UTC."""
