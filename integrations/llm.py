"""Text generation behind one small protocol, with Gemini and OpenAI-compatible providers.

Both SDKs ship their own retry loops; they are switched off here because Temporal's activity
retry policy is the one place that decides when to try again (and it records every attempt
in the workflow history). So one ``generate()`` call is exactly one HTTP request, and every
failure leaves as ``RetryLater`` / ``Rejected`` / ``NotFound`` from ``integrations.errors``.

Watch out for:

* Gemini thinking models spend "thinking" tokens out of ``max_output_tokens``; a small limit
  gives a candidate with no parts and ``finish_reason="MAX_TOKENS"``. That comes back as
  ``Generated(text="", finish_reason="MAX_TOKENS")``, never as an exception.
* A retired model id (all of ``gemini-1.5-*``) is a 404, i.e. ``NotFound``: retrying cannot
  help, the configuration must change.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from integrations.errors import NotFound, ProviderError, Rejected, RetryLater
from integrations.http import retry_after_seconds

if TYPE_CHECKING:
    from collections.abc import Mapping

    from google.genai import types as genai_types

# The SDKs are imported where a provider is built or called, not here: together they take
# about two seconds to import, which every process (the HTTP service too) would otherwise pay
# at start-up whether or not an LLM is configured.


@functools.cache
def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network failures as raised by whichever HTTP stack google-genai picked.

    google-genai 3.x prefers ``httpx2`` (a fork whose exceptions are not ``httpx`` ones) when
    it is installed, plain ``httpx`` otherwise, and ``aiohttp`` whenever that is installed.
    """
    found: list[type[BaseException]] = [httpx.TransportError, TimeoutError]
    try:
        import httpx2

        found.append(httpx2.TransportError)
    except ImportError:
        pass
    try:
        import aiohttp

        found.append(aiohttp.ClientConnectionError)
    except ImportError:
        pass
    return tuple(found)


_GEMINI_API_VERSION = "v1beta"
"""google-genai 3.x defaults to ``v1``; the REST reference (and thinkingConfig) is ``v1beta``."""

_GEMINI_BLOCKING_FINISH = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"}
)
"""Finish reasons that mean "withheld by a filter", as opposed to "stopped"."""


@dataclass(frozen=True)
class Generated:
    text: str
    """Empty when nothing usable came back; callers then send their fallback text."""
    finish_reason: str | None
    """The provider's own word (``STOP``, ``MAX_TOKENS``, ``stop``, ``length``…); for a Gemini
    prompt blocked before any candidate, its ``blockReason``."""
    blocked: bool = False
    """A safety/content filter withheld the answer, or no candidate came back at all."""


class TextGenerator(Protocol):
    name: str
    """``provider:model``, recorded with each draft so an operator can see who wrote it."""

    async def generate(
        self,
        prompt: str,
        *,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
    ) -> Generated: ...


def _classify(
    provider: str,
    status: int,
    message: str,
    *,
    body: str = "",
    retry_after: float | None = None,
) -> ProviderError:
    """Same split as ``integrations.http.raise_for_status``, for errors the SDKs already parsed."""
    reason = f"HTTP {status}: {message}"
    if status in (408, 429) or status >= 500:
        return RetryLater(provider, reason, status=status, body=body, retry_after=retry_after)
    if status == 404:
        return NotFound(provider, reason, status=status, body=body)
    return Rejected(provider, reason, status=status, body=body)


