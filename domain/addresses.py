"""How a contact's address is spelled and which channel it belongs to.

One spelling per address, so that a STOP on WhatsApp (``15551234567`` from Meta,
``whatsapp:+15551234567`` from Twilio) suppresses the very number we send to.
"""

from __future__ import annotations

import re

from domain import limits


def address_channel(channel: str) -> str:
    """The channel a contact's address belongs to: WhatsApp through Twilio reaches the same
    WhatsApp number as the Cloud API, so suppressions and windows are kept under ``whatsapp``."""
    return "whatsapp" if channel == "whatsapp_twilio" else channel


def normalize_address(channel: str, address: str) -> str:
    """Phone numbers as ``+`` and digits, e-mail addresses in lower case, anything else as is."""
    address = address.strip()
    if channel in ("sms", "whatsapp", "whatsapp_twilio"):
        digits = "".join(ch for ch in address.removeprefix("whatsapp:") if ch.isdigit())
        return f"+{digits}" if digits else address
    if channel == "email":
        return address.lower()
    return address


REAMAZE_SLUG = rf"^[A-Za-z0-9][A-Za-z0-9_-]{{0,{limits.CONVERSATION_SLUG - 1}}}$"
"""A Re:amaze conversation slug: letters, digits, ``-`` and ``_`` (its slugs are made from a
subject, like ``where-is-my-order-3``). The slug goes into the API's URL path, so nothing that
could climb out of ``/conversations/`` (``..``, ``/``, ``%2e%2e``) is a slug."""


def is_reamaze_slug(value: str) -> bool:
    return re.fullmatch(REAMAZE_SLUG, value) is not None
