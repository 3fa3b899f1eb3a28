"""Refuse request bodies over ``NUDGE_HTTP__MAX_BODY`` before they are read.

Webhooks are unsigned until their body is checked, so the size must be bounded before any
signature, JSON parsing or validation sees the body: a declared ``Content-Length`` over the
limit gets 413 without one byte read, and a body sent without a length (chunked) is counted as
it arrives and refused the moment it passes the limit.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised from ``receive``: an HTTPException, so the app's own handler answers 413 even
    when the body was being parsed (FastAPI turns other parse errors into a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than {_size(limit)} (NUDGE_HTTP__MAX_BODY); "
            "nothing was accepted",
        )


def _size(limit: int) -> str:
    if limit % (1024 * 1024) == 0:
        return f"{limit // (1024 * 1024)} MiB"
    return f"{limit // 1024} KiB" if limit % 1024 == 0 else f"{limit} bytes"


class BodyLimit:
    """Pure ASGI middleware: nothing is buffered, so the limit costs one header lookup."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await _answer(send, BodyTooLarge(self.max_body))
            return

        received = 0
        responded = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal responded
            responded = responded or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as refused:
            if responded:
                raise
            await _answer(send, refused)


async def _answer(send: Send, refused: BodyTooLarge) -> None:
    body = json.dumps({"detail": refused.detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": refused.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server itself refuses a malformed length
    return None