def _header_delay(headers: Mapping[str, str] | None) -> float | None:
    """``retry-after-ms`` is OpenAI's finer-grained variant of the standard header."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    return retry_after_seconds(headers.get("retry-after"))


def _first_known(*delays: float | None) -> float | None:
    return next((delay for delay in delays if delay is not None), None)


def _google_retry_delay(details: Any) -> float | None:
    """Google states the wait of a 429 as a ``google.rpc.RetryInfo`` detail (``"37s"``)."""
    error = details.get("error", details) if isinstance(details, dict) else None
    entries = error.get("details") if isinstance(error, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and str(entry.get("@type", "")).endswith("rpc.RetryInfo"):
            try:
                return max(0.0, float(str(entry.get("retryDelay", "")).removesuffix("s")))
            except ValueError:
                return None
    return None


_BUDGET_MODELS = ("gemini-1", "gemini-2")
"""Model families configured by a thinking token budget rather than a thinking level."""


class GeminiGenerator:
    provider = "gemini"

    def __init__(
        self,
        api_key: str,
        model: str,
        *,
        base_url: str = "",
        thinking_budget: int | None = 0,
        thinking_level: str | None = "minimal",
        timeout: float = 30.0,
    ) -> None:
        """Gemini 2.x models take ``thinking_budget`` (0 turns thinking off; 2.5 Pro rejects
        0), Gemini 3 and later take ``thinking_level``; sending both is a 400, so each model
        gets the one it understands. None leaves thinking to the model."""
        self.model = model
        self.name = f"{self.provider}:{model}"
        self.thinking_budget = thinking_budget
        self.thinking_level = thinking_level
        from google import genai
        from google.genai import types as genai_types

        self._client = genai.Client(
            api_key=api_key,
            # Pinned so GOOGLE_GENAI_USE_VERTEXAI in the environment cannot reroute the key.
            vertexai=False,
            http_options=genai_types.HttpOptions(
                base_url=base_url or None,
                api_version=_GEMINI_API_VERSION,
                timeout=round(timeout * 1000),
                # Explicit options also stop the SDK's implicit aiohttp reconnect-and-resend.
                retry_options=genai_types.HttpRetryOptions(attempts=1),
            ),
        )

    def _thinking_config(self) -> genai_types.ThinkingConfig | None:
        from google.genai import types as genai_types

        if self.model.startswith(_BUDGET_MODELS):
            if self.thinking_budget is None:
                return None
            return genai_types.ThinkingConfig(thinking_budget=self.thinking_budget)
        if self.thinking_level is None:
            return None
        return genai_types.ThinkingConfig(
            thinking_level=genai_types.ThinkingLevel(self.thinking_level.upper())
        )

    async def generate(
        self,
        prompt: str,
        *,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
    ) -> Generated:
        from google.genai import errors as genai_errors
        from google.genai import types as genai_types

        config = genai_types.GenerateContentConfig(
            temperature=temperature,
            max_output_tokens=max_output_tokens,
            thinking_config=self._thinking_config(),
        )
        try:
            response = await self._client.aio.models.generate_content(
                model=self.model, contents=prompt, config=config
            )
        except genai_errors.APIError as exc:
            headers = getattr(exc.response, "headers", None)
            raise _classify(
                self.provider,
                exc.code,
                f"{exc.status or ''} {exc.message or ''}".strip(),
                body=json.dumps(exc.details, default=str)[:2000],
                retry_after=_first_known(_header_delay(headers), _google_retry_delay(exc.details)),
            ) from exc
        except _transport_errors() as exc:
            raise RetryLater(self.provider, f"request failed: {exc!r}") from exc
        return _gemini_result(response)

    async def aclose(self) -> None:
        await self._client.aio.aclose()
        self._client.close()


def _gemini_result(response: genai_types.GenerateContentResponse) -> Generated:
    """Read the first candidate without ``response.text``, which is None for part-less
    candidates and logs warnings for non-text parts; thought parts are never the answer."""
    if not response.candidates:
        feedback = response.prompt_feedback
        reason = feedback.block_reason if feedback else None
        return Generated(text="", finish_reason=reason.value if reason else None, blocked=True)
    candidate = response.candidates[0]
    finish = candidate.finish_reason.value if candidate.finish_reason else None
    if finish in _GEMINI_BLOCKING_FINISH:
        return Generated(text="", finish_reason=finish, blocked=True)
    parts = candidate.content.parts if candidate.content and candidate.content.parts else []
    text = "".join(part.text for part in parts if part.text and not part.thought)
    return Generated(text=text, finish_reason=finish)


class OpenAIGenerator:
    provider = "openai"

    def __init__(
        self, api_key: str, model: str, *, base_url: str = "", timeout: float = 30.0
    ) -> None:
        self.model = model
        self.name = f"{self.provider}:{model}"
        import openai

        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url or None, max_retries=0, timeout=timeout
        )

    async def generate(
        self,
        prompt: str,
        *,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
    ) -> Generated:
        import openai

        # Omitted rather than sent as null: compatible servers differ on what null means.
        options: dict[str, Any] = {}
        if temperature is not None:
            options["temperature"] = temperature
        if max_output_tokens is not None:
            options["max_completion_tokens"] = max_output_tokens
        try:
            completion = await self._client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": prompt}], **options
            )
        except openai.APIStatusError as exc:
            raise _classify(
                self.provider,
                exc.status_code,
                exc.message,
                body=json.dumps(exc.body, default=str)[:2000],
                retry_after=_header_delay(exc.response.headers),
            ) from exc
        except openai.APIConnectionError as exc:  # APITimeoutError is a subclass
            raise RetryLater(self.provider, f"request failed: {exc!r}") from exc
        if not completion.choices:
            return Generated(text="", finish_reason=None, blocked=True)
        choice = completion.choices[0]
        if choice.finish_reason == "content_filter" or choice.message.refusal:
            return Generated(text="", finish_reason=choice.finish_reason, blocked=True)
        return Generated(text=choice.message.content or "", finish_reason=choice.finish_reason)

    async def aclose(self) -> None:
        await self._client.close()
