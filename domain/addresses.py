"""How a contact's address is spelled and which channel it belongs to.

One spelling per address, so that a STOP on WhatsApp (``15551234567`` from Meta,
``whatsapp:+15551234567`` from Twilio) suppresses the very number we send to.
"""

from __future__ import annotations


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
