"""What a rule's message says: the original's ``{lead_name}`` filled in, a placeholder
nobody can fill refused rather than sent, a booking's time in the contact's zone, and the
LLM never shown the operator's notes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from activities.automations import inline_template, template_values, writing_prompt
from domain.automations import AutomationRule
from domain.templates import MissingVariables, render
from store.delivery import ContactView


def contact(**given: Any) -> ContactView:
    fields: dict[str, Any] = {
        "id": 7,
        "name": "Ana Lima",
        "email": "ana@example.com",
        "phone": None,
        "timezone": "Europe/Paris",
        "locale": None,
        "channels": [],
        "device_tokens": [],
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "status": "new",
    }
    return ContactView(**(fields | given))


def rule(text: str) -> AutomationRule:
    return AutomationRule.model_validate(
        {
            "name": "Reminder",
            "type": "booking_reminder",
            "trigger": "booking_reminder_hours",
            "delay_hours": 24,
            "channel": "sms",
            "message_template": text,
        }
    )


BOOKING = {"booking_id": 3, "starts_at": "2026-03-02T08:00:00+00:00", "service": "a massage"}


def test_the_originals_placeholders_and_a_booking_time_in_the_contacts_zone() -> None:
    text = "Hi {lead_name} ({first_name}): {{service}} on {booking_time}."
    rendered = render(inline_template(rule(text), text), None, template_values(contact(), BOOKING))
    assert rendered.text == "Hi Ana Lima (Ana): a massage on Monday 02 March at 09:00 (CET)."


def test_a_placeholder_nobody_fills_is_refused_by_name() -> None:
    text = "Hi {lead_nmae}!"
    with pytest.raises(MissingVariables) as refused:
        render(inline_template(rule(text), text), None, template_values(contact(), {}))
    assert refused.value.names == ["lead_nmae"]


def test_braces_that_are_not_placeholders_stay_as_written() -> None:
    text = 'Send {"size": "m"} or { name } as you like'
    rendered = render(inline_template(rule(text), text), None, template_values(contact(), {}))
    assert rendered.text == text


def test_the_llm_sees_the_booking_but_not_the_operators_notes() -> None:
    prompt = writing_prompt(rule(""), contact(), BOOKING | {"notes": "owes us 40 EUR, be firm"})
    assert "a massage" in prompt and "Ana" in prompt
    assert "owes" not in prompt and "notes" not in prompt
