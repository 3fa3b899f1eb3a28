"""Outbound webhooks: the ``webhook`` action of an automation rule POSTs JSON to the user's URL.

The receiver is someone else's server, so every call proves where it came from and lets the
receiver drop repeats:

* The body is serialized once, and those exact bytes are both signed and sent: re-encoding
  after signing (key order, spacing, escaping) would break the signature.
* ``SIGNATURE_HEADER`` carries ``t=<unix seconds>,sha256=<hex>`` (``domain.automations.
  signature``); the timestamp is signed too, so a receiver can refuse an old call replayed.
* ``X-Nudge-Delivery`` is the same on every retry of one call: a 5xx may come after the
  receiver acted, and the id is how it knows it already has.
* Redirects are not followed: the signed call would go to a URL the user never configured
  (and a 302 turns POST into GET). It is ``Rejected`` naming the new location, to fix the URL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from domain.automations import SIGNATURE_HEADER, signature
from integrations.errors import Rejected
from integrations.http import HttpClient, send

PROVIDER = "webhook"
DELIVERY_HEADER = "X-Nudge-Delivery"
"""One id per webhook call, repeated on its retries, so a receiver can drop duplicates."""


def encode_body(body: dict[str, Any]) -> bytes:
    """The compact JSON bytes that are signed and sent (non-ASCII kept, odd types as text)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode()


class WebhookClient(HttpClient):
    """Signed JSON POSTs to any URL; one client serves every rule."""

    def __init__(self, *, timeout: float = 10.0, user_agent: str = "Nudge-Webhooks/1") -> None:
        self._http = httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, headers={"User-Agent": user_agent}
        )

    async def post(
        self,
        url: str,
        secret: str,
        body: dict[str, Any],
        delivery_id: str,
        *,
        now: Callable[[], float] = time.time,
    ) -> int:
        """One signed POST, never retried here; returns the 2xx status. 5xx, 408, 429 and
        network failures are ``RetryLater``, other answers ``Rejected`` (404 ``NotFound``)."""
        content = encode_body(body)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(secret, content, int(now())),
            DELIVERY_HEADER: delivery_id,
        }

        async def call() -> httpx.Response:
            response = await self._http.post(url, content=content, headers=headers)
            if response.is_redirect:
                location = response.headers.get("Location", "")
                raise Rejected(
                    PROVIDER,
                    f"HTTP {response.status_code} redirect to {location!r}, not followed: "
                    "set the webhook URL to where it should go",
                    status=response.status_code,
                    body=response.text[:2000],
                )
            return response

        response = await send(PROVIDER, call)
        return response.status_code
