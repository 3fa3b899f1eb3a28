"""Write a follow-up with the LLM, or fall back to the configured text. Never send junk.

The LLM call is retried by Temporal (``WRITE_ATTEMPTS``); the last attempt, a permanent
provider error, or output that fails the checks all end in the fallback text, and the
``Draft`` says so, so the outcome row can report how often the fallback was used.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from temporalio import activity

from activities.failures import as_application_error
from activities.followup_config import FollowUpTexts
from integrations.errors import ProviderError, RetryLater
from integrations.llm import TextGenerator

log = logging.getLogger(__name__)

WRITE_ATTEMPTS = 3
"""The workflow's retry policy for ``write_followup`` uses this as maximum_attempts."""

_PLACEHOLDER = re.compile(
    r"\{\{?\s*[\w.]+\s*\}?\}|\[(?:customer|your|name|first name|product|link|company)[^\]]*\]",
    re.IGNORECASE,
)


@dataclass
class TranscriptLine:
    role: str
    """``customer``, ``staff``, ``system`` or ``nudge`` (our own earlier follow-ups)."""
    text: str


@dataclass
class WriteRequest:
    step: int
    transcript: list[TranscriptLine] = field(default_factory=list)


@dataclass
class WriteMessageRequest:
    prompt: str
    fallback: str
    """Sent when the LLM is missing, fails or writes something that fails the checks."""
    max_chars: int = 1500


@dataclass
class Draft:
    text: str
    fallback_used: bool
    reason: str | None = None
    writer: str = "fallback"


_SPEAKER = {"customer": "Customer", "system": "System", "staff": "Agent", "nudge": "Agent"}


def conversation_text(transcript: list[TranscriptLine]) -> str:
    return "\n".join(
        f"{_SPEAKER.get(line.role, 'Agent')}: {line.text.strip()}" for line in transcript
    )


def check_output(text: str, max_chars: int) -> str | None:
    """The reason this text must not be sent, or None when it is fine."""
    if not text.strip():
        return "empty"
    if len(text) > max_chars:
        return f"longer than {max_chars} characters"
    if match := _PLACEHOLDER.search(text):
        return f"left a placeholder {match.group(0)!r}"
    return None


class WriterActivities:
    def __init__(
        self, generator: TextGenerator | None, texts: FollowUpTexts, *, max_chars: int = 1500
    ) -> None:
        self.generator = generator
        self.texts = texts
        self.max_chars = max_chars

    @activity.defn
    async def write_followup(self, request: WriteRequest) -> Draft:
        text, reason = await self._generate(request)
        if text is not None:
            problem = check_output(text, self.max_chars)
            if problem is None:
                assert self.generator is not None
                body = self._with_links(request.step, text.strip())
                return Draft(text=body, fallback_used=False, writer=self.generator.name)
            reason = f"LLM output {problem}"
        log.warning("follow-up step %s uses the fallback text: %s", request.step, reason)
        body = self._with_links(request.step, self.texts.fallback(request.step))
        return Draft(text=body, fallback_used=True, reason=reason, writer="fallback")

    @activity.defn
    async def write_message(self, request: WriteMessageRequest) -> Draft:
        """A message an automation rule leaves to the LLM: its text when it passes the
        checks, else the rule's fallback (the ``Draft`` says which, and why)."""
        text, reason = await self._generate(request.prompt)
        if text is not None:
            problem = check_output(text, request.max_chars)
            if problem is None:
                assert self.generator is not None
                return Draft(text=text.strip(), fallback_used=False, writer=self.generator.name)
            reason = f"LLM output {problem}"
        return Draft(text=request.fallback, fallback_used=True, reason=reason, writer="fallback")

    async def _generate(self, request: WriteRequest | str) -> tuple[str | None, str]:
        """The LLM's text, or None and the reason there is none."""
        if self.generator is None:
            return None, "no LLM provider configured"
        prompt = (
            request
            if isinstance(request, str)
            else self.texts.prompt(request.step).replace(
                "{conversation_text}", conversation_text(request.transcript)
            )
        )
        try:
            generated = await self.generator.generate(
                prompt,
                temperature=self.texts.temperature,
                max_output_tokens=self.texts.max_output_tokens,
            )
        except RetryLater as error:
            if activity.info().attempt < WRITE_ATTEMPTS:
                raise as_application_error(error) from error
            return None, f"LLM failed after {WRITE_ATTEMPTS} attempts: {error}"
        except ProviderError as error:
            return None, f"LLM refused the request: {error}"
        if generated.blocked:
            return None, "LLM output blocked"
        if not generated.text.strip():
            return None, f"LLM returned no text (finish reason {generated.finish_reason})"
        return generated.text, ""

    def _with_links(self, step: int, text: str) -> str:
        return text + self.texts.links_block() if step == 1 else text
