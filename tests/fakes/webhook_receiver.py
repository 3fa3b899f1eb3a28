"""A fake webhook receiver that checks our calls the way a careful customer's server would.

It knows only the documented format, not our code: ``X-Nudge-Signature: t=<unix
seconds>,sha256=<hex>`` where the hex is HMAC-SHA256 with the shared secret over
``b"<t>."`` followed by the raw body. The check is written out here on purpose; verifying with
the production signer would pass whatever that signer did.

``POST /hooks/{name}``:

* an injected fault (``fail_next``) answers first, as an outage in front of the app would;
* a missing, malformed or wrong signature, or a timestamp more than ``TOLERANCE`` seconds
  from now, is 401;
* a body that is not a JSON object, or no ``X-Nudge-Delivery``, is 400;
* a delivery id already accepted is answered 200 and not accepted again.

``POST /moved/{name}?status=302`` redirects to ``/hooks/{name}``, to show it is not followed
(307 keeps the method, so a followed one would arrive as a hook call).

State is touched from the test's thread and from the server's thread, hence the lock.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

SIGNATURE = "X-Nudge-Signature"
DELIVERY = "X-Nudge-Delivery"
TOLERANCE = 300.0
"""Seconds a signed timestamp may be off from the receiver's clock."""


@dataclass(frozen=True)
class Received:
    path: str
    body: Any
    """The parsed JSON body, ``None`` when it was not JSON."""
    raw: bytes
    delivery_id: str
    verified: bool
    """Whether the signature header checked out (timestamp included)."""
    status: int
    """What the receiver answered."""
    user_agent: str


def verify(secret: str, header: str, body: bytes, now: float) -> bool:
    """The documented check: parse ``t=`` and ``sha256=``, recompute, compare in constant
    time, and refuse a timestamp too far from ``now``."""
    timestamp: int | None = None
    digests: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif key == "sha256":
            digests.append(value)
    if timestamp is None or not digests or abs(now - timestamp) > TOLERANCE:
        return False
    expected = hmac.new(
        secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return any(hmac.compare_digest(expected, digest) for digest in digests)


@dataclass
class _Fault:
    status: int
    times: int
    retry_after: str | None


class WebhookReceiver:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.calls: list[Received] = []
        """Every POST to ``/hooks/...`` as received, refused and repeated ones included."""
        self.received: list[Received] = []
        """The accepted ones, each delivery id once."""
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self.app = FastAPI()
        self.app.add_api_route("/hooks/{name}", self._hook, methods=["POST"])
        self.app.add_api_route("/moved/{name}", self._moved, methods=["POST"])

    def fail_next(
        self, status: int = 503, *, times: int = 1, retry_after: str | None = None
    ) -> None:
        """Answer the next ``times`` hook calls with ``status`` (and ``Retry-After``)."""
        with self._lock:
            self._faults.append(_Fault(status, times, retry_after))

    async def _hook(self, name: str, request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        delivery_id = request.headers.get(DELIVERY, "")
        verified = verify(self.secret, request.headers.get(SIGNATURE, ""), raw, time.time())
        with self._lock:
            fault = self._take_fault()
            if fault is not None:
                status = fault.status
            elif not verified:
                status = 401
            elif not isinstance(body, dict) or not delivery_id:
                status = 400
            else:
                status = 200
            call = Received(
                path=request.url.path,
                body=body,
                raw=raw,
                delivery_id=delivery_id,
                verified=verified,
                status=status,
                user_agent=request.headers.get("User-Agent", ""),
            )
            self.calls.append(call)
            repeat = any(r.delivery_id == delivery_id for r in self.received)
            if status == 200 and not repeat:
                self.received.append(call)
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            return PlainTextResponse("injected", fault.status, headers=headers)
        if status == 401:
            return PlainTextResponse("bad signature", 401)
        if status == 400:
            return PlainTextResponse("need a JSON object and a delivery id", 400)
        return JSONResponse({"ok": True, "repeat": repeat})

    async def _moved(self, name: str, status: int = 302) -> Response:
        return RedirectResponse(f"/hooks/{name}", status_code=status)

    def _take_fault(self) -> _Fault | None:
        if not self._faults:
            return None
        fault = self._faults[0]
        fault.times -= 1
        if fault.times <= 0:
            self._faults.pop(0)
        return fault
