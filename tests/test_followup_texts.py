"""The original script's config.json, the writer's output checks, and whose messages count."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from activities.followup_config import ConfigFileError, load_followup_texts
from activities.helpdesk import find_purchase, message_role
from activities.writer import TranscriptLine, check_output, conversation_text
from integrations.reamaze import ReamazeMessage, ReamazeUser
from tests.stack import SCRIPT_CONFIG, write_script_config

WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_original_config_is_read_unchanged(tmp_path: Path) -> None:
    texts = load_followup_texts(write_script_config(tmp_path))
    assert texts.prompt(1).startswith("Step one prompt.")
    assert texts.prompt(2).startswith("Step two prompt.")
    assert texts.fallback(1) == "Fallback one." and texts.fallback(2) == "Fallback two."
    assert texts.fallback(3) == "Fallback two.", "a third step reuses the last text"
    assert texts.temperature == 0.5 and texts.max_output_tokens == 250
    assert texts.model == "gemini-1.5-flash-latest"
    assert (
        texts.links_block()
        == "\n\nHelpful Resources:\n- [Plant Care Guides](https://shop.test/care)"
    )


def test_no_config_file_gives_working_defaults() -> None:
    texts = load_followup_texts(None)
    assert "{conversation_text}" in texts.prompt(1)
    assert texts.fallback(1) and texts.fallback(2) and texts.links_block() == ""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "must hold a JSON object"),
        (json.dumps({**SCRIPT_CONFIG, "followup1_helpful_links": [{"text": "x"}]}), "url"),
    ],
)
def test_bad_config_files_say_what_is_wrong(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(ConfigFileError, match=message):
        load_followup_texts(path)
    with pytest.raises(ConfigFileError, match="does not exist"):
        load_followup_texts(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("x" * 1501, "longer than 1500"),
        ("Hi {customer_name}, still keen?", "placeholder"),
        ("Hi {{ first_name }}!", "placeholder"),
        ("Thanks, [Your Name]", "placeholder"),
        ("Hi! The monstera is back in stock.", None),
        ("Prices {from 10 to 20} vary", None),
    ],
)
def test_output_checks(text: str, problem: str | None) -> None:
    found = check_output(text, 1500)
    assert (found is None) if problem is None else (found is not None and problem in found)


def message(
    body: str,
    email: str | None,
    *,
    staff: bool = False,
    bot: bool = False,
    origin_id: str | None = None,
) -> ReamazeMessage:
    user = None if email is None else ReamazeUser(name="n", email=email, staff=staff, bot=bot)
    return ReamazeMessage(body=body, created_at=WHEN, user=user, origin_id=origin_id)


def test_roles_and_purchases_count_only_customers_and_systems() -> None:
    messages = [
        message("order #12 is our reference", "agent@shop.test", staff=True),
        message("We posted your order # today", "bot@shop.test", origin_id="nudge:run:step-1"),
        message("Can I use order #? asked the api user", "bot@shop.test"),
        message("Shopify: placed an order (#1001)", None),
        message("Payment successful", "buyer@example.com"),
    ]
    roles = [message_role(m, "bot@shop.test") for m in messages]
    assert roles == ["staff", "nudge", "staff", "system", "customer"]
    assert find_purchase(messages[:3], roles[:3], ["order #"]) is None
    assert (
        find_purchase(messages, roles, ["placed an order ("]) == "Shopify: placed an order (#1001)"
    )
    assert find_purchase(messages, roles, ["PAYMENT SUCCESSFUL"]) == "Payment successful"


def test_conversation_text_labels_speakers() -> None:
    text = conversation_text(
        [
            TranscriptLine("customer", "Hi "),
            TranscriptLine("staff", "Hello"),
            TranscriptLine("nudge", "Checking in"),
        ]
    )
    assert text == "Customer: Hi\nAgent: Hello\nAgent: Checking in"
