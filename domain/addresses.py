"""How a contact's address is spelled and which channel it belongs to.

One spelling per address, so that a STOP on WhatsApp (``15551234567`` from Meta,
``whatsapp:+15551234567`` from Twilio) suppresses the very number we send to.

Two ways in: what an operator types (``parse_address``) is checked and refused with a
sentence saying why, a national number read in the shop's region (``+15551234567`` from
``(555) 123-4567`` in the US); what a provider reports (``normalize_address``) is taken as
it comes, since a provider's own sender is always in international form and must never be
refused.
"""

from __future__ import annotations

import json
import re

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from domain import limits

PHONE_CHANNELS = frozenset({"sms", "whatsapp", "whatsapp_twilio"})
DEFAULT_REGION = "US"
"""Where a phone number written without ``+`` and a country code is read
(``NUDGE_POLICY__DEFAULT_REGION``)."""
PHONE_EXAMPLE = "+15551234567"


class AddressError(ValueError):
    """An address an operator wrote that no message could reach; the text says why."""


def address_channel(channel: str) -> str:
    """The channel a contact's address belongs to: WhatsApp through Twilio reaches the same
    WhatsApp number as the Cloud API, so suppressions and windows are kept under ``whatsapp``."""
    return "whatsapp" if channel == "whatsapp_twilio" else channel


def is_region(code: str) -> bool:
    """A two-letter region whose phone numbers ``phonenumbers`` knows (``US``, ``GB``, ``FR``)."""
    return code in phonenumbers.SUPPORTED_REGIONS


def normalize_address(channel: str, address: str) -> str:
    """A provider's spelling of an address made ours: phone numbers as ``+`` and digits,
    e-mail addresses in lower case, anything else as is. Never refuses anything."""
    address = address.strip()
    if channel in PHONE_CHANNELS:
        digits = "".join(ch for ch in address.removeprefix("whatsapp:") if ch.isdigit())
        return f"+{digits}" if digits else address
    if channel == "email":
        return address.lower()
    return address


def parse_address(channel: str, address: str, *, region: str = DEFAULT_REGION) -> str:
    """An operator's address checked and spelled like ``normalize_address`` spells it:
    phone numbers in E.164 (a national number is read in ``region``), e-mail addresses by
    their syntax. Raises ``AddressError`` with a sentence naming the value and the fix."""
    text = address.strip()
    if not text:
        raise AddressError("must not be blank")
    if channel in PHONE_CHANNELS:
        return _phone(text, region)
    if channel == "email":
        return _email(text)
    return text


def _phone(text: str, region: str) -> str:
    number = text.removeprefix("whatsapp:").strip()
    wrong = f"{quoted(text)} is not a phone number"
    fix = f"write it in international form, e.g. {PHONE_EXAMPLE}"
    # phonenumbers reads letters as a keypad's (1-800-FLOWERS): an address has none.
    if re.search(r"[^\d\s()+./-]", number):
        raise AddressError(f"{wrong} ({fix})")
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            raise AddressError(f"{wrong}: no country has that calling code ({fix})") from None
        raise AddressError(f"{wrong} ({fix})") from None
    reason = phonenumbers.is_possible_number_with_reason(parsed)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
        why = {
            phonenumbers.ValidationResult.TOO_SHORT: "it is too short",
            phonenumbers.ValidationResult.TOO_LONG: "it is too long",
            phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "no country has that calling code",
        }.get(reason, "it has the wrong number of digits")
        where = "" if number.startswith("+") else f", read as a number of {region}"
        raise AddressError(f"{wrong}: {why}{where} ({fix})")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _email(text: str) -> str:
    try:
        # Syntax only (no DNS); .test domains stay usable for trials.
        validate_email(text, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        reason = str(exc).removeprefix("The email address is not valid. ")
        reason = reason[:1].lower() + reason[1:]
        raise AddressError(f"{quoted(text)} is not an e-mail address: {reason}") from None
    return text.lower()


def quoted(value: str, limit: int = 60) -> str:
    """``value`` in double quotes for a message, cut where it would drown the sentence."""
    return json.dumps(value if len(value) <= limit else value[:limit] + "…", ensure_ascii=False)


REAMAZE_SLUG = rf"^[A-Za-z0-9][A-Za-z0-9_-]{{0,{limits.CONVERSATION_SLUG - 1}}}$"
"""A Re:amaze conversation slug: letters, digits, ``-`` and ``_`` (its slugs are made from a
subject, like ``where-is-my-order-3``). The slug goes into the API's URL path, so nothing that
could climb out of ``/conversations/`` (``..``, ``/``, ``%2e%2e``) is a slug."""


def is_reamaze_slug(value: str) -> bool:
    return re.fullmatch(REAMAZE_SLUG, value) is not None
