"""A fake Gemini Developer API that speaks ``generateContent`` over real HTTP.

The google-genai SDK is pointed here with ``HttpOptions(base_url=srv.url)``, so the SDK's
own request building, error parsing and retry settings are exercised, not mocked. Bodies
follow the REST reference: ``candidates[].content.parts[].text`` + ``finishReason`` on
success, ``{"error": {"code", "message", "status"}}`` on failure. Every request that
reaches the route is recorded, including the ones that fail, so a test can count attempts.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

Outcome = Callable[[str, str], Awaitable[JSONResponse]]
"""Builds the answer to one request from (model, prompt)."""

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_MESSAGES = {
    429: "You exceeded your current quota, please check your plan and billing details.",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}


def follow_up_text(prompt: str) -> str:
    """What the fake writes when no reply is queued: a short, sendable follow-up."""
    return "Hi! Following up on our chat." if prompt.strip() else "Hi!"


def error_body(
    code: int, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "status": _STATUS_NAMES.get(code, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return {"error": error}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def _camel_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_camel(key): _camel_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_camel_keys(item) for item in value]
    return value


def _tokens(text: str) -> int:
    return max(1, len(text.split())) if text else 0


class FakeGemini:
    def __init__(
        self,
        api_key: str = "test-gemini-key",
        *,
        known_models: Collection[str] | None = None,
        default_reply: Callable[[str], str] = follow_up_text,
    ) -> None:
        """``known_models=None`` accepts every id except the retired ``gemini-1.5*`` family."""
        self.api_key = api_key
        self.known_models = known_models
        self.default_reply = default_reply
        self.requests: list[dict[str, Any]] = []
        self.models: list[str] = []
        self._queue: deque[Outcome] = deque()
        self.app = FastAPI()
        # google-genai 3.x defaults to /v1; Nudge pins /v1beta (where the REST reference lives).
        for version in ("v1beta", "v1"):
            self.app.add_api_route(
                f"/{version}/models/{{model}}:generateContent",
                self._generate_content,
                methods=["POST"],
            )

    # -- scripting -------------------------------------------------------------------------

    def reply(self, text: str, *, finish_reason: str = "STOP") -> None:
        async def answer(model: str, prompt: str) -> JSONResponse:
            return self._candidate(model, prompt, text, finish_reason)

        self._queue.append(answer)

    def reply_blocked(self, reason: str = "SAFETY") -> None:
        """The prompt itself was blocked: ``promptFeedback.blockReason`` and no candidates."""

        async def blocked(model: str, prompt: str) -> JSONResponse:
            return JSONResponse(
                {
                    "promptFeedback": {"blockReason": reason},
                    "usageMetadata": {
                        "promptTokenCount": _tokens(prompt),
                        "totalTokenCount": _tokens(prompt),
                    },
                    "modelVersion": model,
                    "responseId": uuid.uuid4().hex[:20],
                }
            )

        self._queue.append(blocked)

    def reply_max_tokens(self, thoughts_tokens: int = 250) -> None:
        """What thinking models do when thoughts eat ``maxOutputTokens``: a part-less candidate."""

        async def exhausted(model: str, prompt: str) -> JSONResponse:
            return JSONResponse(
                {
                    "candidates": [
                        {"content": {"role": "model"}, "finishReason": "MAX_TOKENS", "index": 0}
                    ],
                    "usageMetadata": {
                        "promptTokenCount": _tokens(prompt),
                        "totalTokenCount": _tokens(prompt) + thoughts_tokens,
                        "thoughtsTokenCount": thoughts_tokens,
                    },
                    "modelVersion": model,
                    "responseId": uuid.uuid4().hex[:20],
                }
            )

        self._queue.append(exhausted)

    def fail_next(
        self,
        status: int,
        times: int = 1,
        retry_after: float | None = None,
        *,
        retry_after_in: Literal["header", "body", "both"] = "both",
    ) -> None:
        """Google puts the suggested wait of a 429 in a ``RetryInfo`` detail, not always a header."""

        async def failure(model: str, prompt: str) -> JSONResponse:
            details: list[dict[str, Any]] = []
            headers: dict[str, str] = {}
            if retry_after is not None:
                if retry_after_in in ("body", "both"):
                    details.append(
                        {
                            "@type": "type.googleapis.com/google.rpc.RetryInfo",
                            "retryDelay": f"{retry_after:g}s",
                        }
                    )
                if retry_after_in in ("header", "both"):
                    headers["Retry-After"] = f"{retry_after:g}"
            message = _MESSAGES.get(status, f"fake failure {status}")
            return JSONResponse(error_body(status, message, details), status, headers=headers)

        for _ in range(times):
            self._queue.append(failure)

    def stall_next(self, seconds: float) -> None:
        """Answer the next request only after ``seconds``, to exercise client timeouts."""

        async def late(model: str, prompt: str) -> JSONResponse:
            await asyncio.sleep(seconds)
            return self._candidate(model, prompt, self.default_reply(prompt), "STOP")

        self._queue.append(late)

    def generation_config(self, index: int = -1) -> dict[str, Any]:
        """``generationConfig`` of a recorded request, keys in lowerCamelCase.

        Google parses request JSON the protobuf way, which accepts a field's proto name as
        well as its JSON name; google-genai 3.4 relies on that and sends
        ``thinkingConfig: {"thinking_budget": 0}``. Tests compare the normalised form.
        """
        normalised: dict[str, Any] = _camel_keys(self.requests[index].get("generationConfig", {}))
        return normalised

    # -- the endpoint ----------------------------------------------------------------------

    async def _generate_content(self, model: str, request: Request) -> JSONResponse:
        body: dict[str, Any] = await request.json()
        self.requests.append(body)
        self.models.append(model)
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if not key:
            return JSONResponse(
                error_body(
                    403,
                    "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
                ),
                403,
            )
        if key != self.api_key:
            return JSONResponse(
                error_body(
                    400,
                    "API key not valid. Please pass a valid API key.",
                    [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID",
                            "domain": "googleapis.com",
                            "metadata": {"service": "generativelanguage.googleapis.com"},
                        }
                    ],
                ),
                400,
            )
        if not self._knows(model):
            return JSONResponse(
                error_body(
                    404,
                    f"models/{model} is not found for API version {request.url.path.split('/')[1]}, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.",
                ),
                404,
            )
        prompt = "".join(
            part.get("text", "")
            for content in body.get("contents", [])
            for part in content.get("parts", [])
        )
        if self._queue:
            return await self._queue.popleft()(model, prompt)
        return self._candidate(model, prompt, self.default_reply(prompt), "STOP")

    def _knows(self, model: str) -> bool:
        if self.known_models is None:
            return not model.startswith("gemini-1.5")
        return model in self.known_models

    def _candidate(self, model: str, prompt: str, text: str, finish_reason: str) -> JSONResponse:
        return JSONResponse(
            {
                "candidates": [
                    {
                        "content": {"parts": [{"text": text}], "role": "model"},
                        "finishReason": finish_reason,
                        "index": 0,
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": _tokens(prompt),
                    "candidatesTokenCount": _tokens(text),
                    "totalTokenCount": _tokens(prompt) + _tokens(text),
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": _tokens(prompt)}],
                },
                "modelVersion": model,
                "responseId": uuid.uuid4().hex[:20],
            }
        )
