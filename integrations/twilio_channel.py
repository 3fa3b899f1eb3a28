"""Twilio Programmable Messaging: SMS and WhatsApp through the one Messages resource.

Sending is a form POST to ``/2010-04-01/Accounts/{AccountSid}/Messages.json`` made with httpx,
because the twilio SDK is synchronous (its async client would pull in aiohttp). The SDK is used
for what it is good at here: checking webhook signatures (``verify_signature``).

Twilio's own error code, not only the HTTP status, decides what a failure means: 21610 (the
recipient texted STOP) is ``RecipientOptedOut`` and 63016 (WhatsApp free-form text outside the
24-hour window) is ``OutsideWindow``, both never retried; 20429 is ``RetryLater`` whatever the
status. Twilio has no idempotency key on message create, so a retry after an answer lost in
flight can send twice: guarding against that is the caller's outbox, not this client.

Watch out: 63016 often arrives later, as ``ErrorCode`` on a ``failed`` status callback, since
WhatsApp sends are accepted (``queued``) first and refused downstream.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
from twilio.request_validator import RequestValidator

from domain.channels import ChannelName
from integrations.channels import OutboundMessage, OutsideWindow, Receipt, RecipientOptedOut
from integrations.errors import NotFound, ProviderError, Rejected, RetryLater
from integrations.http import HttpClient, send

PROVIDER = "twilio"
API_VERSION = "2010-04-01"

UNSUBSCRIBED_RECIPIENT = 21610
OUTSIDE_WINDOW = 63016
TOO_MANY_REQUESTS = 20429

_WHATSAPP = "whatsapp:"
_CHANNELS = (ChannelName.sms, ChannelName.whatsapp_twilio)


class TwilioChannel(HttpClient):
    """One Twilio channel: ``ChannelName.sms`` or ``ChannelName.whatsapp_twilio``.

    The sender is the Messaging Service when ``messaging_service_sid`` is set, otherwise the
    ``sender`` number (E.164; the ``whatsapp:`` prefix is added for WhatsApp); a missing
    sender is a configuration error raised here, at start-up, rather than on the first send.
    """

    name: ChannelName

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        channel: ChannelName = ChannelName.sms,
        *,
        sender: str = "",
        messaging_service_sid: str = "",
        base_url: str = "https://api.twilio.com",
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if channel not in _CHANNELS:
            raise ValueError(f"Twilio sends {' and '.join(_CHANNELS)}, not {channel}")
        if not (account_sid and auth_token):
            raise ValueError("Twilio needs an account SID and an auth token")
        self.name = channel
        self._sender = self._sender_fields(sender, messaging_service_sid)
        account = quote(account_sid, safe="")
        self._messages_path = f"/{API_VERSION}/Accounts/{account}/Messages"
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            auth=httpx.BasicAuth(account_sid, auth_token),
            headers={"Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    async def send(self, message: OutboundMessage) -> Receipt:
        """Create the Message; the receipt carries its ``SM…`` sid and first status.

        The first status is ``queued`` (``accepted`` through a Messaging Service); Twilio posts
        no status callback for it, only for the ones after.
        """
        if message.channel != self.name:
            raise Rejected(PROVIDER, f"a {message.channel} message was handed to {self.name}")
        form = {"To": self._address(message.to), **self._sender, **self._content(message)}
        if message.status_callback:
            form["StatusCallback"] = message.status_callback
        response = await self._request("POST", f"{self._messages_path}.json", form)
        created = _json_object(response, "POST Messages.json")
        sid = created.get("sid")
        if not isinstance(sid, str) or not sid:
            raise Rejected(
                PROVIDER,
                f"the created message has no sid: {response.text[:300]}",
                status=response.status_code,
                body=response.text[:2000],
            )
        status = created.get("status")
        return Receipt(provider_message_id=sid, status=str(status or "queued"))

    async def fetch_message(self, sid: str) -> dict[str, Any]:
        """The Message as Twilio has it now (``status``, ``error_code``, ``price`` …), for
        reconciling a message whose status callbacks never arrived. ``NotFound`` if unknown."""
        if not sid:
            raise ValueError("a Twilio message sid must not be empty")
        path = f"{self._messages_path}/{quote(sid, safe='')}.json"
        return _json_object(await self._request("GET", path), f"GET {path}")

    # -- helpers ---------------------------------------------------------------------------

    def _sender_fields(self, number: str, messaging_service_sid: str) -> dict[str, str]:
        if messaging_service_sid:
            return {"MessagingServiceSid": messaging_service_sid}
        if not number:
            raise ValueError(f"Twilio {self.name} needs a sender number or a Messaging Service")
        return {"From": self._address(number)}

    def _address(self, number: str) -> str:
        """WhatsApp through Twilio needs ``whatsapp:`` on both ``To`` and ``From``."""
        number = number.strip()
        if self.name == ChannelName.whatsapp_twilio and not number.startswith(_WHATSAPP):
            return _WHATSAPP + number
        return number

    @staticmethod
    def _content(message: OutboundMessage) -> dict[str, str]:
        template = message.template
        if template is not None:
            if not template.content_sid:
                # Since 1 Apr 2025 template text in Body no longer works on WhatsApp.
                raise Rejected(PROVIDER, "Twilio sends templates by ContentSid; this one has none")
            content = {"ContentSid": template.content_sid}
            if template.variables:
                content["ContentVariables"] = json.dumps(template.variables)
            return content
        if not message.text:
            raise Rejected(PROVIDER, "nothing to send: the message has neither text nor template")
        return {"Body": message.text}

    async def _request(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> httpx.Response:
        try:
            return await send(PROVIDER, lambda: self._http.request(method, path, data=form))
        except ProviderError as exc:
            classified = _classify(exc)
            if classified is exc:
                raise
            raise classified from exc


def verify_signature(
    auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> bool:
    """Did Twilio send this webhook? Checks ``X-Twilio-Signature`` with the SDK's validator.

    ``url`` must be the exact public URL Twilio called, query string included: behind a proxy
    or TLS terminator that is not the URL the app sees, so build it from the configured public
    URL. ``params`` must be every POST field as received (Twilio adds fields without notice
    and signs them all). A URL with or without its default port is accepted.
    """
    if not signature or not auth_token:
        return False
    return bool(RequestValidator(auth_token).validate(url, params, signature))


def _classify(exc: ProviderError) -> ProviderError:
    """Refine a refusal by Twilio's error code. ``RetryLater`` (5xx, 429, transport) is left
    as it is: whatever the code, the same request may succeed later."""
    if isinstance(exc, RetryLater):
        return exc
    code, text = _twilio_error(exc.body)
    if code is None:
        return exc
    reason = f"error {code}: {text or 'no message'} (HTTP {exc.status})"
    if code == UNSUBSCRIBED_RECIPIENT:
        return RecipientOptedOut(PROVIDER, reason, status=exc.status, body=exc.body)
    if code == OUTSIDE_WINDOW:
        return OutsideWindow(PROVIDER, reason, status=exc.status, body=exc.body)
    if code == TOO_MANY_REQUESTS:
        return RetryLater(PROVIDER, reason, status=exc.status, body=exc.body)
    if isinstance(exc, NotFound):
        return NotFound(PROVIDER, reason, status=exc.status, body=exc.body)
    return Rejected(PROVIDER, reason, status=exc.status, body=exc.body)


def _twilio_error(body: str) -> tuple[int | None, str]:
    """``{"code": 21610, "message": ..., "more_info": ..., "status": 400}`` -> (21610, message)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None, ""
    if not isinstance(data, dict):
        return None, ""
    code = data.get("code")
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    message = data.get("message")
    return (
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        message if isinstance(message, str) else "",
    )


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    """A shape we do not understand will not change on retry, hence ``Rejected``."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise Rejected(
            PROVIDER,
            f"{what} answered {response.status_code} without a JSON object",
            status=response.status_code,
            body=response.text[:2000],
        )
    return data
