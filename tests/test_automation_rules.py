"""Automation rules as operators write them: the original system's bodies parse unchanged, a
rule whose fields do not fit together is refused naming the field, and conditions match (or
say why not) the way the original's read."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from domain.automations import (
    SIGNATURE_HEADER,
    TIMER_TRIGGERS,
    Action,
    AutomationRule,
    AutomationType,
    signature,
)
from domain.channels import ChannelName, MessageClass
from domain.conditions import (
    ConditionError,
    ContactFacts,
    matches,
    parse_conditions,
    why_not,
)
from domain.events import Trigger

# The original's examples (its automation documentation), as JSON, untouched.
WELCOME = """{
  "name": "Welcome New Leads",
  "type": "lead_followup",
  "trigger": "new_lead",
  "delay_hours": 0,
  "delay_days": 0,
  "channel": "email",
  "enabled": true
}"""
FOLLOW_UP_AFTER_3_DAYS = """{
  "name": "Follow-up After 3 Days",
  "type": "lead_followup",
  "trigger": "no_contact_days",
  "delay_days": 3,
  "channel": "email",
  "enabled": true
}"""
BOOKING_REMINDER = """{
  "name": "Booking Reminder",
  "type": "booking_reminder",
  "trigger": "booking_reminder_hours",
  "delay_hours": 24,
  "channel": "sms",
  "enabled": true
}"""
WITH_CONDITIONS_AND_TEMPLATE = """{
  "name": "Website leads",
  "type": "lead_followup",
  "trigger": "new_lead",
  "delay_hours": 6,
  "delay_days": 2,
  "channel": "whatsapp",
  "message_template": "Hi {lead_name},\\n\\nThank you for your interest! We'd love to help you...\\n\\nBest regards",
  "conditions": {"lead_status": "new", "source": "Website"},
  "enabled": true
}"""
CRM_UPDATE = """{
  "name": "Log status changes",
  "type": "crm_update",
  "trigger": "lead_status_changed",
  "delay_hours": 0,
  "channel": "email",
  "message_template": null,
  "conditions": null,
  "enabled": false
}"""

NEW_WEBSITE_LEAD = ContactFacts(status="new", source="Website", tags=frozenset({"vip"}))


def rule(**fields: Any) -> AutomationRule:
    body = {"name": "r", "type": "lead_followup", "trigger": "new_lead", "channel": "email"}
    return AutomationRule.model_validate({**body, **fields})


def refusal(**fields: Any) -> dict[str, str]:
    """Each refused field's location, as the API's 422 will give it, and its message."""
    with pytest.raises(ValidationError) as caught:
        rule(**fields)
    return {".".join(map(str, e["loc"])): e["msg"] for e in caught.value.errors()}


# --- the original's rules ------------------------------------------------------------------


def test_the_originals_welcome_rule_parses_unchanged_and_sends_at_once() -> None:
    welcome = AutomationRule.model_validate_json(WELCOME)
    assert welcome.trigger == Trigger.new_lead
    assert welcome.action is Action.send
    assert welcome.channel is ChannelName.email
    assert welcome.delay == timedelta(0)
    assert welcome.message_template == ""  # the LLM writes it
    assert welcome.message_class is MessageClass.marketing
    assert not welcome.timer_based


def test_no_contact_for_3_days_is_a_timer_of_three_days_once_per_quiet_spell() -> None:
    follow_up = AutomationRule.model_validate_json(FOLLOW_UP_AFTER_3_DAYS)
    assert follow_up.timer_based
    assert follow_up.delay == timedelta(days=3)
    assert follow_up.repeat == 1


def test_a_booking_reminder_is_transactional_and_sent_its_delay_before_the_booking() -> None:
    reminder = AutomationRule.model_validate_json(BOOKING_REMINDER)
    assert reminder.timer_based
    assert reminder.delay == timedelta(hours=24)
    assert reminder.message_class is MessageClass.transactional
    assert rule(type="confirmation").message_class is MessageClass.transactional
    marketing = AutomationRule.model_validate(
        {**json.loads(BOOKING_REMINDER), "message_class": "marketing"}
    )
    assert marketing.message_class is MessageClass.marketing


def test_days_and_hours_together_and_the_originals_conditions() -> None:
    website = AutomationRule.model_validate_json(WITH_CONDITIONS_AND_TEMPLATE)
    assert website.delay == timedelta(days=2, hours=6)
    assert website.message_template.startswith("Hi {lead_name},")
    assert matches(website.conditions, NEW_WEBSITE_LEAD, {})
    assert not matches(website.conditions, ContactFacts(status="new", source="Facebook"), {})


def test_a_crm_update_rule_moved_over_updates_the_contact_and_messages_nobody() -> None:
    crm = AutomationRule.model_validate_json(CRM_UPDATE)
    assert crm.action is Action.update_contact
    assert crm.set is None
    assert not crm.enabled
    assert crm.conditions.clauses == ()


def test_a_rule_exported_from_the_original_keeps_its_read_only_fields_out() -> None:
    exported = {
        **json.loads(WELCOME),
        "id": 7,
        "times_triggered": 12,
        "last_triggered": "2025-01-01T00:00:00Z",
    }
    assert AutomationRule.model_validate(exported) == AutomationRule.model_validate_json(WELCOME)
    assert "misspelled" in refusal(misspelled=1)


def test_a_rule_reads_back_exactly_as_it_was_written() -> None:
    website = AutomationRule.model_validate_json(WITH_CONDITIONS_AND_TEMPLATE)
    written = json.loads(website.model_dump_json())
    assert written["conditions"] == {"lead_status": "new", "source": "Website"}
    assert written["delay_hours"] == 6 and written["delay_days"] == 2
    assert AutomationRule.model_validate_json(website.model_dump_json()) == website


def test_channel_names_are_read_in_any_case_as_the_original_wrote_them() -> None:
    assert rule(channel="SMS").channel is ChannelName.sms
    assert rule(channel="WhatsApp").channel is ChannelName.whatsapp


def test_a_custom_trigger_is_an_event_type_slug() -> None:
    assert rule(trigger="shop:order.paid").trigger == "shop:order.paid"
    assert "trigger" in refusal(trigger="Order Paid")
    assert refusal(trigger="Order Paid")["trigger"].startswith("Value error, trigger: ")
    assert TIMER_TRIGGERS == {Trigger.no_contact_days, Trigger.booking_reminder_hours}


# --- fields that must fit together --------------------------------------------------------


def test_negative_delays_are_refused_naming_the_field() -> None:
    assert "delay_hours: -1 is negative" in refusal(delay_hours=-1)["delay_hours"]
    assert "delay_days: -2 is negative" in refusal(delay_days=-2)["delay_days"]


def test_timer_triggers_need_a_delay() -> None:
    quiet = refusal(trigger="no_contact_days")
    assert quiet["delay_days"].startswith("delay_days: a no_contact_days rule needs delay_days")
    booking = refusal(trigger="booking_reminder_hours", delay_days=0)
    assert "before the booking" in booking["delay_hours"]
    assert rule(trigger="no_contact_days", delay_hours=12).delay == timedelta(hours=12)


def test_a_delay_over_ten_years_is_refused() -> None:
    assert "delay_days" in refusal(delay_days=3650, delay_hours=24)


def test_send_needs_a_channel() -> None:
    assert refusal(channel=None)["channel"].startswith("channel: a send rule needs channel")


def test_update_contact_needs_something_to_set() -> None:
    assert refusal(action="update_contact")["set"].startswith("set: ")
    assert refusal(action="update_contact", set={})["set"].startswith("set: ")
    update = rule(action="update_contact", set={"status": "contacted", "tags": ["warm"]})
    assert update.set is not None and update.set.tags == ["warm"]
    assert "set.colour" in refusal(action="update_contact", set={"colour": "red"})


def test_a_webhook_needs_an_https_url_and_a_secret() -> None:
    missing = refusal(action="webhook")
    assert missing["webhook_url"].startswith("webhook_url: a webhook rule needs webhook_url")
    assert missing["webhook_secret"].startswith("webhook_secret: a webhook rule needs")
    secret = "s" * 16
    plain = refusal(
        action="webhook", webhook_url="http://crm.example.com/in", webhook_secret=secret
    )
    assert "webhook_url: http:// only to localhost" in plain["webhook_url"]
    assert "webhook_secret" in refusal(
        action="webhook", webhook_url="https://x.io", webhook_secret="short"
    )
    for url in ("https://crm.example.com/in", "http://localhost:8080/in", "http://127.0.0.1/in"):
        assert rule(action="webhook", webhook_url=url, webhook_secret=secret).webhook_url == url
    assert "webhook_url" in refusal(
        action="webhook", webhook_url="ftp://x.io", webhook_secret=secret
    )


def test_fields_of_another_action_are_refused_naming_them() -> None:
    assert "webhook_url" in refusal(webhook_url="https://x.io")
    assert "set" in refusal(set={"status": "won"})
    assert "template" in refusal(action="update_contact", set={"status": "won"}, template="t")
    assert "both" in refusal(template="welcome", message_template="Hi")["template"]


def test_only_no_contact_days_repeats() -> None:
    assert rule(trigger="no_contact_days", delay_days=3, repeat=3).repeat == 3
    assert refusal(repeat=2)["repeat"].startswith("repeat: ")
    assert "repeat" in refusal(trigger="no_contact_days", delay_days=3, repeat=0)


def test_the_webhook_signature_covers_the_time_and_the_body() -> None:
    signed = signature("secret-secret-16", b'{"a":1}', 1_700_000_000)
    assert signed.startswith("t=1700000000,sha256=")
    assert signed != signature("secret-secret-16", b'{"a":2}', 1_700_000_000)
    assert signed != signature("secret-secret-16", b'{"a":1}', 1_700_000_001)
    assert SIGNATURE_HEADER == "X-Nudge-Signature"


def test_the_type_names_are_the_originals() -> None:
    assert [t.value for t in AutomationType] == [
        "lead_followup", "booking_reminder", "confirmation", "post_session", "crm_update",
    ]  # fmt: skip


# --- conditions ----------------------------------------------------------------------------


def judge(
    conditions: dict[str, Any], contact: ContactFacts, event: dict[str, Any] | None = None
) -> str | None:
    parsed = parse_conditions(conditions)
    reason = why_not(parsed, contact, event or {})
    assert matches(parsed, contact, event or {}) is (reason is None)
    return reason


def test_lead_status_and_status_are_the_same_fact() -> None:
    for key in ("status", "lead_status"):
        assert judge({key: "new"}, NEW_WEBSITE_LEAD) is None
        assert judge({key: "won"}, NEW_WEBSITE_LEAD) == f'{key} is "new", the rule wants "won"'


def test_a_value_matches_by_equality_without_regard_to_case_or_spaces() -> None:
    assert judge({"source": "website "}, NEW_WEBSITE_LEAD) is None
    assert judge({"fields.age": 30}, ContactFacts(fields={"age": "30"})) is None
    assert judge({"fields.paid": True}, ContactFacts(fields={"paid": True})) is None


def test_a_list_means_any_of_and_in_says_the_same() -> None:
    won = ContactFacts(status="won")
    for wanted in (["new", "contacted"], {"in": ["new", "contacted"]}):
        assert (
            judge({"status": wanted}, won) == 'status is "won", the rule wants "new" or "contacted"'
        )
        assert judge({"status": wanted}, ContactFacts(status="contacted")) is None
    three = judge({"status": ["a", "b", "c"]}, won)
    assert three == 'status is "won", the rule wants "a", "b" or "c"'


def test_not_is_anything_but() -> None:
    assert judge({"status": {"not": "lost"}}, NEW_WEBSITE_LEAD) is None
    assert judge({"source": {"not": "Website"}}, NEW_WEBSITE_LEAD) == (
        'source is "Website", the rule wants anything but "Website"'
    )
    assert judge({"status": {"not": ["lost", "won"]}}, ContactFacts(status="won")) is not None
    assert judge({"status": {"not": "lost"}}, ContactFacts()) is None  # unset is not "lost"


def test_exists_asks_whether_a_value_is_set() -> None:
    company = ContactFacts(fields={"company": "Acme", "blank": ""})
    assert judge({"fields.company": {"exists": True}}, company) is None
    assert judge({"fields.blank": {"exists": False}}, company) is None
    assert judge({"fields.phone": {"exists": True}}, company) == (
        "fields.phone is not set, the rule wants it set"
    )
    assert judge({"fields.company": {"exists": False}}, company) == (
        'fields.company is "Acme", the rule wants it not set'
    )


def test_a_missing_value_matches_no_value() -> None:
    assert judge({"source": "Website"}, ContactFacts()) == (
        'source is not set, the rule wants "Website"'
    )


def test_event_values_are_read_from_the_event_nested_too() -> None:
    event = {"to": "won", "from": "new", "booking": {"service": "Massage"}}
    assert judge({"event.to": "won"}, NEW_WEBSITE_LEAD, event) is None
    assert (
        judge({"event.to": ["won", "lost"], "event.from": "new"}, NEW_WEBSITE_LEAD, event) is None
    )
    assert judge({"event.booking.service": "massage"}, NEW_WEBSITE_LEAD, event) is None
    assert judge({"event.to": "contacted"}, NEW_WEBSITE_LEAD, event) == (
        'event.to is "won", the rule wants "contacted"'
    )
    assert judge({"event.to": {"exists": True}}, NEW_WEBSITE_LEAD, {}) == (
        "event.to is not set, the rule wants it set"
    )


def test_tags_mean_has_this_tag_any_of_or_none_of() -> None:
    tagged = ContactFacts(tags=frozenset({"vip", "warm"}))
    assert judge({"tags": "VIP"}, tagged) is None
    assert judge({"tags": ["gold", "warm"]}, tagged) is None
    assert judge({"tags": {"in": ["gold", "warm"]}}, tagged) is None
    assert judge({"tags": {"not": "spam"}}, tagged) is None
    assert (
        judge({"tags": "gold"}, tagged)
        == 'tags are "vip" and "warm", the rule wants the tag "gold"'
    )
    assert judge({"tags": ["gold", "silver"]}, tagged) == (
        'tags are "vip" and "warm", the rule wants one of the tags "gold" or "silver"'
    )
    assert judge({"tags": {"not": "vip"}}, tagged) == (
        'tags are "vip" and "warm", the rule wants no tag "vip"'
    )
    assert judge({"tags": {"not": ["vip", "x"]}}, tagged) == (
        'tags are "vip" and "warm", the rule wants none of the tags "vip" or "x"'
    )
    assert (
        judge({"tags": "vip"}, ContactFacts()) == 'there are no tags, the rule wants the tag "vip"'
    )
    assert judge({"tags": {"exists": True}}, ContactFacts()) == (
        "there are no tags, the rule wants at least one"
    )
    assert judge({"tags": {"exists": False}}, tagged) is not None


def test_every_condition_must_hold_and_the_first_failing_one_is_the_reason() -> None:
    reason = judge({"lead_status": "new", "source": "Facebook", "tags": "gold"}, NEW_WEBSITE_LEAD)
    assert reason == 'source is "Website", the rule wants "Facebook"'


@pytest.mark.parametrize(
    ("conditions", "key", "words"),
    [
        ({"lead_stat": "new"}, "lead_stat", "did you mean lead_status?"),
        ({"email": "a@b.c"}, "email", "not a contact field or event value"),
        ({"fields.": 1}, "fields.", "name the fields value"),
        ({"event..to": 1}, "event..to", "name the event value"),
        ({"status": {"not": 1, "in": []}}, "status", "one operator per condition, not not and in"),
        ({"status": {"exists": "yes"}}, "status", '"exists" takes true or false, not text'),
        ({"status": {"equals": "new"}}, "status", "'equals' is not an operator"),
        ({"status": {}}, "status", "an empty object says nothing"),
        ({"status": {"in": "new"}}, "status", '"in" takes a list, not text'),
        ({"status": []}, "status", "an empty list matches nothing"),
        ({"status": ["new", {"a": 1}]}, "status", "an object is not a value here"),
        ({"fields.x": {"not": {"a": 1}}}, "fields.x", "an object is not a value here"),
        ({"source": None}, "source", '{"exists": false}'),
        ({"source": "x" * 321}, "source", "at most 320"),
    ],
)
def test_malformed_conditions_are_refused_naming_the_key(
    conditions: dict[str, Any], key: str, words: str
) -> None:
    with pytest.raises(ConditionError) as caught:
        parse_conditions(conditions)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"conditions.{key}: ")
    assert words in str(caught.value)


def test_conditions_that_are_not_an_object_are_refused_as_a_whole() -> None:
    with pytest.raises(ConditionError) as caught:
        parse_conditions(["lead_status", "new"])
    assert caught.value.key is None
    assert str(caught.value) == "conditions: must be an object of key: value, not a list"


def test_a_rule_with_a_bad_condition_is_refused_at_the_conditions_key() -> None:
    refused = refusal(conditions={"lead_stat": "new"})
    assert list(refused) == ["conditions.lead_stat"]
    assert refused["conditions.lead_stat"].startswith("conditions.lead_stat: not a contact field")


def test_a_template_is_named_as_templates_are() -> None:
    assert rule(template="welcome_v2").template == "welcome_v2"
    assert refusal(template="Welcome Mail")["template"].startswith("Value error, template: ")
