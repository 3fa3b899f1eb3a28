"""Addresses the API is given, checked on the way in: a 422 naming the field and saying why,
never a message recorded as ``sandboxed`` (or a suppression stored) for an address nothing
could reach. Phone numbers without a country code are read in ``NUDGE_POLICY__DEFAULT_REGION``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fastapi.exceptions import RequestValidationError

from domain.addresses import AddressError, parse_address
from settings import Settings

Loc = Sequence[str | int]


def checked_addresses(settings: Settings, addresses: Iterable[tuple[Loc, str, str]]) -> list[str]:
    """Each ``(loc, channel, address)`` checked; all of them in our spelling, or one 422
    listing every address at fault (in FastAPI's shape, ``loc`` from ``body`` or ``query``)."""
    found: list[str] = []
    errors: list[dict[str, Any]] = []
    for loc, channel, address in addresses:
        try:
            found.append(parse_address(channel, address, region=settings.policy.default_region))
        except AddressError as exc:
            errors.append(
                {
                    "loc": list(loc),
                    "msg": f"{'.'.join(str(part) for part in loc[1:])}: {exc}",
                    "type": "address",
                    "input": address,
                }
            )
    if errors:
        raise RequestValidationError(errors)
    return found


def checked_address(settings: Settings, loc: Loc, channel: str, address: str) -> str:
    """One address: ``checked_addresses`` for a single field."""
    return checked_addresses(settings, [(loc, channel, address)])[0]
