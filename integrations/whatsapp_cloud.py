"""WhatsApp through Meta's Cloud API: send one message, read webhook deliveries.

Sending is ``POST {graph_url}/{api_version}/{phone_number_id}/messages`` with a system-user
token. Graph answers most WhatsApp failures with HTTP 400 whatever their nature, so the
error ``code`` in the body decides, not the status: a throughput limit (130429) is a 400
that must be retried, a re-engagement refusal (131047) a 400 that must not.

Watch out for:

* The Cloud API has no idempotency key. A send whose answer was lost may have gone out;
  retrying it can deliver the text twice. Record the returned ``wamid`` and match status
  webhooks against it.
* Webhooks are signed over the raw bytes Meta sent (unicode escaped as ``\\uXXXX``); verify
  the signature before parsing, never over re-serialised JSON. The key is the app secret,
  not the access token or the verify token.
* Deliveries are at least once and unordered: the same ``wamid`` can come twice, ``read`` can
  arrive without ``delivered``. ``parse_webhook`` reports what it was given; callers dedupe.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domain.channels import ChannelName
from integrations.channels import OutboundMessage, OutsideWindow, Receipt
from integrations.errors import NotFound, ProviderError, Rejected, RetryLater
from integrations.http import send as http_send

PROVIDER = "whatsapp_cloud"

_RETRY_CODES = frozenset(
    {
        1,  # API Unknown: "possible server error"
        2,  # API Service: downtime or overload
        4,  # app-level API call rate limit
        80007,  # WhatsApp Business Account rate limit
        130429,  # per-number message throughput reached (an HTTP 400)
        131000,  # something went wrong on Meta's side
        131016,  # service temporarily unavailable
        131056,  # pair rate limit: too many messages to the same recipient
    }
)
_OUTSIDE_WINDOW_CODE = 131047
_PERMANENT_CODES = frozenset(
    {
        0,  # AuthException
        3,  # capability/permission missing (served as HTTP 500, yet retrying cannot help)
        10,  # permission denied
        100,  # invalid parameter
        190,  # access token expired or invalid
        131026,  # message undeliverable (no WhatsApp, old client, terms not accepted ...)
    }
)


def _permanent(code: int) -> bool:
    # 200-299: API permission errors; 132xxx: template missing, paused, wrong parameters.
    return code in _PERMANENT_CODES or 200 <= code <= 299 or 132000 <= code <= 132999


class _Model(BaseModel):
    # Meta adds fields often (pricing, identity hashes, user ids); they must not break us.
    model_config = ConfigDict(extra="ignore")


class _GraphErrorData(_Model):
    details: str = ""


class _GraphError(_Model):
    message: str = ""
    type: str = ""
    code: int
    error_subcode: int | None = None
    error_data: _GraphErrorData | None = None
    fbtrace_id: str | None = None


class _GraphErrorBody(_Model):
    error: _GraphError


class _SentMessage(_Model):
    id: str = Field(min_length=1)
    message_status: str | None = None
    """Only on some answers (templates): ``accepted``, ``held_for_quality_assessment``..."""


class _SendResponse(_Model):
    messages: list[_SentMessage] = Field(min_length=1)


def _graph_error(body: str) -> _GraphError | None:
    try:
        return _GraphErrorBody.model_validate_json(body).error
    except ValidationError:
        return None


def _classified(error: _GraphError, cause: ProviderError) -> ProviderError:
    """The exception a Graph error ``code`` calls for; an unknown code keeps its HTTP class."""
    details = error.error_data.details if error.error_data else ""
    reason = f"Graph error {error.code} (HTTP {cause.status}): {error.message}"
    if details:
        reason += f" - {details}"
    if error.fbtrace_id:
        reason += f" [fbtrace_id {error.fbtrace_id}]"
    common: dict[str, Any] = {"status": cause.status, "body": cause.body}
    if error.code in _RETRY_CODES:
        retry_after = cause.retry_after if isinstance(cause, RetryLater) else None
        return RetryLater(PROVIDER, reason, retry_after=retry_after, **common)
    if error.code == _OUTSIDE_WINDOW_CODE:
        return OutsideWindow(PROVIDER, reason, **common)
    if _permanent(error.code):
        return Rejected(PROVIDER, reason, **common)
    if isinstance(cause, RetryLater):
        return RetryLater(PROVIDER, reason, retry_after=cause.retry_after, **common)
    if isinstance(cause, NotFound):
        return NotFound(PROVIDER, reason, **common)
    return Rejected(PROVIDER, reason, **common)


def _message_payload(message: OutboundMessage) -> dict[str, Any]:
    """The ``/messages`` JSON body: the interactive object as given, else the template, else
    the text. Refuses (``Rejected``) what Meta would refuse anyway, without a request."""
    if not message.to:
        raise Rejected(PROVIDER, "the recipient (to) is empty")
    base: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": message.to,
    }
    if message.interactive is not None:
        return {**base, "type": "interactive", "interactive": message.interactive}
    if message.template is not None:
        if not message.template.name:
            raise Rejected(
                PROVIDER, "the template has no name (content_sid is Twilio's, not Meta's)"
            )
        template: dict[str, Any] = {
            "name": message.template.name,
            "language": {"code": message.template.language},
        }
        if message.template.components:
            template["components"] = [dict(c) for c in message.template.components]
        return {**base, "type": "template", "template": template}
    if not message.text:
        raise Rejected(PROVIDER, "nothing to send: no text, template or interactive object")
    return {**base, "type": "text", "text": {"preview_url": False, "body": message.text}}


class WhatsAppCloudChannel:
    """One business phone number's outbound messages."""

    name = ChannelName.whatsapp

    def __init__(
        self,
        token: str,
        phone_number_id: str,
        *,
        graph_url: str = "https://graph.facebook.com",
        api_version: str = "v23.0",
        timeout: float = 20.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``token`` is the access token (a system user's); ``phone_number_id`` the business
        number's id in the Graph API, not the number itself."""
        if not (token and phone_number_id):
            raise ValueError("WhatsApp Cloud needs an access token and a phone number id")
        self._path = f"/{quote(api_version, safe='')}/{quote(phone_number_id, safe='')}/messages"
        self._http = httpx.AsyncClient(
            base_url=graph_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    async def send(self, message: OutboundMessage) -> Receipt:
        """One request, never retried here; the receipt carries the ``wamid``.

        A 200 whose body we cannot read is ``Rejected``: the message probably went out, and
        sending it again would be worse than not knowing its id.
        """
        payload = _message_payload(message)
        try:
            response = await http_send(PROVIDER, lambda: self._http.post(self._path, json=payload))
        except ProviderError as exc:
            error = _graph_error(exc.body) if exc.status is not None else None
            if error is None:
                raise
            raise _classified(error, exc) from exc
        try:
            sent = _SendResponse.model_validate_json(response.content).messages[0]
        except ValidationError as exc:
            raise Rejected(
                PROVIDER,
                f"unexpected answer to a send that probably succeeded: {response.text[:300]}",
                status=response.status_code,
                body=response.text[:2000],
            ) from exc
        return Receipt(provider_message_id=sent.id, status=sent.message_status or "accepted")

    async def aclose(self) -> None:
        await self._http.aclose()


# -- webhooks ----------------------------------------------------------------------------

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")


def verify_signature(app_secret: str, raw_body: bytes, header: str | None) -> bool:
    """Check ``X-Hub-Signature-256`` (``sha256=`` + hex HMAC-SHA256 of the raw body).

    An empty app secret verifies nothing: anyone can compute an HMAC with an empty key.
    """
    if not app_secret or not header:
        return False
    match = _SIGNATURE.fullmatch(header.strip())
    if match is None:
        return False
    expected = hmac.new(app_secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, match.group(1).lower())


def verify_subscription(params: Mapping[str, str], verify_token: str) -> str | None:
    """The ``hub.challenge`` to answer (as the bare body) if Meta's GET is genuine, else None."""
    if not verify_token or params.get("hub.mode") != "subscribe":
        return None
    given = params.get("hub.verify_token", "")
    if not hmac.compare_digest(given.encode(), verify_token.encode()):
        return None
    return params.get("hub.challenge") or None


class InboundMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    """The ``wamid``: dedupe on it, Meta may deliver the same message more than once."""
    from_: str
    """The customer's phone number as WhatsApp reports it (digits, no ``+``)."""
    timestamp: datetime
    type: str
    """``text``, ``interactive``, ``button`` (template quick reply), ``image``, ..."""
    text: str = ""
    """The text body, the tapped button's or list row's title, or the quick reply's label;
    empty for every other type."""
    reply_id: str | None = None
    """``button_reply.id``, ``list_reply.id`` or the template button's ``payload``."""
    profile_name: str | None = None
    phone_number_id: str
    """Our business number that received it."""


class StatusUpdate(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    """The ``wamid`` we got back when sending."""
    status: str
    """``sent``, ``delivered``, ``read`` or ``failed``; ``read`` may come without
    ``delivered``, and statuses may arrive out of order."""
    timestamp: datetime
    recipient_id: str
    error_code: int | None = None
    error_title: str | None = None


class WebhookBatch(BaseModel):
    model_config = ConfigDict(frozen=True)

    messages: list[InboundMessage] = Field(default_factory=list)
    statuses: list[StatusUpdate] = Field(default_factory=list)


class _Reply(_Model):
    id: str
    title: str = ""


class _Interactive(_Model):
    type: str
    button_reply: _Reply | None = None
    list_reply: _Reply | None = None


class _Button(_Model):
    payload: str | None = None
    text: str = ""


class _Text(_Model):
    body: str


class _RawMessage(_Model):
    id: str = Field(min_length=1)
    from_: str = Field(alias="from", min_length=1)
    timestamp: str | int
    type: str
    text: _Text | None = None
    interactive: _Interactive | None = None
    button: _Button | None = None


class _Profile(_Model):
    name: str | None = None


class _Contact(_Model):
    wa_id: str | None = None
    profile: _Profile | None = None


class _StatusError(_Model):
    code: int | None = None
    title: str | None = None
    message: str | None = None


class _RawStatus(_Model):
    id: str = Field(min_length=1)
    status: str
    timestamp: str | int
    recipient_id: str
    errors: list[_StatusError] = Field(default_factory=list)


class _Metadata(_Model):
    phone_number_id: str


class _Value(_Model):
    metadata: _Metadata
    contacts: list[_Contact] = Field(default_factory=list)
    messages: list[_RawMessage] = Field(default_factory=list)
    statuses: list[_RawStatus] = Field(default_factory=list)


class _Change(_Model):
    field: str
    value: dict[str, Any]


class _Entry(_Model):
    id: str | None = None
    changes: list[_Change] = Field(default_factory=list)


class _Payload(_Model):
    object: str
    entry: list[_Entry]


def _where(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path or "(top level)"


def _validated(model: type[_Model], data: object, where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(
            f"malformed WhatsApp webhook: {_where(where, tuple(first['loc']))}: {first['msg']}"
            f" ({exc.error_count()} problem(s))"
        ) from None


def _when(value: str | int, where: str) -> datetime:
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (ValueError, OverflowError, OSError):
        raise ValueError(
            f"malformed WhatsApp webhook: {where}.timestamp: {value!r} is not epoch seconds"
        ) from None


def _reply_text(raw: _RawMessage, where: str) -> tuple[str, str | None]:
    """(text, reply_id) by message type; a type we do not read gives ("", None)."""
    if raw.type == "text":
        if raw.text is None:
            raise ValueError(f"malformed WhatsApp webhook: {where}: type text without text")
        return raw.text.body, None
    if raw.type == "button":
        if raw.button is None:
            raise ValueError(f"malformed WhatsApp webhook: {where}: type button without button")
        return raw.button.text, raw.button.payload
    if raw.type == "interactive":
        if raw.interactive is None:
            raise ValueError(
                f"malformed WhatsApp webhook: {where}: type interactive without interactive"
            )
        kind = raw.interactive.type
        if kind == "button_reply":
            reply = raw.interactive.button_reply
        elif kind == "list_reply":
            reply = raw.interactive.list_reply
        else:  # flows (nfm_reply) and whatever comes next
            return "", None
        if reply is None:
            raise ValueError(
                f"malformed WhatsApp webhook: {where}.interactive: type {kind} without {kind}"
            )
        return reply.title, reply.id
    return "", None


def _profile_name(contacts: list[_Contact], sender: str) -> str | None:
    """The contact whose ``wa_id`` is the sender; a lone contact when ids differ (a user's
    WhatsApp id and phone number need not match)."""
    for contact in contacts:
        if contact.wa_id == sender and contact.profile is not None:
            return contact.profile.name
    if len(contacts) == 1 and contacts[0].profile is not None:
        return contacts[0].profile.name
    return None


def parse_webhook(payload: dict[str, Any]) -> WebhookBatch:
    """Every inbound message and status in a delivery, across all entries and changes.

    Changes of other fields (template reviews, account updates) are skipped. Raises
    ``ValueError`` naming the first offending path when the payload is not what Meta sends.
    """
    if not isinstance(payload, dict):
        raise ValueError(f"malformed WhatsApp webhook: expected a JSON object, got {payload!r:.80}")
    envelope: _Payload = _validated(_Payload, payload, "")
    if envelope.object != "whatsapp_business_account":
        raise ValueError(
            f"malformed WhatsApp webhook: object is {envelope.object!r},"
            " expected 'whatsapp_business_account'"
        )
    messages: list[InboundMessage] = []
    statuses: list[StatusUpdate] = []
    for e, entry in enumerate(envelope.entry):
        for c, change in enumerate(entry.changes):
            if change.field != "messages":
                continue
            here = f"entry[{e}].changes[{c}].value"
            value: _Value = _validated(_Value, change.value, here)
            for m, raw in enumerate(value.messages):
                where = f"{here}.messages[{m}]"
                text, reply_id = _reply_text(raw, where)
                messages.append(
                    InboundMessage(
                        id=raw.id,
                        from_=raw.from_,
                        timestamp=_when(raw.timestamp, where),
                        type=raw.type,
                        text=text,
                        reply_id=reply_id,
                        profile_name=_profile_name(value.contacts, raw.from_),
                        phone_number_id=value.metadata.phone_number_id,
                    )
                )
            for s, status in enumerate(value.statuses):
                error = status.errors[0] if status.errors else None
                statuses.append(
                    StatusUpdate(
                        id=status.id,
                        status=status.status,
                        timestamp=_when(status.timestamp, f"{here}.statuses[{s}]"),
                        recipient_id=status.recipient_id,
                        error_code=error.code if error else None,
                        error_title=(error.title or error.message) if error else None,
                    )
                )
    return WebhookBatch(messages=messages, statuses=statuses)
