"""A fake Twilio Messages API (2010-04-01) that speaks the documented formats over real HTTP.

Served at the root (``TwilioSettings.base_url = srv.url``). What it insists on is what the docs
say a client must do: HTTP Basic ``AccountSid:AuthToken``, a form-encoded body (a JSON body
reads as no fields at all, as on the real service), ``To``, ``From`` or
``MessagingServiceSid``, and ``Body`` or ``ContentSid``. Refusals carry Twilio's error JSON
(``{"code", "message", "more_info", "status"}``) with the real error codes.

Every accepted create is kept in ``messages`` exactly as posted. ``sign`` computes
``X-Twilio-Signature`` from the documented algorithm without the twilio SDK, so tests can hold
our SDK-based ``verify_signature`` against an independent implementation.

State is touched from the test's thread and from the server's thread, hence the lock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from tests.fakes.server import HoldAfterAccept

API_VERSION = "2010-04-01"
_E164 = re.compile(r"\+[1-9]\d{1,14}")
_WHATSAPP = "whatsapp:"
_MAX_BODY = 1600

_MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    20503: "Service is unavailable. Please try again",
    21211: "Invalid 'To' Phone Number",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21608: "The number is unverified. Trial accounts cannot send messages to unverified numbers",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21656: "The ContentVariables Parameter is invalid.",
    21910: "Invalid From and To pair. From and To should be of the same channel",
    63016: "Failed to send freeform message because you are outside the allowed window. "
    "If you are using WhatsApp, please use a Message Template.",
}
_CODE_FOR_STATUS = {401: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503}


def twilio_error(status: int, code: int, message: str | None = None) -> dict[str, Any]:
    """The body of a 2010-04-01 API refusal."""
    return {
        "code": code,
        "message": message or _MESSAGES.get(code, f"Error {code}"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def compute_signature(
    auth_token: str, url: str, params: Mapping[str, str] | Iterable[tuple[str, str]]
) -> str:
    """``X-Twilio-Signature`` as documented: the full URL, then every POST field's name and
    value in order of name (and of value, for a repeated name), HMAC-SHA1 with the auth token,
    base64."""
    pairs = params.items() if isinstance(params, Mapping) else params
    signed = url + "".join(name + value for name, value in sorted(pairs))
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass
class _Fault:
    status: int
    code: int
    times: int
    retry_after: str | None


class _Reply(Exception):
    """Ends a request early with a ready response (auth, faults), from any depth."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


def _refuse(status: int, code: int, headers: dict[str, str] | None = None) -> _Reply:
    return _Reply(JSONResponse(twilio_error(status, code), status, headers=headers))


def _bare(address: str) -> str:
    return address.removeprefix(_WHATSAPP)


