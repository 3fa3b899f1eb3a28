"""Addresses: what an operator types is checked and spelled one way (``parse_address``), what a
provider sends is taken as it comes (``normalize_address``), and the default region is a
setting that must name a region ``phonenumbers`` knows."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from domain.addresses import AddressError, normalize_address, parse_address
from settings import PolicySettings, Settings


@pytest.mark.parametrize(
    ("channel", "typed", "region", "stored"),
    [
        ("sms", "+15551234567", "US", "+15551234567"),
        ("sms", "+1 (555) 123-4567", "US", "+15551234567"),
        ("sms", "(555) 123-4567", "US", "+15551234567"),
        ("sms", "15551234567", "US", "+15551234567"),
        ("whatsapp", "07700 900123", "GB", "+447700900123"),
        ("whatsapp", "06 12 34 56 78", "FR", "+33612345678"),
        ("whatsapp", "+44 7700 900123", "US", "+447700900123"),
        ("whatsapp_twilio", "whatsapp:+15551234567", "US", "+15551234567"),
        ("email", " Bob@Example.COM ", "US", "bob@example.com"),
        ("email", "ann@shop.test", "US", "ann@shop.test"),
        ("reamaze", "where-is-my-order", "US", "where-is-my-order"),
    ],
)
def test_an_operators_address_is_stored_in_one_spelling(
    channel: str, typed: str, region: str, stored: str
) -> None:
    assert parse_address(channel, typed, region=region) == stored


@pytest.mark.parametrize(
    ("channel", "typed", "message"),
    [
        ("sms", "not-a-phone", '"not-a-phone" is not a phone number (write it in international '
         "form, e.g. +15551234567)"),
        ("whatsapp", "1-800-FLOWERS", '"1-800-FLOWERS" is not a phone number (write it in '
         "international form, e.g. +15551234567)"),
        ("sms", "+1555", '"+1555" is not a phone number: it is too short (write it in '
         "international form, e.g. +15551234567)"),
        ("sms", "12", '"12" is not a phone number: it is too short, read as a number of US '
         "(write it in international form, e.g. +15551234567)"),
        ("sms", "+999 1234567", '"+999 1234567" is not a phone number: no country has that '
         "calling code (write it in international form, e.g. +15551234567)"),
        ("email", "nope", '"nope" is not an e-mail address: an email address must have an '
         "@-sign."),
        ("email", "a b@example.com", '"a b@example.com" is not an e-mail address: the email '
         "address contains invalid characters before the @-sign: SPACE."),
        ("email", "  ", "must not be blank"),
    ],
)  # fmt: skip
def test_an_address_no_message_could_reach_is_refused_saying_why(
    channel: str, typed: str, message: str
) -> None:
    with pytest.raises(AddressError) as refused:
        parse_address(channel, typed, region="US")
    assert str(refused.value) == message


def test_a_long_address_is_cut_in_the_message() -> None:
    with pytest.raises(AddressError) as refused:
        parse_address("sms", "x" * 300)
    assert str(refused.value).startswith('"' + "x" * 60 + '…" is not a phone number')


@pytest.mark.parametrize(
    ("channel", "sent", "stored"),
    [
        ("whatsapp", "15551234567", "+15551234567"),  # Meta's wa_id: international, no +
        ("whatsapp", "447700900123", "+447700900123"),  # never read as a US number
        ("sms", "whatsapp:+15551234567", "+15551234567"),
        ("email", "Bob@Example.com", "bob@example.com"),
        ("sms", "anything at all", "anything at all"),  # a provider's sender is never refused
    ],
)
def test_a_providers_address_is_taken_as_it_comes(channel: str, sent: str, stored: str) -> None:
    assert normalize_address(channel, sent) == stored


def test_what_an_operator_types_and_what_a_provider_sends_meet() -> None:
    """A STOP from Meta's ``15551234567`` must suppress the number the API stored."""
    assert parse_address("whatsapp", "(555) 123-4567") == normalize_address(
        "whatsapp", "15551234567"
    )


def test_the_default_region_is_a_region_phonenumbers_knows() -> None:
    assert Settings(_env_file=None).policy.default_region == "US"
    assert PolicySettings(default_region=" gb ").default_region == "GB"
    with pytest.raises(ValidationError, match="'XX' is not a region whose phone numbers"):
        PolicySettings(default_region="XX")


def test_the_default_region_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NUDGE_POLICY__DEFAULT_REGION", "FR")
    assert Settings(_env_file=None).policy.default_region == "FR"
