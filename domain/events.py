"""Business events: what happened to a contact, by type. Automation rules are triggered by
these names; outside systems raise their own types (``POST /v1/events``), menus raise the
``event`` of their end step.

The built-in names are those of the automation engine Nudge replaces (its ``Automation.trigger``
values), so rules written for it read the same here.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Any

from domain import limits


class Trigger(StrEnum):
    """The event types Nudge itself raises, or that rules can be scheduled on."""

    new_lead = "new_lead"
    """A contact was created through the API (``POST /v1/contacts``)."""
    lead_status_changed = "lead_status_changed"
    """A contact's ``status`` changed; the event's data has ``from`` and ``to``."""
    message_received = "message_received"
    """A contact wrote to us, on any channel (every inbound message, once)."""
    no_contact_days = "no_contact_days"
    """Scheduled, not raised: a contact not contacted (``last_contacted_at``) for N days."""
    booking_created = "booking_created"
    """Raised by a booking system through ``POST /v1/events``."""
    booking_reminder_hours = "booking_reminder_hours"
    """Scheduled, not raised: N hours before a booking."""
    session_completed = "session_completed"
    """Raised by the system that ran the session through ``POST /v1/events``."""


TYPE = re.compile(r"[a-z0-9_.:-]+")
"""An event type a caller names: a slug (``booking_created``, ``shop:order.paid``). Menus'
end events keep the menu rule (``domain.menu_checks.EVENT``, capitals allowed), which
predates this one."""


def type_problem(name: str) -> str | None:
    """Why ``name`` is not an event type, or None when it is one."""
    if not name:
        return "must not be empty"
    if len(name) > limits.EVENT_NAME:
        return f"{len(name)} characters; at most {limits.EVENT_NAME}"
    if not TYPE.fullmatch(name):
        return f"{name[:40]!r} is not a slug: use a-z, 0-9 and _ . : - (no spaces, no capitals)"
    return None


def json_size(value: Any) -> int:
    """The size of ``value`` as compact JSON, in characters: what an event's data or a
    contact's custom fields are bounded by (``limits.EVENT_DATA``, ``limits.CUSTOM_FIELDS``).
    Raises ValueError for NaN and infinities, which JSON (and PostgreSQL) cannot hold."""
    return len(
        json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)
    )


def merge_fields(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7396) of a contact's custom fields: a key set to null is
    removed, an object merges into an object, anything else replaces."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_fields(merged[key], value)
        else:
            merged[key] = _without_nulls(value)
    return merged


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value