class FakeTwilio:
    def __init__(
        self,
        account_sid: str = "AC" + "a1b2c3d4" * 4,
        auth_token: str = "fake-twilio-auth-token",
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: list[dict[str, str]] = []
        """The form of every accepted create, exactly as posted, duplicates included."""
        self.opted_out: set[str] = set()
        """E.164 numbers that texted STOP: creates to them fail with 21610."""
        self._resources: dict[str, dict[str, Any]] = {}
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self.hold = HoldAfterAccept()
        """``hold.hold_next(seconds)``: answer the next accepted create late."""
        self.app = self._build_app()

    # -- scripting -------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        code: int | None = None,
        *,
        times: int = 1,
        retry_after: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` and Twilio's error JSON.

        Without ``code`` the one Twilio uses for that status (20429 for 429, 20500 for 500 …).
        """
        with self._lock:
            code = code if code is not None else _CODE_FOR_STATUS.get(status, status)
            self._faults.append(_Fault(status, code, times, retry_after))

    def status_callback_params(
        self, sid: str, status: str, *, error_code: int | None = None
    ) -> dict[str, str]:
        """The form Twilio posts to ``StatusCallback`` when message ``sid`` reaches ``status``.

        The stored message moves to ``status`` too, so a later fetch agrees with the callback.
        """
        with self._lock:
            resource = self._resources[sid]
            resource["status"] = status
            if error_code is not None:
                resource["error_code"] = error_code
                resource["error_message"] = _MESSAGES.get(error_code)
            params = {
                "AccountSid": self.account_sid,
                "ApiVersion": API_VERSION,
                "MessageSid": sid,
                "MessageStatus": status,
                "SmsSid": sid,
                "SmsStatus": status,
                "To": resource["to"],
            }
            if resource["from"]:
                params["From"] = resource["from"]
            if resource["messaging_service_sid"]:
                params["MessagingServiceSid"] = resource["messaging_service_sid"]
            if error_code is not None:
                params["ErrorCode"] = str(error_code)
            return params

    def sign(self, url: str, params: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
        """``X-Twilio-Signature`` for a webhook to ``url``, signed with this account's token."""
        return compute_signature(self.auth_token, url, params)

    # -- the API ---------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(dependencies=[Depends(self._gate)])

        async def reply(request: Request, exc: Exception) -> JSONResponse:
            assert isinstance(exc, _Reply)
            return exc.response

        app.add_exception_handler(_Reply, reply)
        root = f"/{API_VERSION}/Accounts/{{account_sid}}/Messages"
        app.add_api_route(f"{root}.json", self._create, methods=["POST"])
        app.add_api_route(f"{root}/{{message_sid}}.json", self._fetch, methods=["GET"])
        return app

    async def _gate(self, request: Request) -> None:
        with self._lock:
            fault = self._faults[0] if self._faults else None
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.pop(0)
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            raise _refuse(fault.status, fault.code, headers)
        if not self._authorized(request.headers.get("Authorization")):
            raise _refuse(401, 20003, {"WWW-Authenticate": 'Basic realm="Twilio API"'})
        if request.path_params.get("account_sid") != self.account_sid:
            raise _refuse(404, 20404)

    async def _create(self, account_sid: str, request: Request) -> JSONResponse:
        form = await _form(request)
        to = form.get("To", "")
        sender = form.get("From", "")
        service = form.get("MessagingServiceSid", "")
        body = form.get("Body", "")
        content_sid = form.get("ContentSid", "")
        if not to:
            raise _refuse(400, 21604)
        if not sender and not service:
            raise _refuse(400, 21603)
        if not body and not content_sid:
            raise _refuse(400, 21602)
        if not _E164.fullmatch(_bare(to)):
            raise _refuse(400, 21211)
        if sender and sender.startswith(_WHATSAPP) != to.startswith(_WHATSAPP):
            raise _refuse(400, 21910)
        if len(body) > _MAX_BODY:
            raise _refuse(400, 21617)
        if "ContentVariables" in form and not _is_json_object(form["ContentVariables"]):
            raise _refuse(400, 21656)
        with self._lock:
            if _bare(to) in self.opted_out:
                raise _refuse(400, 21610)
            resource = self._new_resource(to, sender, service, body)
            self._resources[resource["sid"]] = resource
            self.messages.append(form)
        await self.hold.accepted_then_maybe_hold()
        return JSONResponse(dict(resource), 201)

    async def _fetch(self, account_sid: str, message_sid: str) -> JSONResponse:
        with self._lock:
            resource = self._resources.get(message_sid)
            if resource is None:
                raise _refuse(404, 20404)
            return JSONResponse(dict(resource))

    # -- helpers ---------------------------------------------------------------------------

    def _new_resource(self, to: str, sender: str, service: str, body: str) -> dict[str, Any]:
        sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC).replace(microsecond=0))
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender or None,
            "messaging_service_sid": service or None,
            "num_media": "0",
            # A Messaging Service picks the sender later: 0 segments and "accepted" until then.
            "num_segments": "0" if service else "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if service else "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": to,
            "uri": f"{uri}.json",
        }

    def _authorized(self, header: str | None) -> bool:
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        sid, _, token = decoded.partition(":")
        return sid == self.account_sid and token == self.auth_token


async def _form(request: Request) -> dict[str, str]:
    """Form fields only: Twilio's create reads nothing else (a JSON body has no ``To``)."""
    content_type = request.headers.get("Content-Type", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        return {}
    raw = (await request.body()).decode()
    return dict(parse_qsl(raw, keep_blank_values=True))


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
