"""The follow-up texts: prompts, fallbacks and links, read from the original script's ``config.json``.

Users of that script move over by pointing ``NUDGE_FOLLOWUP__CONFIG_FILE`` at their file.
Its keys are numbered per step (``llm_prompt_followup1``, ``followup2_fallback_message``); we
accept any step number so a third step needs no code. Keys we do not need (the script's
process interval, its broken retry settings) are accepted and ignored: Temporal's timers
and retry policies replace them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_PROMPT = (
    "You are a friendly member of the shop's sales team. The customer below showed interest "
    "but has not bought yet. Write a short, warm follow-up message (2-4 sentences) that "
    "refers to what they asked about and invites them to reply with any question. Do not "
    "invent discounts, prices or facts. Do not use placeholders.\n\n"
    "Conversation:\n{conversation_text}\n\nWrite only the follow-up message content:"
)
DEFAULT_FALLBACKS = {
    1: "Hi there! Just circling back on our recent chat. Please let me know if you have any "
    "more questions!",
    2: "Hey again! Checking in on our previous conversation. Please let me know if I can help "
    "with anything else!",
}


class HelpfulLink(BaseModel):
    text: str
    url: str


class ScriptConfig(BaseModel):
    """The original script's config.json, key for key."""

    model_config = ConfigDict(extra="allow")

    followup1_helpful_links_header: str = "\n\nHelpful Resources:"
    followup1_helpful_links: list[HelpfulLink] = Field(default_factory=list)
    gemini_model: str | None = None
    gemini_summary_max_output_tokens: int | None = None
    gemini_summary_temperature: float | None = None
    poll_interval_minutes: float | None = None


class FollowUpTexts(BaseModel):
    prompts: dict[int, str]
    fallbacks: dict[int, str]
    links_header: str
    links: list[HelpfulLink]
    model: str | None
    temperature: float
    max_output_tokens: int

    def prompt(self, step: int) -> str:
        return self.prompts.get(step) or DEFAULT_PROMPT

    def fallback(self, step: int) -> str:
        if step in self.fallbacks:
            return self.fallbacks[step]
        # a step without its own text reuses the nearest earlier one rather than nothing
        earlier = [n for n in self.fallbacks if n < step]
        return self.fallbacks[max(earlier)] if earlier else DEFAULT_FALLBACKS[1]

    def links_block(self) -> str:
        if not self.links:
            return ""
        lines = "".join(f"\n- [{link.text}]({link.url})" for link in self.links)
        return f"{self.links_header}{lines}"


class ConfigFileError(ValueError):
    pass


def _numbered(extra: dict[str, Any], prefix: str, suffix: str) -> dict[int, str]:
    found: dict[int, str] = {}
    for key, value in extra.items():
        if key.startswith(prefix) and key.endswith(suffix):
            number = key[len(prefix) : len(key) - len(suffix)]
            if number.isdigit() and isinstance(value, str) and value.strip():
                found[int(number)] = value
    return found


def load_followup_texts(path: Path | None) -> FollowUpTexts:
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigFileError(f"NUDGE_FOLLOWUP__CONFIG_FILE: {path} does not exist") from exc
        except json.JSONDecodeError as exc:
            raise ConfigFileError(
                f"NUDGE_FOLLOWUP__CONFIG_FILE: {path} is not JSON: {exc}"
            ) from exc
        if not isinstance(raw, dict):
            raise ConfigFileError(f"NUDGE_FOLLOWUP__CONFIG_FILE: {path} must hold a JSON object")
    try:
        script = ScriptConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigFileError(f"NUDGE_FOLLOWUP__CONFIG_FILE: {path}: {exc}") from exc
    extra = script.model_extra or {}
    return FollowUpTexts(
        prompts=_numbered(extra, "llm_prompt_followup", ""),
        fallbacks={**DEFAULT_FALLBACKS, **_numbered(extra, "followup", "_fallback_message")},
        links_header=script.followup1_helpful_links_header,
        links=script.followup1_helpful_links,
        model=script.gemini_model,
        temperature=0.5
        if script.gemini_summary_temperature is None
        else script.gemini_summary_temperature,
        max_output_tokens=script.gemini_summary_max_output_tokens or 250,
    )
