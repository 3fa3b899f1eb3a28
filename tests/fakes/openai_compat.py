"""A fake OpenAI-compatible Chat Completions server, spoken to over real HTTP.

Point the SDK at ``srv.url + "/v1"``. Replies use the documented ``chat.completion`` object;
failures use OpenAI's ``{"error": {"message", "type", "param", "code"}}`` body. Every request
that reaches the route is recorded, failed ones included, so a test can count attempts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.fakes.gemini import follow_up_text

Outcome = Callable[[str, str], Awaitable[JSONResponse]]
"""Builds the answer to one request from (model, prompt)."""

_FAILURES: dict[int, tuple[str, str, str | None]] = {
    429: (
        "Rate limit reached for requests per min (RPM). Please try again in 20s.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


def error_body(
    message: str, type_: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _tokens(text: str) -> int:
    return max(1, len(text.split())) if text else 0


class FakeOpenAI:
    def __init__(
        self,
        api_key: str = "sk-test-openai-key",
        *,
        known_models: Collection[str] | None = None,
        default_reply: Callable[[str], str] = follow_up_text,
    ) -> None:
        """``known_models=None`` accepts any model id, like most compatible servers do."""
        self.api_key = api_key
        self.known_models = known_models
        self.default_reply = default_reply
        self.requests: list[dict[str, Any]] = []
        self._queue: deque[Outcome] = deque()
        self.app = FastAPI()
        self.app.add_api_route("/v1/chat/completions", self._chat_completions, methods=["POST"])

    # -- scripting -------------------------------------------------------------------------

    def reply(self, text: str, *, finish_reason: str = "stop") -> None:
        async def answer(model: str, prompt: str) -> JSONResponse:
            return self._completion(model, prompt, text, finish_reason)

        self._queue.append(answer)

    def reply_blocked(self) -> None:
        """The content filter withheld the answer: ``finish_reason="content_filter"``, no content."""

        async def blocked(model: str, prompt: str) -> JSONResponse:
            return self._completion(model, prompt, None, "content_filter")

        self._queue.append(blocked)

    def reply_max_tokens(self, text: str = "") -> None:
        """``max_completion_tokens`` ran out (reasoning models can spend it all before any text)."""

        async def cut(model: str, prompt: str) -> JSONResponse:
            return self._completion(model, prompt, text, "length")

        self._queue.append(cut)

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        message, type_, code = _FAILURES.get(
            status, (f"fake failure {status}", "server_error", None)
        )

        async def failure(model: str, prompt: str) -> JSONResponse:
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            return JSONResponse(error_body(message, type_, code), status, headers=headers)

        for _ in range(times):
            self._queue.append(failure)

    def stall_next(self, seconds: float) -> None:
        """Answer the next request only after ``seconds``, to exercise client timeouts."""

        async def late(model: str, prompt: str) -> JSONResponse:
            await asyncio.sleep(seconds)
            return self._completion(model, prompt, self.default_reply(prompt), "stop")

        self._queue.append(late)

    # -- the endpoint ----------------------------------------------------------------------

    async def _chat_completions(self, request: Request) -> JSONResponse:
        body: dict[str, Any] = await request.json()
        self.requests.append(body)
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            return JSONResponse(
                error_body(
                    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    "invalid_request_error",
                    None,
                ),
                401,
            )
        if key != self.api_key:
            return JSONResponse(
                error_body(
                    f"Incorrect API key provided: {key[:3]}****{key[-4:]}. You can find your API key at https://platform.openai.com/account/api-keys.",
                    "invalid_request_error",
                    "invalid_api_key",
                ),
                401,
            )
        model = str(body.get("model", ""))
        if self.known_models is not None and model not in self.known_models:
            return JSONResponse(
                error_body(
                    f"The model `{model}` does not exist or you do not have access to it.",
                    "invalid_request_error",
                    "model_not_found",
                ),
                404,
            )
        prompt = "".join(
            str(message.get("content") or "")
            for message in body.get("messages", [])
            if message.get("role") == "user"
        )
        if self._queue:
            return await self._queue.popleft()(model, prompt)
        return self._completion(model, prompt, self.default_reply(prompt), "stop")

    def _completion(
        self, model: str, prompt: str, text: str | None, finish_reason: str
    ) -> JSONResponse:
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": text,
                            "refusal": None,
                            "annotations": [],
                        },
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": _tokens(prompt),
                    "completion_tokens": _tokens(text or ""),
                    "total_tokens": _tokens(prompt) + _tokens(text or ""),
                },
                "service_tier": "default",
                "system_fingerprint": None,
            }
        )
